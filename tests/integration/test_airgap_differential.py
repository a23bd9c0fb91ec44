"""archlift export --since: a differential bundle against real registries (one component changed),
refused by a target without its base (nothing pushed, nothing tagged), imported on top of the
full one (archlift verify passes), and blobs the base holds elsewhere mounted."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.images as h
from support.cli import run_archlift
from support.images import (
    SHARED,
    PushedImage,
    assert_same,
    edited_bundle,
    make_release,
    push_image,
    release_lock,
)
from support.registry import LocalRegistry

from archlift.errors import ConfigError
from archlift.oci import RegistryClient
from archlift.refs import Digest
from archlift.steps.airgap import ExportResult, export_bundle, open_bundle
from archlift.steps.differential import BASE_PATH

no_docker_config = h.no_docker_config
source = h.source  # a registry holding both releases, per module
CREATED = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def v1(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3)


@pytest.fixture(scope="module")
def v2(source: LocalRegistry, v1: dict[str, PushedImage]) -> dict[str, PushedImage]:
    """The next release: c1 rebuilt (new layers and config, the shared layer kept); c0 and c2 as they were."""
    c1 = push_image(RegistryClient(), source.ref("rel/c1", "v2"), seed=200, shared=SHARED)
    return {**v1, "c1": c1}


@dataclasses.dataclass(frozen=True)
class Exports:
    dir: Path
    v1_lock: Path
    v2_lock: Path
    full_v1: Path
    full_v2: Path
    diff: Path
    full_result: ExportResult
    diff_result: ExportResult


@pytest.fixture(scope="module")
def exports(
    v1: dict[str, PushedImage], v2: dict[str, PushedImage], tmp_path_factory: pytest.TempPathFactory
) -> Exports:
    d = tmp_path_factory.mktemp("diff")
    v1_lock, v2_lock = d / "v1.json", d / "v2.json"
    dataclasses.replace(release_lock(v1), created_at=CREATED).write(v1_lock)
    dataclasses.replace(release_lock(v2), created_at="2026-02-01T00:00:00Z").write(v2_lock)
    client = RegistryClient()
    from archlift.lock import ReleaseLock

    export_bundle(ReleaseLock.read(v1_lock), client, d / "full-v1.tar")
    full = export_bundle(ReleaseLock.read(v2_lock), client, d / "full-v2.tar")
    diff = export_bundle(ReleaseLock.read(v2_lock), client, d / "diff.tar", since=[v1_lock])
    return Exports(d, v1_lock, v2_lock, d / "full-v1.tar", d / "full-v2.tar", d / "diff.tar", full, diff)


@pytest.fixture
def target() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def _blob_members(bundle: Path) -> set[Digest]:
    with tarfile.open(bundle) as tar:
        return {Digest("sha256:" + n.rsplit("/", 1)[1]) for n in tar.getnames() if n.startswith("blobs/sha256/")}


def _pieces(img: PushedImage) -> set[Digest]:
    return {img.index, *img.blobs, *img.manifests}


def test_a_differential_bundle_carries_only_what_changed(
    exports: Exports, v1: dict[str, PushedImage], v2: dict[str, PushedImage]
) -> None:
    full, diff = exports.full_result, exports.diff_result
    held = _blob_members(exports.diff)
    # nothing of the unchanged components, nor the layer c1 shares with them; all of c1's own new pieces
    assert not held & (_pieces(v2["c0"]) | _pieces(v2["c2"]))
    assert Digest.of(SHARED) not in held
    assert _pieces(v2["c1"]) - _pieces(v1["c0"]) - _pieces(v1["c2"]) - {Digest.of(SHARED)} <= held
    assert exports.diff.stat().st_size < exports.full_v2.stat().st_size
    # the saving: computed without writing the full bundle, and equal to what the full one really holds
    assert diff.full_bytes == full.bytes
    assert diff.saved == full.bytes - diff.bytes > 0
    assert diff.base is not None and diff.saved == diff.base.left_out_bytes
    assert f"saves {diff.saved} bytes" in diff.summary()
    # the record: the old lock's digest and time, and each piece left out with the images that need it
    b = open_bundle(exports.diff)
    assert b.base is not None
    assert b.base.lock_digest == Digest("sha256:" + hashlib.sha256(exports.v1_lock.read_bytes()).hexdigest())
    assert b.base.created_at == CREATED
    left = b.base.left_out
    old = set().union(*(_pieces(img) for img in v1.values()))
    assert _pieces(v1["c0"]) | _pieces(v1["c2"]) | {Digest.of(SHARED)} <= set(left)
    assert not set(left) & (_pieces(v2["c1"]) - old)  # nothing new is left out
    assert left[v2["c0"].index].piece.images == ("c0",) and left[v2["c0"].index].piece.manifest
    assert set(left[Digest.of(SHARED)].piece.images) == {"c0", "c1", "c2"}
    assert not left[Digest.of(SHARED)].piece.manifest
    assert not set(left) & held
    # the new lock is there whole
    assert b.lock.components["c1"].index_digest == v2["c1"].index and set(b.lock.components) == {"c0", "c1", "c2"}


def test_since_the_old_bundle_or_its_parts_leaves_out_what_since_its_lock_does(
    exports: Exports, tmp_path: Path, no_docker_config: None
) -> None:
    from_lock = open_bundle(exports.diff).base
    assert from_lock is not None
    parts = run_archlift("export", "-o", "v1.tar", "--lock", str(exports.v1_lock), "--max-size", "200K", cwd=tmp_path)
    assert parts.returncode == 0, parts.stderr
    for since in ([str(exports.full_v1)], sorted(str(p) for p in tmp_path.glob("v1.tar.part-*"))[::-1]):
        out = run_archlift(
            "export", "-o", "d.tar", "--lock", str(exports.v2_lock), "--since", *since, "--json", cwd=tmp_path
        )
        assert out.returncode == 0, out.stderr
        summary = json.loads(out.stdout)
        assert summary["differential"] and summary["saved_bytes"] == exports.diff_result.saved
        from_bundle = open_bundle(tmp_path / "d.tar").base
        assert from_bundle is not None and set(from_bundle.left_out) == set(from_lock.left_out)
        assert from_bundle.lock_digest == from_lock.lock_digest  # the lock inside the bundle, byte for byte


@pytest.mark.parametrize("holds", ["nothing", "the base under another prefix"])
def test_a_target_without_the_base_gets_nothing_pushed_and_is_told_what_is_missing(
    holds: str, exports: Exports, target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    if holds != "nothing":
        ok = run_archlift("import", str(exports.full_v1), "--to", f"{target.host}/old", cwd=tmp_path)
        assert ok.returncode == 0, ok.stderr
    before = len(target.access_log())
    out = run_archlift("import", str(exports.diff), "--to", f"{target.host}/air", "--report", "r.json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lock_digest = "sha256:" + hashlib.sha256(exports.v1_lock.read_bytes()).hexdigest()
    assert "differential bundle" in out.stderr and lock_digest in out.stderr and f"created {CREATED}" in out.stderr
    for name in ("c0", "c1", "c2"):  # c1 needs the shared layer, which it leaves out too
        assert f"image {name} ({target.host}/air/rel/{name})" in out.stderr
    assert f"blob {Digest.of(SHARED)}" in out.stderr and "nothing was pushed" in out.stderr
    asked = target.access_log()[before:]
    assert asked and {e.method for e in asked} <= {"GET", "HEAD"}  # only questions: not one push
    client = RegistryClient()
    for name in ("c0", "c1", "c2"):
        assert client.list_tags(target.ref(f"air/rel/{name}")) == []
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and lock_digest in report["error"]


def test_a_differential_import_on_top_of_the_full_one_leaves_the_new_release(
    exports: Exports, v1: dict[str, PushedImage], v2: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path,
    no_docker_config: None,
) -> None:  # fmt: skip
    first = run_archlift("import", str(exports.full_v1), "--to", f"{target.host}/air", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    uploads = target.blob_uploads()
    out = run_archlift("import", str(exports.diff), "--to", f"{target.host}/air", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    new_blobs = v2["c1"].blobs - set().union(*(img.blobs for img in v1.values()))
    assert target.blob_uploads() - uploads == len(new_blobs)  # only c1's new blobs went up
    assert_same(RegistryClient(), v2, target, "air")
    for deep in ([], ["--deep"]):
        verified = run_archlift(
            "verify", "--registry", f"{target.host}/air", "--lock", str(exports.v2_lock), "--no-artifacts", *deep,
            cwd=tmp_path,
        )  # fmt: skip
        assert verified.returncode == 0, verified.stdout + verified.stderr
    again = run_archlift("import", str(exports.diff), "--to", f"{target.host}/air", "--json", cwd=tmp_path)
    assert again.returncode == 0 and all(i["up_to_date"] for i in json.loads(again.stdout)["images"])


def test_a_new_component_gets_the_blobs_the_base_holds_elsewhere_mounted(
    source: LocalRegistry, v1: dict[str, PushedImage], exports: Exports, target: LocalRegistry, tmp_path: Path,
    no_docker_config: None,
) -> None:  # fmt: skip
    c3 = push_image(RegistryClient(), source.ref("rel/c3", "v1"), seed=300, shared=SHARED)
    v3 = {**v1, "c3": c3}
    release_lock(v3).write(tmp_path / "v3.json")
    out = run_archlift("export", "-o", "d3.tar", "--lock", "v3.json", "--since", str(exports.v1_lock), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert Digest.of(SHARED) not in _blob_members(tmp_path / "d3.tar")
    assert run_archlift("import", str(exports.full_v1), "--to", target.host, cwd=tmp_path).returncode == 0
    uploads = target.blob_uploads()
    imp = run_archlift("import", "d3.tar", "--to", target.host, cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    old_blobs = set().union(*(img.blobs for img in v1.values()))
    assert Digest.of(SHARED) in old_blobs
    assert target.blob_uploads() - uploads == len(c3.blobs - old_blobs)  # the ones the base holds were mounted
    mounts = [e for e in target.access_log() if e.method == "POST" and "/rel/c3/" in e.path and "mount=" in e.path]
    assert any(str(Digest.of(SHARED)).replace(":", "%3A") in e.path or str(Digest.of(SHARED)) in e.path for e in mounts)
    assert_same(RegistryClient(), v3, target)
    ok = run_archlift(
        "verify", "--registry", target.host, "--lock", "v3.json", "--no-artifacts", "--deep", cwd=tmp_path
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_an_old_lock_whose_images_are_gone_is_refused_clearly(
    exports: Exports, v1: dict[str, PushedImage], tmp_path: Path, no_docker_config: None
) -> None:
    lock = release_lock(v1)
    gone = Digest("sha256:" + "ab" * 32)
    comps = dict(lock.components)
    comps["c2"] = dataclasses.replace(comps["c2"], index_digest=gone)
    dataclasses.replace(lock, components=comps).write(tmp_path / "old.json")
    out = run_archlift("export", "-o", "d.tar", "--lock", str(exports.v2_lock), "--since", "old.json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert "must still hold them" in out.stderr and "image c2" in out.stderr and str(gone) in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "d.tar").exists()


def test_a_base_record_that_does_not_fit_the_bundle_is_refused(exports: Exports, tmp_path: Path) -> None:
    def claim(change: str) -> bytes | None:
        def edit(data: bytes) -> bytes:
            doc = json.loads(data)
            item = doc["left_out"][0]
            if change == "unknown image":
                item["images"] = ["c9"]
            elif change == "bad digest":
                item["digest"] = "sha256:../../x"
            elif change == "wrong size":
                shared = next(i for i in doc["left_out"] if i["digest"] == str(Digest.of(SHARED)))
                shared["size"] += 1
            return json.dumps(doc).encode()

        bad = tmp_path / f"{change.replace(' ', '-')}.tar"
        edited_bundle(exports.diff, bad, {BASE_PATH: edit})
        with pytest.raises(ConfigError) as e:
            open_bundle(bad)
        return e.value.message.encode()

    assert b"images c9 not in the bundle's lock" in (claim("unknown image") or b"")
    assert b"left_out[0]" in (claim("bad digest") or b"")
    assert b"leaves out " + str(Digest.of(SHARED)).encode() in (claim("wrong size") or b"")
    # a bundle that leaves out what it needs, without saying so: refused, the missing piece named
    dropped = tmp_path / "no-base.tar"
    edited_bundle(exports.diff, dropped, {BASE_PATH: lambda _: None})
    with pytest.raises(ConfigError, match=r"it lacks blobs/sha256/[0-9a-f]{64}"):
        open_bundle(dropped)
