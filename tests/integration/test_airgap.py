"""archlift export / import: a release through one tarball, and every refusal of a bad bundle."""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import support.images as h
from support.cli import run_archlift
from support.images import (
    FaultProxy,
    PushedImage,
    assert_same,
    edited_bundle,
    make_release,
    release_lock,
    rewrite_bundle,
)
from support.registry import LocalRegistry

from archlift.errors import ConfigError
from archlift.oci import RegistryClient
from archlift.oci.layout import REF_NAME, REPOSITORY
from archlift.refs import ImageRef
from archlift.steps.airgap import LOCK_PATH, SUMS, export_bundle, import_bundle, open_bundle
from archlift.steps.mirror import Target, check

no_docker_config = h.no_docker_config
source = h.source  # a registry holding the release, per module


@pytest.fixture(scope="module")
def release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3)


@pytest.fixture(scope="module")
def bundle(source: LocalRegistry, release: dict[str, PushedImage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bundle.tar"
    manifests = out.parent / "manifests"
    (manifests / "base").mkdir(parents=True)
    (manifests / "base" / "deploy.yaml").write_text("kind: Deployment\n")
    result = export_bundle(release_lock(release), RegistryClient(), out, manifests_dir=manifests)
    assert result.images == 3 and result.blobs > 0
    return out


@pytest.fixture
def target() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def test_export_then_import_keeps_every_digest(
    bundle: Path, release: dict[str, PushedImage], target: LocalRegistry, no_docker_config: None
) -> None:
    b = open_bundle(bundle)
    assert b.lock == release_lock(release)
    names = set(b.members)
    assert {"oci-layout", "index.json", LOCK_PATH, SUMS, "archlift/manifests/base/deploy.yaml"} <= names
    client = RegistryClient()
    result = import_bundle(b, Target.parse(f"{target.host}/air"), client, jobs=4)
    check(result)
    assert_same(client, release, target, "air")
    unique = set().union(*(img.blobs for img in release.values()))
    assert target.blob_uploads() == len(unique)
    again = import_bundle(b, Target.parse(f"{target.host}/air"), client)
    assert all(i.up_to_date for i in again.images) and again.bytes_sent == 0


def test_export_is_reproducible(
    source: LocalRegistry, release: dict[str, PushedImage], bundle: Path, tmp_path: Path, no_docker_config: None
) -> None:
    manifests = bundle.parent / "manifests"
    second = tmp_path / "again.tar"
    export_bundle(release_lock(release), RegistryClient(), second, manifests_dir=manifests)
    assert second.read_bytes() == bundle.read_bytes()


def _extra(name: str, data: bytes = b"x", kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    info.type = kind
    info.linkname = link
    return info


def _adding(info: tarfile.TarInfo) -> Callable[[tarfile.TarInfo, bytes], list[tuple[tarfile.TarInfo, bytes]]]:
    def change(i: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
        out = [(i, data)]
        if i.name == "oci-layout":
            out.append((info, b"x"))
        return out

    return change


def _corrupt_blob(i: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    if i.name.startswith("blobs/") and i.size > 60000:
        return [(i, bytes([data[0] ^ 0xFF]) + data[1:])]
    return [(i, data)]


def _corrupt_index(i: tarfile.TarInfo, data: bytes) -> list[tuple[tarfile.TarInfo, bytes]]:
    if i.name == "index.json":
        return [(i, data.replace(b'"schemaVersion": 2', b'"schemaVersion": 3'))]
    return [(i, data)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (_adding(_extra("../escape.txt")), r"member '\.\./escape\.txt' would be written outside the extraction root"),
        (_adding(_extra("blobs/../../escape")), r"outside the extraction root"),
        (_adding(_extra("/etc/cron.d/evil")), r"member '/etc/cron.d/evil' has an absolute path"),
        (
            _adding(_extra("archlift/manifests/link", kind=tarfile.SYMTYPE, link="/etc/passwd")),
            r"is a symbolic link \(to '/etc/passwd'\); links are not allowed",
        ),
        (_adding(_extra("archlift/manifests/hard", kind=tarfile.LNKTYPE, link="oci-layout")), r"is a hard link"),
        (_adding(_extra("archlift/fifo", kind=tarfile.FIFOTYPE)), r"special file"),
        (_corrupt_blob, r"'blobs/sha256/[0-9a-f]{64}' does not match its digest \(sha256 is [0-9a-f]{64}\): corrupted"),
        (_corrupt_index, r"'index.json' does not match its checksum in SHA256SUMS"),
        (_adding(_extra("archlift/unlisted.txt")), r"'archlift/unlisted.txt' is not listed in SHA256SUMS"),
    ],
)
def test_bad_bundles_are_refused_before_anything_is_pushed(
    bundle: Path,
    tmp_path: Path,
    target: LocalRegistry,
    change: Callable[[tarfile.TarInfo, bytes], list[tuple[tarfile.TarInfo, bytes]]],
    message: str,
) -> None:
    bad = tmp_path / "bad.tar"
    rewrite_bundle(bundle, bad, change)
    with pytest.raises(ConfigError, match=message) as e:
        open_bundle(bad)
    assert str(bad) in e.value.message
    assert not [x for x in target.access_log() if x.method in ("PUT", "POST")]


def test_not_a_tarball(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ConfigError, match="not an uncompressed tar"):
        open_bundle(junk)
    with pytest.raises(ConfigError, match="no such bundle"):
        open_bundle(tmp_path / "missing.tar")


def test_cli_export_import_and_refusal_exit_status(
    release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None, bundle: Path
) -> None:
    release_lock(release).write(tmp_path / "dist/release.json")
    (tmp_path / "dist/manifests").mkdir()
    (tmp_path / "dist/manifests/a.yaml").write_text("a: 1\n")
    out = run_archlift("export", "--output", "b.tar", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["images"] == 3
    imp = run_archlift("import", "b.tar", "--to", target.host, "--extract", "x", cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    assert (tmp_path / "x/manifests/a.yaml").read_text() == "a: 1\n"
    assert (tmp_path / "x/release.json").is_file()
    assert_same(RegistryClient(), release, target)
    bad = tmp_path / "bad.tar"
    rewrite_bundle(bundle, bad, _adding(_extra("../../evil")))
    refused = run_archlift("import", str(bad), "--to", target.host, cwd=tmp_path)
    assert refused.returncode == 2 and "outside the extraction root" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_published_artifacts_go_along(
    source: LocalRegistry, release: dict[str, PushedImage], tmp_path: Path, no_docker_config: None
) -> None:
    """The manifests artifact 'archlift publish' recorded: mirrored, verified, exported and imported."""
    client = RegistryClient()
    repo = source.ref("rel/manifests")
    layer = client.put_blob(repo, b"a tarball of manifests")
    empty = client.put_blob(repo, b"{}")
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": h.OCI_MANIFEST,
            "artifactType": "application/vnd.archlift.manifests",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": str(empty), "size": 2},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(layer), "size": 22}],
        }
    ).encode()
    digest = client.put_manifest(repo.with_tag("v1"), raw, h.OCI_MANIFEST)
    record = {"artifacts": {"configsync": {"ref": f"{repo.name}:v1@{digest}", "tag": "v1", "digest": str(digest)}}}
    (tmp_path / "dist").mkdir()
    (tmp_path / "dist/manifests-artifact.json").write_text(json.dumps(record))
    release_lock(release).write(tmp_path / "dist/release.json")
    with LocalRegistry() as mirrored, LocalRegistry() as imported:
        assert run_archlift("mirror", "--to", f"{mirrored.host}/m", cwd=tmp_path).returncode == 0
        head = client.head_manifest(ImageRef(mirrored.host, "m/rel/manifests", "v1"))
        assert head is not None and head.digest == digest
        ok = run_archlift("verify", "--registry", f"{mirrored.host}/m", "--json", cwd=tmp_path)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "manifests (configsync)" in {i["name"] for i in json.loads(ok.stdout)["images"]}
        assert run_archlift("export", "-o", "b.tar", cwd=tmp_path).returncode == 0
        assert run_archlift("import", "b.tar", "--to", imported.host, cwd=tmp_path).returncode == 0
        head = client.head_manifest(ImageRef(imported.host, "rel/manifests", "v1"))
        assert head is not None and head.digest == digest
        assert client.get_blob(ImageRef(imported.host, "rel/manifests"), layer) == b"a tarball of manifests"
        missing = run_archlift("verify", "--registry", f"{imported.host}/other", cwd=tmp_path)
        assert missing.returncode == 9 and "manifests (configsync)" in missing.stderr


# ------------------------------------------------------------------ all or nothing
def _index_tag(tag: str) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        doc = json.loads(data)
        entry = next(e for e in doc["manifests"] if e["annotations"].get(REF_NAME) == "v1")
        entry["annotations"][REF_NAME] = tag
        return json.dumps(doc).encode()

    return change


def _lock_tag(tag: str) -> Callable[[bytes], bytes]:
    def change(data: bytes) -> bytes:
        doc = json.loads(data)
        doc["components"]["c1"]["tags"] = ["v1", tag]
        return json.dumps(doc).encode()

    return change


def _layer_of(bundle: Path, release: dict[str, PushedImage]) -> str:
    digest = sorted(release["c1"].blobs - release["c0"].blobs)[0]
    return f"blobs/sha256/{digest.hex}"


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("missing blob", r"it lacks blobs/sha256/[0-9a-f]{64}, which a manifest in it needs"),
        ("index tag ..", r"index\.json, manifests\[\d+\]: '\.\.' is not a valid tag"),
        ("index tag path", r"index\.json, manifests\[\d+\]: '\.\./\.\./etc/passwd' is not a valid tag"),
        ("index tag dash", r"'-rm' is not a valid tag"),
        (
            "lock tag",
            r"its archlift/release\.json is not a valid release lock .*"
            r"component 'c1': tag 'v1/\.\./x' is not a valid tag",
        ),
        ("member ..", r"member '\.\./escape\.txt' would be written outside the extraction root"),
    ],
)
def test_a_bundle_that_does_not_resolve_pushes_nothing_at_all(
    what: str,
    message: str,
    bundle: Path,
    release: dict[str, PushedImage],
    target: LocalRegistry,
    tmp_path: Path,
    no_docker_config: None,
) -> None:
    bad = tmp_path / "bad.tar"
    if what == "member ..":
        rewrite_bundle(bundle, bad, _adding(_extra("../escape.txt")))
    else:
        edits: dict[str, Callable[[bytes], bytes | None]] = {
            "missing blob": {_layer_of(bundle, release): lambda _: None},
            "index tag ..": {"index.json": _index_tag("..")},
            "index tag path": {"index.json": _index_tag("../../etc/passwd")},
            "index tag dash": {"index.json": _index_tag("-rm")},
            "lock tag": {LOCK_PATH: _lock_tag("v1/../x")},
        }[what]
        edited_bundle(bundle, bad, edits)
    with pytest.raises(ConfigError, match=message):
        open_bundle(bad)
    started = target.access_log()  # the fixture's start-up probe
    out = run_archlift("import", str(bad), "--to", target.host, "--report", "r.json", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert re.search(message, out.stderr) and "Traceback" not in out.stderr
    assert target.access_log() == started  # not one request to the target, not even its /v2/
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["ok"] is False and re.search(message, report["error"]) and report["images"] == []


def _refuse_manifests_of(repository: str) -> h.Rule:
    body = json.dumps({"errors": [{"code": "MANIFEST_INVALID", "message": "refused by policy"}]}).encode()
    return lambda method, path: (400, body) if method == "PUT" and f"/v2/{repository}/manifests/" in path else None


def test_a_failure_in_the_middle_of_an_import_moves_no_tag_and_the_report_says_so(
    bundle: Path, release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    with FaultProxy(target.host, every=0, rule=_refuse_manifests_of("rel/c1")) as proxy:
        out = run_archlift("import", str(bundle), "--to", proxy.host, "--report", "r.json", cwd=tmp_path)
        assert out.returncode == 8, out.stderr
        assert proxy.refused
    assert "c1: pushing" in out.stderr and "refused by policy" in out.stderr and "Traceback" not in out.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    errors = {i["name"]: i["error"] for i in report["images"]}
    assert "refused by policy" in errors["c1"]
    assert errors["c0"] == errors["c2"] == "tags not moved: they wait for every image, and c1 failed"
    assert all(i["tags_moved"] == [] for i in report["images"]) and report["ok"] is False
    client = RegistryClient()
    for img in release.values():  # the content of c0 and c2 went up; no tag of any image moved
        repo = target.ref(img.ref.repository)
        assert client.list_tags(repo) == []
    assert client.head_manifest(target.ref("rel/c0").with_digest(release["c0"].index)) is not None
    # the same import again, once the target takes it: only what is missing, then every tag
    before = target.blob_uploads()
    again = run_archlift("import", str(bundle), "--to", target.host, "--json", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_same(client, release, target)
    assert target.blob_uploads() == before  # every blob went up the first time: now manifests and tags only


def test_a_bundle_without_repository_annotations_still_imports(
    bundle: Path, release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    """Entries with no repository (as an older archlift or another tool writes them) belong to every
    repository: what refers to an image is told by its subject and its tag."""

    def strip(data: bytes) -> bytes:
        doc = json.loads(data)
        for e in doc["manifests"]:
            e["annotations"].pop(REPOSITORY)
        return json.dumps(doc).encode()

    old = tmp_path / "old.tar"
    edited_bundle(bundle, old, {"index.json": strip})
    result = import_bundle(open_bundle(old), Target.parse(target.host), RegistryClient())
    check(result)
    assert_same(RegistryClient(), release, target)
    (c0,) = [i for i in result.images if i.name == "c0"]
    assert set(c0.extra_tags) == {release["c0"].signature_tag, f"sha256-{release['c0'].index.hex}"}
    assert all(not i.extra_tags for i in result.images if i.name != "c0")  # nothing of c0's went to the others
