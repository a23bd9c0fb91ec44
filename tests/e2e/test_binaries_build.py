"""The build's binaries gate against the real engine and registry: a wrong binary deleted by a later
layer (whiteouts of a file and of a directory) passes; a mirrored third-party image with another machine's
binary is a warning, and an error with ``binaries: {check: fail}``. (The demo's unpatched hello,
refused, is in test_build.py.)"""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from support.registry import LocalRegistry, seed_image

from archlift.cli import main
from archlift.localenv import find_debs
from archlift.lock import ReleaseLock
from archlift.oci import RegistryClient
from archlift.refs import ImageRef

WHITEOUT_DOCKERFILE = """\
ARG BASE
FROM ${BASE}
COPY amd64-busybox /opt/wrong/busybox
COPY amd64-busybox /opt/gone/sub/busybox
RUN rm /opt/wrong/busybox && rm -rf /opt/gone && mkdir /opt/gone && echo replaced > /opt/gone/note
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "1")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def build(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["build", str(config), "--json", *args])
    return status, json.loads(capsys.readouterr().out)


def component(result: dict[str, object], name: str) -> dict[str, object]:
    comps = result["components"]
    assert isinstance(comps, list)
    return next(c for c in comps if c["name"] == name)


def amd64_busybox(tmp_path: Path) -> bytes:
    where = tmp_path / "deb"
    subprocess.run(["dpkg-deb", "-x", str(find_debs()["amd64"]), str(where)], check=True)
    return (where / "bin" / "busybox").read_bytes()


def layer_names(client: RegistryClient, image: ImageRef, platform: str) -> list[list[str]]:
    """The entry names of each layer of ``image``'s ``platform``."""
    index = client.get_manifest(image)
    digest = next(d.digest for d in index.descriptors() if str(d.platform) == platform)
    manifest = client.get_manifest(image.with_digest(digest))
    out = []
    for desc in manifest.descriptors()[1:]:
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(client.get_blob(image, desc.digest)))) as tar:
            out.append(tar.getnames())
    return out


def test_a_wrong_binary_deleted_by_a_later_layer_passes(
    workdir: Path,
    registry: LocalRegistry,
    seeded_base: ImageRef,
    git_repo_factory: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert callable(git_repo_factory)
    repo = git_repo_factory({"Dockerfile": WHITEOUT_DOCKERFILE, "amd64-busybox": amd64_busybox(workdir)}, "cleanup")
    config = workdir / "images.yaml"
    config.write_text(
        f"registry: {registry.host}/binaries-whiteout\n"
        "attestations: {provenance: false, sbom: false}\n"
        "components:\n"
        "  cleanup:\n"
        f"    source: {{git: {repo.path}, ref: v1.0.0}}\n"
        f"    build: {{args: {{BASE: '{seeded_base}'}}}}\n"
    )
    blob_reads = r"^/v2/binaries-whiteout/cleanup/blobs/sha256:"
    before = registry.count("GET", blob_reads)
    status, result = build(config, capsys)
    assert status == 0, result
    lock = ReleaseLock.read(Path("dist/release.json"))
    rel = lock.component("cleanup")
    assert rel.binaries["linux/arm64"].machines == {"aarch64": 1}  # the base's busybox, nothing else
    assert rel.binaries["linux/amd64"].machines == {"x86-64": 1}
    # checked from the OCI layout the bake wrote, as soon as it was pushed: the gate read no layer back
    assert registry.count("GET", blob_reads) == before
    with RegistryClient() as client:
        names = layer_names(client, rel.ref, "linux/arm64")
    # the image really holds the wrong binaries in lower layers, and the last layer's whiteouts: of the
    # file, and of the directory that held the other (BuildKit writes no opaque directory for
    # rm -rf + mkdir; an opaque one is in test_binaries_registry.py)
    assert "opt/wrong/busybox" in names[-3] and "opt/gone/sub/busybox" in names[-2]
    assert "opt/wrong/.wh.busybox" in names[-1] and "opt/gone/.wh.sub" in names[-1], names[-1]


@pytest.fixture(scope="module")
def fake_thirdparty(docker_ready: None, registry: LocalRegistry) -> ImageRef:
    """A third-party image whose arm64 entry holds the amd64 busybox (the problem archlift exists for)."""
    return seed_image(registry.host, "thirdparty/fake-tool", "2.0", "FROM scratch\nCOPY amd64/bin/busybox /bin/tool\n")


def test_a_mirrored_image_of_another_machine_is_a_warning(
    workdir: Path, registry: LocalRegistry, fake_thirdparty: ImageRef, capsys: pytest.CaptureFixture[str]
) -> None:
    config = workdir / "images.yaml"
    config.write_text(
        f"registry: {registry.host}/binaries-mirror\n"
        f"components:\n  tool:\n    mirror: {fake_thirdparty.name}:2.0\n    tags: ['2.0']\n"
    )
    status, result = build(config, capsys)
    assert status == 0, result
    tool = component(result, "tool")
    assert tool["status"] == "copied"
    warnings = tool["warnings"]
    assert isinstance(warnings, list) and len(warnings) == 1
    assert "(linux/arm64) holds 1 ELF file(s) for another machine (expected aarch64):" in warnings[0]
    assert "/bin/tool: x86-64" in warnings[0] and "binaries: {check: fail}" in warnings[0]
    lock = ReleaseLock.read(Path("dist/release.json"))
    assert lock.component("tool").binaries["linux/arm64"].machines == {"x86-64": 1}
    with RegistryClient() as client:
        head = client.head_manifest(ImageRef.parse(f"{registry.host}/binaries-mirror/tool:2.0"))
    assert head is not None and head.digest == fake_thirdparty.digest

    # the summary a person reads shows the warning
    assert main(["build", str(config)]) == 0
    err = capsys.readouterr().err
    assert "tool: warning:" in err and "/bin/tool: x86-64" in err


def test_a_mirrored_image_of_another_machine_fails_with_check_fail(
    workdir: Path,
    registry: LocalRegistry,
    fake_thirdparty: ImageRef,
    seeded_base: ImageRef,  # "good" mirrors it
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = workdir / "images.yaml"
    config.write_text(
        f"registry: {registry.host}/binaries-strict\n"
        "components:\n"
        f"  tool:\n    mirror: {fake_thirdparty.name}:2.0\n    tags: ['2.0']\n    binaries: {{check: fail}}\n"
        f"  good:\n    mirror: {registry.host}/base/busybox:1.35\n    tags: ['1.35']\n"
    )
    status, result = build(config, capsys)
    assert status == 5, result
    assert component(result, "tool")["status"] == "failed"
    assert component(result, "good")["status"] == "copied"
    error = component(result, "tool")["error"]
    assert isinstance(error, str)
    assert f"tool: {registry.host}/binaries-strict/tool@sha256:" in error and "/bin/tool: x86-64" in error
    assert result["lock"] is None and not Path("dist/release.json").exists()
    with RegistryClient() as client:
        for name, tag in (("tool", "2.0"), ("good", "1.35")):
            assert client.head_manifest(ImageRef.parse(f"{registry.host}/binaries-strict/{name}:{tag}")) is None


def test_the_demo_shows_the_unpatched_hello_refused_and_the_patched_one_released(
    docker_ready: None, tmp_path: Path
) -> None:
    """`archlift demo` as a user runs it: with its patch hello is released (binaries checked); without
    it, built into demo-unpatched/, the build names the amd64 binary in linux/arm64 and tags nothing."""
    import os
    import shutil
    import sys

    root = Path(__file__).resolve().parents[2]
    shutil.copytree(
        root / "examples" / "demo", tmp_path / "examples" / "demo", ignore=shutil.ignore_patterns(".upstreams")
    )
    with LocalRegistry() as reg, LocalRegistry() as mirror:
        env = {**os.environ, "ARCHLIFT_CACHE_DIR": str(tmp_path / "cache"), "CI": "1"}
        argv = [
            sys.executable,
            "-m",
            "archlift",
            "demo",
            "--registry",
            reg.host,
            "--mirror-to",
            f"{mirror.host}/airgap",
        ]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        out, err = proc.stdout, proc.stderr
        assert proc.returncode == 0, f"{out[-3000:]}\n{err[-3000:]}"
        released, refused = out.split("==> the same hello without its patch", 1)
        assert "release complete: 2 built, 1 unchanged or mirrored; 5 tags moved" in released
        assert "binaries: 10 ELF file(s) checked in 6 platform image(s)" in released
        assert "release NOT complete: hello failed; no tag was moved" in refused
        assert "==> refused, as it must be: the linux/arm64 image holds /opt/hello/bin/busybox" in refused
        assert f"hello: {reg.host}/demo-unpatched/hello@sha256:" in err
        assert "(linux/arm64) holds 1 ELF file(s) for another machine (expected aarch64):\n" in err
        assert "\n    /opt/hello/bin/busybox: x86-64\n" in err
        with RegistryClient() as client:
            assert client.list_tags(ImageRef.parse(f"{reg.host}/demo-unpatched/hello")) == []
            lock = ReleaseLock.read(tmp_path / "dist" / "release.json")
            for rel in lock.components.values():
                for ref in rel.tag_refs():
                    head = client.head_manifest(ref)
                    assert head is not None and head.digest == rel.index_digest
