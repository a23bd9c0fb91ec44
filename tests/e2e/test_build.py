"""The build against the real engine and a real registry: arch binaries, patches,
atomic tags, skipping, the lock against the registry."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.registry import LocalRegistry

from archlift.cli import main
from archlift.localenv import make_git_repo, seed_busybox, seed_sbom_scanner, seed_toolchain
from archlift.lock import ReleaseLock
from archlift.oci import RegistryClient
from archlift.refs import ImageRef

REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "examples" / "demo"
ELF_MACHINE = {0x3E: "linux/amd64", 0xB7: "linux/arm64"}

BROKEN_DOCKERFILE = """\
ARG BASE=busybox:1.35
FROM ${BASE}
RUN exit 3
"""
FIX_PATCH = """\
diff --git a/Dockerfile b/Dockerfile
--- a/Dockerfile
+++ b/Dockerfile
@@ -3 +3 @@ FROM ${BASE}
-RUN exit 3
+RUN true
"""


@pytest.fixture
def demo_registry(docker_ready: None) -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        for seed in (seed_busybox, seed_toolchain):
            seed(reg.host)
        seed_busybox(reg.host, "thirdparty/busybox", "1.35")
        seed_sbom_scanner(reg.host)
        yield reg


@pytest.fixture
def demo_copy(tmp_path: Path, demo_registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch) -> Path:
    """examples/demo in a temporary directory, its upstreams made git repositories there."""
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".upstreams"))
    make_git_repo(root / "upstreams" / "hello", root / ".upstreams" / "hello.git", tags=("v1.0.0",))
    make_git_repo(root / "upstreams" / "toolbox", root / ".upstreams" / "toolbox.git", tags=("v0.3.0",))
    monkeypatch.setenv("DEMO_REGISTRY", demo_registry.host)
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "1")
    monkeypatch.chdir(tmp_path)
    return root


def build(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["build", str(config), "--json", *args])
    out = capsys.readouterr().out
    return status, json.loads(out)


def statuses(result: dict[str, object]) -> dict[str, str]:
    comps = result["components"]
    assert isinstance(comps, list)
    return {c["name"]: c["status"] for c in comps}


def elf_machines(client: RegistryClient, image: ImageRef, path: str) -> dict[str, str]:
    """For each platform of ``image``: the ELF machine of the file ``path`` in its layers."""
    out = {}
    index = client.get_manifest(image)
    for desc in index.descriptors():
        if desc.is_attestation or desc.platform is None:
            continue
        manifest = client.get_manifest(image.with_digest(desc.digest))
        for layer in manifest.descriptors()[1:] if manifest.config else manifest.descriptors():
            blob = client.get_blob(image, layer.digest)
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                try:
                    member = tar.extractfile(path.lstrip("/"))
                except KeyError:
                    continue
                assert member is not None
                head = member.read(20)
                assert head[:4] == b"\x7fELF", f"{path} is not an ELF file"
                out[str(desc.platform)] = ELF_MACHINE.get(int.from_bytes(head[18:20], "little"), "unknown")
    return out


def test_release_builds_each_platform_with_its_own_binaries(
    demo_copy: Path, demo_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    status, result = build(demo_copy / "images.yaml", capsys)
    assert status == 0, result
    assert statuses(result) == {"hello": "built", "toolbox": "built", "busybox": "copied"}
    lock = ReleaseLock.read(Path("dist/release.json"))
    with RegistryClient() as client:
        # the patch made hello cross-compile: each platform carries its own architecture's runtime
        assert elf_machines(client, lock.component("hello").ref, "/opt/hello/bin/busybox") == {
            "linux/amd64": "linux/amd64",
            "linux/arm64": "linux/arm64",
        }
        assert elf_machines(client, lock.component("toolbox").ref, "/opt/toolbox/bin/busybox") == {
            "linux/amd64": "linux/amd64",
            "linux/arm64": "linux/arm64",
        }
        # the lock matches what the registry serves, tags included
        for rel in lock.components.values():
            assert client.index_platforms(rel.ref) == rel.platforms
            assert set(rel.platforms) == {"linux/amd64", "linux/arm64"}
            for tag_ref in rel.tag_refs():
                head = client.head_manifest(tag_ref)
                assert head is not None and head.digest == rel.index_digest, tag_ref
        hello = lock.component("hello")
        assert hello.tags[0] == "v1.0.0" and hello.tags[1].endswith("-dirty")
        assert hello.upstream is not None and hello.upstream.ref == "v1.0.0" and len(hello.upstream.commit) == 40
        assert [p.file for p in hello.patches] == ["patches/hello/0001-Build-for-the-target-architecture.patch"]
        assert len(hello.attestations) == 2  # provenance + SBOM manifests, one per platform
        # the binaries check went through every platform: busybox of the base, and each image's own
        assert hello.binaries["linux/arm64"].machines == {"aarch64": 2}
        assert hello.binaries["linux/amd64"].machines == {"x86-64": 2}
        assert lock.component("toolbox").binaries["linux/arm64"].machines == {"aarch64": 2}
        assert lock.component("busybox").binaries["linux/arm64"].machines == {"aarch64": 1}
        assert lock.component("busybox").kind == "mirrored"
        # replaces: is recorded for the mirror's upstream layout (archlift mirror-config)
        assert hello.replaces == ("example.com/upstream/hello",)
        assert lock.component("busybox").replaces == ()
        assert lock.component("busybox").index_digest == seed_busybox(demo_registry.host, "thirdparty/busybox").digest

    # an unchanged re-run builds nothing and moves no tag
    status, again = build(demo_copy / "images.yaml", capsys)
    assert status == 0
    assert statuses(again) == {"hello": "skipped", "toolbox": "skipped", "busybox": "present"}
    assert again["tags_moved"] == 0
    assert ReleaseLock.read(Path("dist/release.json")) == lock


def test_without_the_patch_the_build_refuses_the_amd64_binary_in_arm64(
    demo_copy: Path, demo_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real problem (seed 000), reproduced: the upstream build hard-codes amd64. The build names the
    image, the platform, the binary and its machine, and moves no tag of any component; allowed on
    purpose (with a reason), the same image goes through."""
    config = demo_copy / "images.yaml"
    unpatched = config.read_text().replace(
        "    source: {git: .upstreams/hello.git, ref: v1.0.0}",
        "    source: {git: .upstreams/hello.git, ref: v1.0.0}\n    patches: []",
    )
    config.write_text(unpatched)
    status, result = build(config, capsys)
    assert status == 5, result
    assert statuses(result) == {"hello": "failed", "toolbox": "built", "busybox": "copied"}
    error = next(c["error"] for c in result["components"] if c["name"] == "hello")  # type: ignore[union-attr]
    assert f"{demo_registry.host}/demo/hello@sha256:" in error
    assert "(linux/arm64) holds 1 ELF file(s) for another machine (expected aarch64):" in error
    assert "  /opt/hello/bin/busybox: x86-64" in error
    assert "(linux/amd64)" not in error  # amd64's binaries are amd64
    assert result["tags_moved"] == 0 and result["lock"] is None
    assert not Path("dist/release.json").exists()
    with RegistryClient() as client:
        for name, tag in (("hello", "v1.0.0"), ("toolbox", "v0.3.0"), ("busybox", "1.35")):
            ref = ImageRef.parse(f"{demo_registry.host}/demo/{name}:{tag}")
            assert client.head_manifest(ref) is None, f"{ref} was tagged although hello's binaries are wrong"

    # a re-run does not rebuild hello (its image is in the registry) and refuses it again
    status, again = build(config, capsys)
    assert status == 5
    assert statuses(again) == {"hello": "failed", "toolbox": "skipped", "busybox": "present"}
    assert "/opt/hello/bin/busybox: x86-64" in again["components"][0]["error"]  # type: ignore[index]

    # allowed on purpose, with a reason: the release goes through, and the lock says what is there
    config.write_text(
        unpatched.replace(
            "    patches: []",
            "    patches: []\n    binaries:\n      allow: [/opt/hello/bin/*]\n"
            "      reason: the demo ships the amd64 runtime on purpose",
        )
    )
    status, result = build(config, capsys, "--quiet")
    assert status == 0, result
    lock = ReleaseLock.read(Path("dist/release.json"))
    hello = lock.component("hello")
    assert hello.tags[1].endswith("-clean")
    assert hello.binaries["linux/arm64"].machines == {"aarch64": 1, "x86-64": 1}
    assert hello.binaries["linux/amd64"].machines == {"x86-64": 2}
    with RegistryClient() as client:
        machines = elf_machines(client, hello.ref, "/opt/hello/bin/busybox")
    assert machines == {"linux/amd64": "linux/amd64", "linux/arm64": "linux/amd64"}


def _add_broken(root: Path) -> None:
    source = root / "upstreams" / "broken"
    source.mkdir()
    (source / "Dockerfile").write_text(BROKEN_DOCKERFILE)
    make_git_repo(source, root / ".upstreams" / "broken.git", tags=("v2.0.0",))
    text = (
        (root / "images.yaml")
        .read_text()
        .replace(
            "\nmanifests:",
            "\n  broken:\n    source: {git: .upstreams/broken.git, ref: v2.0.0}\n"
            "    build:\n      args: {BASE: '${DEMO_REGISTRY}/base/busybox:1.35'}\n\nmanifests:",
        )
    )
    (root / "images.yaml").write_text(text)


def test_a_failing_component_moves_no_tag_and_a_rerun_builds_only_it(
    demo_copy: Path, demo_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    _add_broken(demo_copy)
    status, result = build(demo_copy / "images.yaml", capsys)
    assert status == 5
    assert statuses(result) == {"hello": "built", "toolbox": "built", "busybox": "copied", "broken": "failed"}
    failed = next(c for c in result["components"] if c["name"] == "broken")  # type: ignore[union-attr]
    assert "RUN exit 3" in failed["error"] or "exit code: 3" in failed["error"], failed["error"]
    assert result["tags_moved"] == 0 and result["lock"] is None
    assert not Path("dist/release.json").exists()
    with RegistryClient() as client:
        for name, tag in (("hello", "v1.0.0"), ("toolbox", "v0.3.0"), ("busybox", "1.35")):
            ref = ImageRef.parse(f"{demo_registry.host}/demo/{name}:{tag}")
            assert client.head_manifest(ref) is None, f"{ref} was tagged although the release failed"

    # fix it with a patch: the re-run builds only the component that failed
    patches = demo_copy / "patches" / "broken"
    patches.mkdir(parents=True)
    (patches / "0001-fix.patch").write_text(FIX_PATCH)
    status, result = build(demo_copy / "images.yaml", capsys)
    assert status == 0, result
    assert statuses(result) == {"hello": "skipped", "toolbox": "skipped", "busybox": "present", "broken": "built"}
    with RegistryClient() as client:
        head = client.head_manifest(ImageRef.parse(f"{demo_registry.host}/demo/hello:v1.0.0"))
        assert head is not None


def test_a_patch_that_does_not_apply_names_file_hunk_and_commit(
    demo_copy: Path, demo_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    patch = demo_copy / "patches" / "hello" / "0001-Build-for-the-target-architecture.patch"
    patch.write_text(patch.read_text().replace("-RUN GOARCH=amd64", "-RUN GOARCH=sparc"))
    status, result = build(demo_copy / "images.yaml", capsys, "hello")
    assert status == 2  # bad input: nothing of it was built, pushed or moved
    error = result["components"][0]["error"]  # type: ignore[index]
    assert "0001-Build-for-the-target-architecture.patch does not apply" in error
    assert "archlift patches checkout hello" in result["components"][0]["hint"]  # type: ignore[index]
    assert "failing hunk:" in error and "-RUN GOARCH=sparc" in error
    commit = make_git_repo(demo_copy / "upstreams" / "hello", demo_copy / ".upstreams" / "hello.git").commit
    assert commit in error
    with RegistryClient() as client:
        assert client.list_tags(ImageRef.parse(f"{demo_registry.host}/demo/hello")) in ([], ["v1.0.0"])


def test_a_ref_that_does_not_exist_and_a_moved_tag_are_clear_errors(
    demo_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = demo_copy / "images.yaml"
    original = config.read_text()
    config.write_text(original.replace("ref: v0.3.0", "ref: v9.9.9"))
    status, result = build(config, capsys, "toolbox")
    assert status == 2  # bad input
    assert "ref 'v9.9.9' does not exist" in result["components"][0]["error"]  # type: ignore[index]
    assert "give an existing tag" in result["components"][0]["hint"]  # type: ignore[index]

    config.write_text(original)
    status, _ = build(config, capsys, "toolbox")
    assert status == 0
    # the upstream moves its tag to a new commit
    make_git_repo(
        demo_copy / "upstreams" / "toolbox",
        demo_copy / ".upstreams" / "toolbox.git",
        tags=(),
        extra_commits=[{"NEWS": "v0.3.0 again\n"}],
    )
    upstream = demo_copy / ".upstreams" / "toolbox.git"
    from archlift.steps.sources import git

    git("tag", "-f", "-a", "-m", "moved", "v0.3.0", "HEAD", cwd=upstream)
    status, result = build(config, capsys, "toolbox", "--refresh")
    assert status == 3  # a source error, with the hint of the error that caused it
    error = result["components"][0]["error"]  # type: ignore[index]
    assert "now resolves to" in error and "release lock records" in error
    assert "pin 'commit:' in images.yaml" in result["components"][0]["hint"]  # type: ignore[index]


def test_an_unreachable_source_is_a_clear_error(demo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = demo_copy / "images.yaml"
    config.write_text(config.read_text().replace(".upstreams/toolbox.git", ".upstreams/nowhere.git"))
    status, result = build(config, capsys, "toolbox")
    assert status == 2
    error = result["components"][0]["error"]  # type: ignore[index]
    assert "cannot reach" in error and "nowhere.git" in error
    assert "does not appear to be a git repository" in error  # git's own words, not just its last line


def test_plan_check_says_build_or_skip_and_why(demo_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(demo_copy / "images.yaml")
    assert main(["plan", config, "--check", "--json"]) == 0
    before = {c["name"]: c["decision"] for c in json.loads(capsys.readouterr().out)["components"]}
    assert before["hello"]["action"] == "build" and "no image in the registry" in before["hello"]["reason"]
    assert before["busybox"]["action"] == "copy"
    status, _ = build(demo_copy / "images.yaml", capsys, "hello")
    assert status == 0
    assert main(["plan", config, "--check"]) == 0
    text = capsys.readouterr().out
    assert "decision:  skip: unchanged: inputs" in text
    assert "decision:  build: no image in the registry" in text  # toolbox is still to be built


def test_a_killed_build_leaves_no_tag_and_a_rerun_resumes(
    demo_copy: Path, demo_registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    import os
    import signal
    import subprocess
    import sys

    argv = [sys.executable, "-m", "archlift", "build", str(demo_copy / "images.yaml")]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=os.environ)
    assert proc.stderr is not None
    for line in proc.stderr:  # kill it while it builds
        if "pushing" in line or "building" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=120)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    with RegistryClient() as client:
        for name, tag in (("hello", "v1.0.0"), ("toolbox", "v0.3.0"), ("busybox", "1.35")):
            ref = ImageRef.parse(f"{demo_registry.host}/demo/{name}:{tag}")
            assert client.head_manifest(ref) is None, f"{ref} is tagged after a killed build"
    status, result = build(demo_copy / "images.yaml", capsys)
    assert status == 0, result
    lock = ReleaseLock.read(Path("dist/release.json"))
    with RegistryClient() as client:
        for rel in lock.components.values():
            for ref in rel.tag_refs():
                head = client.head_manifest(ref)
                assert head is not None and head.digest == rel.index_digest
