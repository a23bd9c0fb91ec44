"""The one copy (archlift.oci.copy) between every kind of store, against the real distribution
registry, skopeo's OCI layouts and a refusing proxy on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.images as h
from support.images import FaultProxy, PushedImage, assert_same, make_release, release_lock
from support.registry import LocalRegistry

from archlift.errors import RegistryError
from archlift.oci import Manifest, RegistryClient
from archlift.oci.copy import ImagePlan, copy
from archlift.oci.layout import REF_NAME, REPOSITORY, LayoutStore, push_image
from archlift.oci.store import RegistryStore
from archlift.oci.walk import walk
from archlift.proc import run
from archlift.refs import Digest, ImageRef
from archlift.steps.mirror import Target, check, mirror, plan_mirror

no_docker_config = h.no_docker_config


@pytest.fixture(scope="module")
def source() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3)


@pytest.fixture
def target() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def _plans(images: dict[str, PushedImage], registry: str = "layout.invalid") -> list[ImagePlan]:
    """Each image to the same repository path in ``registry`` (a layout ignores the host)."""
    return list(plan_mirror(release_lock(images), Target(registry), onto_itself=True).images)


def _unique(images: dict[str, PushedImage]) -> set[Digest]:
    return set().union(*(img.blobs for img in images.values()))


def _file_digest(path: Path) -> Digest:
    return Digest("sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())


def _corrupt(source: LocalRegistry, digest: Digest) -> None:
    path = source.storage_dir / "docker/registry/v2/blobs/sha256" / digest.hex[:2] / digest.hex / "data"
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])


# ------------------------------------------------------------------ registry -> layout -> registry
def test_registry_to_layout_dir_to_registry_keeps_every_digest_and_sends_shared_blobs_once(
    release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    client = RegistryClient()
    layout = LayoutStore(tmp_path / "layout")
    results = copy(_plans(release), RegistryStore(client), layout, jobs=4)
    assert not [r.error for r in results if r.error]
    # every blob once, under its digest; the tags, signature tags and referrers listed in index.json
    blobs = {p.name for p in (layout.root / "blobs/sha256").iterdir()}
    assert {d.hex for d in _unique(release)} <= blobs
    assert all(_file_digest(layout.root / "blobs/sha256" / b).hex == b for b in blobs)
    assert not [p for p in (layout.root / "blobs/sha256").iterdir() if p.name.startswith(".")]  # no half blob
    assert json.loads((layout.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout.root / "index.json").read_text())
    for img in release.values():
        names = {
            e["annotations"].get(REF_NAME)
            for e in index["manifests"]
            if e["annotations"][REPOSITORY] == img.ref.repository and e["digest"] == str(img.index)
        }
        assert names == {"v1", "latest"}
        assert layout.resolve(ImageRef("x.invalid", img.ref.repository, "v1")) is not None
    c0 = release["c0"]
    assert layout.resolve(ImageRef("x.invalid", c0.ref.repository, c0.signature_tag)) is not None

    # and back into a registry: the same images, each unique blob uploaded once
    plans = _plans(release, target.host)
    back = copy(plans, LayoutStore(layout.root), RegistryStore(client), jobs=4)
    assert not [r.error for r in back if r.error]
    assert_same(client, release, target)
    assert target.blob_uploads() == len(_unique(release))
    again = copy(plans, layout, RegistryStore(client), jobs=4)
    assert all(r.up_to_date for r in again)


def test_layout_dir_a_real_tool_reads_and_writes(
    release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    """skopeo reads the layout archlift wrote, and archlift reads the one skopeo wrote."""
    client = RegistryClient()
    img = release["c1"]
    layout = LayoutStore(tmp_path / "ours")
    (result,) = copy(_plans({"c1": img}), RegistryStore(client), layout)
    assert not result.error
    run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--quiet", "--dest-tls-verify=false",
         f"oci:{layout.root}:v1", f"docker://{target.host}/by-skopeo:v1"],
        context="skopeo copy from archlift's layout",
    )  # fmt: skip
    head = client.head_manifest(target.ref("by-skopeo", "v1"))
    assert head is not None and head.digest == img.index

    theirs = tmp_path / "theirs"
    run(
        ["skopeo", "copy", "--all", "--preserve-digests", "--quiet", "--src-tls-verify=false",
         f"docker://{img.ref}", f"oci:{theirs}:v1"],
        context="skopeo copy into a layout",
    )  # fmt: skip
    pushed = push_image(client, theirs, img.index, target.ref("from-skopeo"), ("v1",))
    assert pushed.tags_moved == ("v1",)
    head = client.head_manifest(target.ref("from-skopeo", "v1"))
    assert head is not None and head.digest == img.index


def test_corrupted_layout_blob_is_refused_while_streaming_and_never_committed(
    release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    client = RegistryClient()
    layout = LayoutStore(tmp_path / "layout")
    assert not [r for r in copy(_plans(release), RegistryStore(client), layout) if r.error]
    img = release["c2"]
    victim = next(
        d for d in sorted(img.blobs - release["c0"].blobs) if (layout.layout.blob_path(d)).stat().st_size > 1000
    )
    path = layout.layout.blob_path(victim)
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    results = {r.name: r for r in copy(_plans(release, target.host), LayoutStore(layout.root), RegistryStore(client))}
    assert f"blob {victim} from {layout.root}: got {len(data)} bytes with digest sha256:" in results["c2"].error
    assert not client.blob_exists(target.ref(img.ref.repository), victim)  # never committed
    assert client.head_manifest(target.ref(img.ref.repository, "v1")) is None  # no tag
    assert not results["c0"].error and client.head_manifest(target.ref("rel/c0", "v1")) is not None


def test_corrupted_registry_blob_is_never_written_into_a_layout(
    target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, target, n=2)  # a registry of the test's own: its blobs are corrupted
    victim = next(
        d for d in sorted(images["c1"].blobs - images["c0"].blobs) if len(client.get_blob(images["c1"].ref, d)) > 1000
    )
    _corrupt(target, victim)
    layout = LayoutStore(tmp_path / "layout")
    results = {r.name: r for r in copy(_plans(images), RegistryStore(client), layout)}
    assert f'blob {victim} from "{target.host}/rel/c1": got' in results["c1"].error
    assert not layout.layout.blob_path(victim).exists()
    assert not [p for p in (layout.root / "blobs/sha256").iterdir() if p.name.startswith(".")]  # no half blob
    assert layout.resolve(ImageRef("x.invalid", "rel/c1", "v1")) is None
    assert layout.resolve(ImageRef("x.invalid", "rel/c0", "v1")) is not None


# ------------------------------------------------------------------ mounts
def _refuse_mounts(status: int) -> h.Rule:
    body = json.dumps({"errors": [{"code": "UNSUPPORTED", "message": "no cross-repository mounts here"}]}).encode()
    return lambda method, path: (status, body) if method == "POST" and "mount=" in path else None


@pytest.mark.parametrize("status", [404, 405])
def test_refused_mount_falls_back_to_an_upload(status: int, target: LocalRegistry, no_docker_config: None) -> None:
    """Within one registry the copy mounts from the source repository; this one refuses every mount."""
    with FaultProxy(target.host, every=0, rule=_refuse_mounts(status)) as proxy:
        client = RegistryClient()
        pushed = make_release(client, target, n=2)
        # the release as the proxy's: source and target are the same registry
        images = {
            k: PushedImage(ImageRef(proxy.host, v.ref.repository, "v1"), v.index, v.platforms, v.blobs, v.manifests)
            for k, v in pushed.items()
        }
        before = target.blob_uploads()
        result = mirror(plan_mirror(release_lock(images), Target.parse(f"{proxy.host}/copy")), client)
        check(result)
        assert proxy.refused and all(m == "POST" and "mount=" in p for m, p in proxy.refused)
        assert sum(i.blobs_mounted for i in result.images) == 0
        # sent instead: each blob once into each repository that needs it (no mount between them either)
        assert target.blob_uploads() - before == sum(len(img.blobs) for img in pushed.values())
    assert_same(client, pushed, target, "copy")


def test_blob_in_another_target_repository_is_mounted_once_then_never_checked_again(
    release: dict[str, PushedImage], target: LocalRegistry, no_docker_config: None
) -> None:
    """Shared blobs go up once for all images; the other repositories get them by a mount."""
    client = RegistryClient()
    result = mirror(plan_mirror(release_lock(release), Target.parse(target.host)), client)
    check(result)
    shared = Digest.of(h.SHARED)
    uploads = [e for e in target.access_log() if e.method == "PUT" and shared.hex in e.path]
    assert len(uploads) == 1
    mounts = target.count("POST", rf"mount=sha256%3A{shared.hex}|mount=sha256:{shared.hex}", 201)
    assert mounts == len(release) - 1


def _repository_of(path: str) -> str:
    return path.split("/v2/", 1)[1].split("/blobs/", 1)[0]


def test_small_blob_several_repositories_need_is_looked_for_in_one_sent_once_and_mounted_into_the_others(
    release: dict[str, PushedImage], target: LocalRegistry, no_docker_config: None
) -> None:
    """The attestations' "{}" config (2 bytes) is in every image: one look, in the first repository by
    name, one upload there, one mount into each other repository, and no other request about it."""
    client = RegistryClient()
    check(mirror(plan_mirror(release_lock(release), Target.parse(target.host)), client, jobs=2))
    empty = Digest.of(b"{}")
    assert all(empty in img.blobs for img in release.values())
    about = [e for e in target.access_log() if empty.hex in e.path]
    looks = [e for e in about if e.method == "HEAD" or (e.method == "POST" and e.status == 202)]
    assert [_repository_of(e.path) for e in looks] == ["rel/c0"]
    assert [_repository_of(e.path) for e in about if e.method == "PUT"] == ["rel/c0"]
    mounts = [e for e in about if e.method == "POST" and e.status == 201]
    assert sorted(_repository_of(e.path) for e in mounts) == ["rel/c1", "rel/c2"]
    assert len(about) == len(looks) + 1 + len(mounts)
    assert_same(client, release, target)


def test_each_images_blobs_go_together_shared_ones_first(
    release: dict[str, PushedImage], target: LocalRegistry, no_docker_config: None
) -> None:
    """With one blob worker the uploads are in the order they are given out: the blobs several images
    share first (into the first repository), then each image's own, image after image (so that an
    image's manifests and tags can go while the next one's blobs copy)."""
    client = RegistryClient()
    check(mirror(plan_mirror(release_lock(release), Target.parse(target.host)), client, jobs=1))
    uploads = [e.path for e in target.access_log() if e.method == "PUT" and "/blobs/uploads/" in e.path]
    shared = [d for d in _unique(release) if sum(d in img.blobs for img in release.values()) > 1]
    assert len(shared) == 2  # the shared layer and "{}"
    assert {p for p in uploads[:2] if any(d.hex in p for d in shared)} == set(uploads[:2])
    order = [_repository_of(p) for p in uploads]
    assert order == sorted(order) and order[0] == "rel/c0" and order[-1] == "rel/c2"
    assert len(uploads) == len(_unique(release))
    assert_same(client, release, target)


def test_a_source_repository_is_asked_for_its_tags_once_however_many_names_its_image_goes_to(
    release: dict[str, PushedImage], source: LocalRegistry, target: LocalRegistry, no_docker_config: None
) -> None:
    """One image copied to two names (as the upstream layout does): its repository's tag list (for
    signatures) and what its signature tag points at are asked once; both names get the signature."""
    client = RegistryClient()
    img = release["c0"]
    (plan,) = _plans({"c0": img}, target.host)
    plans = [dataclasses.replace(plan, target=target.ref(f"{name}/c0")) for name in ("one", "two")]
    before = len(source.access_log())
    results = copy(plans, RegistryStore(client), RegistryStore(client), jobs=2)
    assert not [r.error for r in results if r.error]
    asked = source.access_log()[before:]
    assert len([e for e in asked if e.path.startswith("/v2/rel/c0/tags/list")]) == 1
    assert len([e for e in asked if e.method == "HEAD" and img.signature_tag in e.path]) == 1
    src_sig = client.head_manifest(img.ref.with_tag(img.signature_tag))
    for name in ("one", "two"):
        sig = client.head_manifest(target.ref(f"{name}/c0", img.signature_tag))
        assert src_sig is not None and sig is not None and sig.digest == src_sig.digest
        head = client.head_manifest(target.ref(f"{name}/c0", "v1"))
        assert head is not None and head.digest == img.index


# ------------------------------------------------------------------ trees
def _index_of(child: Manifest) -> Manifest:
    entry = {"mediaType": child.media_type, "digest": str(child.digest), "size": len(child.raw)}
    return Manifest.of(json.dumps({"schemaVersion": 2, "mediaType": h.OCI_INDEX, "manifests": [entry]}).encode())


def test_collect_walks_children_first_without_recursion_and_bounds_the_depth() -> None:
    config = {"mediaType": h.CONFIG, "digest": str(Digest.of(b"c")), "size": 1}
    leaf = Manifest.of(
        json.dumps({"schemaVersion": 2, "mediaType": h.OCI_MANIFEST, "config": config, "layers": []}).encode()
    )
    chain = [leaf]
    for _ in range(12):
        chain.append(_index_of(chain[-1]))
    by_digest = {m.digest: m for m in chain}
    tree = walk(by_digest.__getitem__, chain[4])
    assert tree.manifests == chain[:5] and list(tree.blobs) == [Digest.of(b"c")]
    with pytest.raises(RegistryError, match="nested more than 8 levels deep"):
        walk(by_digest.__getitem__, chain[-1])
