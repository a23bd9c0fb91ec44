"""archlift verify-bundle: a bundle checked offline before it goes on the media: good, truncated and
tampered bundles; platforms against the lock; real cosign signatures against the right and a wrong
key; a differential bundle's base; the binaries of each platform against what the lock recorded."""

from __future__ import annotations

import gzip
import io
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
    edited_bundle,
    make_release,
    push_image,
    release_lock,
    rewrite_bundle,
)
from support.registry import LocalRegistry

from archlift.checks.sign import sign_release
from archlift.errors import ConfigError
from archlift.localenv import find_debs
from archlift.lock import BinariesRecord, ComponentRelease, ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.proc import run
from archlift.refs import Digest
from archlift.steps.airgap import LOCK_PATH, export_bundle, open_bundle

no_docker_config = h.no_docker_config
source = h.source


@pytest.fixture(scope="module")
def release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3)


@pytest.fixture(scope="module")
def bundle(release: dict[str, PushedImage], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vb") / "bundle.tar"
    export_bundle(release_lock(release), RegistryClient(), out)
    return out


def _verify(*args: str, cwd: Path) -> tuple[int, str, str]:
    out = run_archlift("verify-bundle", *args, cwd=cwd)
    assert "Traceback" not in out.stderr, out.stderr
    return out.returncode, out.stdout, out.stderr


def test_a_good_bundle_passes_with_no_registry_at_all(tmp_path: Path, no_docker_config: None) -> None:
    """Exported, then every registry stopped: verify-bundle needs none."""
    with LocalRegistry() as reg:
        images = make_release(RegistryClient(), reg, n=2)
        export_bundle(release_lock(images), RegistryClient(), tmp_path / "b.tar")
    code, out, err = _verify("b.tar", "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    assert report["ok"] and not report["differential"] and report["parts"] == 0
    assert report["signatures"] == "not checked"
    assert {i["binaries"] for i in report["images"]} == {"not recorded in the lock"}  # test images, no build
    assert [(i["name"], i["in_bundle"], i["platforms"]) for i in report["images"]] == [
        (n, True, ["linux/amd64", "linux/arm64"]) for n in ("c0", "c1")
    ]
    code, text, _ = _verify("b.tar", cwd=tmp_path)
    assert code == 0 and "good" in text and "signatures: not checked" in text


def test_a_truncated_bundle_is_refused(bundle: Path, tmp_path: Path) -> None:
    data = bundle.read_bytes()
    for n, cut in enumerate((len(data) // 2, len(data) - 10240, 700)):
        short = tmp_path / f"short{n}.tar"
        short.write_bytes(data[:cut])
        code, out, err = _verify(str(short), "--json", cwd=tmp_path)
        assert code == 2, err
        assert str(short) in err and "truncated" in err
        assert json.loads(out)["ok"] is False


def test_a_tampered_blob_is_named(bundle: Path, tmp_path: Path) -> None:
    def flip(info: object, data: bytes) -> list[tuple[object, bytes]]:
        name = getattr(info, "name", "")
        if name.startswith("blobs/") and len(data) > 60000:
            return [(info, bytes([data[0] ^ 1]) + data[1:])]
        return [(info, data)]

    bad = tmp_path / "bad.tar"
    rewrite_bundle(bundle, bad, flip)  # type: ignore[arg-type]
    code, _, err = _verify(str(bad), cwd=tmp_path)
    assert code == 2
    assert "'blobs/sha256/" in err and "does not match its digest" in err and "corrupted" in err


def test_a_lock_that_does_not_match_the_images_is_refused(
    bundle: Path, release: dict[str, PushedImage], tmp_path: Path
) -> None:
    """A consistent bundle (checksums made to match) whose lock names another platform manifest."""

    def swap(data: bytes) -> bytes:
        doc = json.loads(data)
        plats = doc["components"]["c1"]["platforms"]
        plats["linux/amd64"], plats["linux/arm64"] = plats["linux/arm64"], plats["linux/amd64"]
        return json.dumps(doc).encode()

    bad = tmp_path / "swapped.tar"
    edited_bundle(bundle, bad, {LOCK_PATH: swap})
    code, _, err = _verify(str(bad), cwd=tmp_path)
    assert code == 2
    assert "component 'c1'" in err and "does not hold the platforms" in err
    assert f"linux/amd64: the lock says {release['c1'].platforms['linux/arm64']}" in err


def test_a_differential_bundle_names_the_base_it_needs(
    source: LocalRegistry, release: dict[str, PushedImage], tmp_path: Path, no_docker_config: None
) -> None:
    release_lock(release).write(tmp_path / "old.json")
    new = {**release, "c2": push_image(RegistryClient(), source.ref("rel/c2", "v9"), seed=900, shared=SHARED)}
    release_lock(new).write(tmp_path / "new.json")
    out = run_archlift("export", "-o", "d.tar", "--lock", "new.json", "--since", "old.json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    code, text, err = _verify("d.tar", "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(text)
    assert report["differential"] and report["base"]["source"] == "old.json"
    assert report["base"]["lock_digest"].startswith("sha256:") and report["base"]["left_out"]["blobs"] > 0
    assert {i["name"]: i["in_bundle"] for i in report["images"]} == {"c0": False, "c1": False, "c2": True}
    code, summary, _ = _verify("d.tar", cwd=tmp_path)
    assert code == 0 and "that the target must already hold" in summary and report["base"]["lock_digest"] in summary


# ------------------------------------------------------------------ signatures, with the real cosign
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("keys")
    run(["cosign", "generate-key-pair"], cwd=d, env={"COSIGN_PASSWORD": "pw"}, timeout=60)
    (d / "other").mkdir()
    run(["cosign", "generate-key-pair"], cwd=d / "other", env={"COSIGN_PASSWORD": "x"}, timeout=60)
    return d / "cosign.key", d / "cosign.pub", d / "other" / "cosign.pub"


@pytest.fixture(scope="module")
def signed(
    source: LocalRegistry, keys: tuple[Path, Path, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Path, Path]]:
    """Two images signed with cosign (by digest, no transparency log), exported with their .sig tags;
    and the same release with one image left unsigned."""
    client = RegistryClient()
    images = {f"s{i}": push_image(client, source.ref(f"signed/s{i}", "v1"), seed=500 + i) for i in range(2)}
    unsigned = {"u0": push_image(client, source.ref("signed/u0", "v1"), seed=600)}
    mp = pytest.MonkeyPatch()
    mp.setenv("COSIGN_PASSWORD", "pw")
    try:
        sign_release(release_lock(images), str(keys[0]))
    finally:
        mp.undo()
    d = tmp_path_factory.mktemp("signed")
    export_bundle(release_lock(images), client, d / "signed.tar")
    export_bundle(release_lock({**images, **unsigned}), client, d / "partly.tar")
    yield d / "signed.tar", d / "partly.tar"


def test_signatures_verify_offline_against_the_right_key_only(
    signed: tuple[Path, Path], keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    good, partly = signed
    _, pub, other = keys
    code, out, err = _verify(str(good), "--key", str(pub), "--json", cwd=tmp_path)
    assert code == 0, err
    report = json.loads(out)
    assert report["signatures"] == "checked" and {i["signature"] for i in report["images"]} == {"verified (1)"}
    code, _, err = _verify(str(good), "--key", str(other), cwd=tmp_path)
    assert code == 2
    assert "component 's0'" in err and f"no signature in the bundle verifies against {other}" in err
    code, _, err = _verify(str(partly), "--key", str(pub), cwd=tmp_path)
    assert code == 2 and "component 'u0'" in err and "has no cosign signature in the bundle" in err
    code, _, err = _verify(str(good), "--key", str(tmp_path / "nope.pub"), cwd=tmp_path)
    assert code == 2 and "no such public key file" in err


def test_a_signature_that_is_not_cosigns_is_refused(
    bundle: Path, keys: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """make_release's c0 carries a .sig tag with a made-up signature: it cannot verify."""
    code, _, err = _verify(str(bundle), "--key", str(keys[1]), cwd=tmp_path)
    assert code == 2 and "component 'c0'" in err and "not base64" in err


# ------------------------------------------------------------------ the binary-architecture check's plug-in point
def _busybox(tmp_path: Path) -> dict[str, bytes]:
    out = {}
    for arch, deb in find_debs().items():
        run(["dpkg-deb", "-x", str(deb), str(tmp_path / arch)])
        out[arch] = (tmp_path / arch / "bin" / "busybox").read_bytes()
    return out


def _elf_layer(data: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("bin/tool")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def test_the_binaries_of_each_platform_are_what_the_lock_recorded(source: LocalRegistry, tmp_path: Path) -> None:
    """The binary-architecture check reads each platform's layers from the bundle: the ELF files must
    be what the release lock recorded when the build checked them (count and machines). A bundle whose
    lock records an aarch64 binary where the arm64 image holds an x86-64 one is refused, naming the
    file and the machine; recorded as it is (allowed on purpose at build time), it passes."""
    busybox = _busybox(tmp_path)
    client = RegistryClient()
    ref = source.ref("binaries/tool", "v1")
    layers = {"linux/amd64": _elf_layer(busybox["amd64"]), "linux/arm64": _elf_layer(busybox["amd64"])}
    children, platforms = [], {}
    for text, data in layers.items():
        os_name, arch = text.split("/")
        config = json.dumps({"os": os_name, "architecture": arch, "rootfs": {"type": "layers"}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": str(client.put_blob(ref, config)), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": str(client.put_blob(ref, data)), "size": len(data)}],
        }).encode()  # fmt: skip
        digest = client.put_manifest(ref.with_digest(Digest.of(manifest)), manifest, OCI_MANIFEST)
        platforms[text] = digest
        children.append({"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(manifest),
                         "platform": {"os": os_name, "architecture": arch}})  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    index_digest = client.put_manifest(ref, index, OCI_INDEX)

    def lock_recording(arm64_machine: str) -> ReleaseLock:
        binaries = {
            "linux/amd64": BinariesRecord(1, {"x86-64": 1}),
            "linux/arm64": BinariesRecord(1, {arm64_machine: 1}),
        }
        comp = ComponentRelease("tool", "built", ref.name, index_digest, platforms, ("v1",), binaries=binaries)
        return ReleaseLock({"tool": comp})

    told = tmp_path / "told.tar"
    export_bundle(lock_recording("aarch64"), client, told)  # what the gate would have refused
    with pytest.raises(ConfigError, match=r"component 'tool', linux/arm64 .*records 1 \(1 aarch64\).*"
                       r"not aarch64: /bin/tool: x86-64"):  # fmt: skip
        open_bundle(told)
    code, _, err = _verify(str(told), cwd=tmp_path)
    assert code == 2 and "/bin/tool: x86-64" in err

    allowed = tmp_path / "allowed.tar"
    export_bundle(lock_recording("x86-64"), client, allowed)  # allowed on purpose, and recorded so
    opened = open_bundle(allowed)
    assert {i.binaries for i in opened.report.images} == {"ok"}


def test_signatures_travel_in_a_differential_bundle_and_verify_after_its_import(
    source: LocalRegistry, keys: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    no_docker_config: None,
) -> None:  # fmt: skip
    """The key rotated between two releases, each signed whole ('archlift sign' signs every image):
    cosign adds the new key's signature to the unchanged image's .sig manifest, so the differential
    bundle carries it; verify-bundle checks it offline, and after the import cosign verifies every
    image in the site's registry with the new key."""
    key, pub, other_pub = keys
    other_key = other_pub.with_name("cosign.key")
    client = RegistryClient()
    v1 = {f"t{i}": push_image(client, source.ref(f"resigned/t{i}", "v1"), seed=700 + i) for i in range(2)}
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    sign_release(release_lock(v1), str(key))
    release_lock(v1).write(tmp_path / "v1.json")
    assert run_archlift("export", "-o", "v1.tar", "--lock", "v1.json", cwd=tmp_path).returncode == 0
    v2 = {**v1, "t1": push_image(client, source.ref("resigned/t1", "v2"), seed=800)}
    monkeypatch.setenv("COSIGN_PASSWORD", "x")
    sign_release(release_lock(v2), str(other_key))
    release_lock(v2).write(tmp_path / "v2.json")
    out = run_archlift("export", "-o", "d.tar", "--lock", "v2.json", "--since", "v1.tar", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    code, text, err = _verify("d.tar", "--key", str(other_pub), "--json", cwd=tmp_path)
    assert code == 0, err
    images = {i["name"]: i for i in json.loads(text)["images"]}
    assert not images["t0"]["in_bundle"] and images["t0"]["signature"] == "verified (1)"  # the new key's
    assert images["t1"]["in_bundle"] and images["t1"]["signature"] == "verified (1)"
    code, _, err = _verify("d.tar", "--key", str(pub), cwd=tmp_path)  # t1 was never signed with the old key
    assert code == 2 and "component 't1'" in err
    with LocalRegistry() as site:
        for bundle in ("v1.tar", "d.tar"):
            imp = run_archlift("import", bundle, "--to", f"{site.host}/m", cwd=tmp_path)
            assert imp.returncode == 0, imp.stderr
        ok = run_archlift("verify", "--registry", f"{site.host}/m", "--lock", "v2.json", "--no-artifacts", "--key",
                     str(other_pub), cwd=tmp_path)  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "signatures: 2 of 2 image(s) verified" in ok.stdout
