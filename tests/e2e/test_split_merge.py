"""Scale-out without QEMU: each platform built by its own process, pushed by digest, then merged."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_archlift
from support.registry import LocalRegistry

from archlift.localenv import make_git_repo, seed_busybox, seed_sbom_scanner, seed_toolchain
from archlift.lock import ReleaseLock
from archlift.oci import Manifest, RegistryClient

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


@pytest.fixture
def split_env(tmp_path: Path, docker_ready: None) -> Iterator[tuple[Path, dict[str, str], LocalRegistry]]:
    with LocalRegistry() as reg:
        seed_busybox(reg.host)
        seed_toolchain(reg.host)
        seed_busybox(reg.host, "thirdparty/busybox", "1.35")
        seed_sbom_scanner(reg.host)
        root = tmp_path / "demo"
        shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".upstreams"))
        for name, tag in (("hello", "v1.0.0"), ("toolbox", "v0.3.0")):
            make_git_repo(root / "upstreams" / name, root / ".upstreams" / f"{name}.git", tags=(tag,))
        env = {**os.environ, "DEMO_REGISTRY": reg.host, "ARCHLIFT_CACHE_DIR": str(tmp_path / "cache"), "CI": "1"}
        yield root, env, reg


def layout(client: RegistryClient, lock: ReleaseLock, name: str) -> dict[str, object]:
    """An index's layout: per platform, its manifest digest and whether an attestation refers to it."""
    rel = lock.component(name)
    index: Manifest = client.get_manifest(rel.ref)
    attested = {d.annotations.get("vnd.docker.reference.digest") for d in index.descriptors() if d.is_attestation}
    return {
        "media_type": index.media_type,
        "platforms": {
            str(d.platform): {"manifest": str(d.digest), "attested": str(d.digest) in attested}
            for d in index.descriptors()
            if d.platform and not d.is_attestation
        },
        "attestations": sum(d.is_attestation for d in index.descriptors()),
    }


def test_two_platform_processes_then_merge_equal_a_single_call(
    split_env: tuple[Path, dict[str, str], LocalRegistry], tmp_path: Path
) -> None:
    root, env, _ = split_env
    config = str(root / "images.yaml")
    work = tmp_path / "work"
    work.mkdir()
    # two processes at once, one platform each, as two native runners would
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "archlift", "build", config, "--platform", p, "--lock", f"partial-{p[6:]}.json"],
            env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for p in ("linux/amd64", "linux/arm64")
    ]  # fmt: skip
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err + out
    partial = ReleaseLock.read(work / "partial-arm64.json")
    assert partial.partial_platform == "linux/arm64"
    assert set(partial.component("hello").platforms) == {"linux/arm64"}
    assert partial.component("hello").binaries["linux/arm64"].machines == {"aarch64": 2}  # each runner checks its own
    with RegistryClient() as client:
        # pushed by digest only: no tag exists yet
        assert client.head_manifest(partial.component("hello").tag_refs()[0]) is None

    run_archlift(
        "merge", "partial-amd64.json", "partial-arm64.json", "--lock", "merged.json", cwd=work, env=env, check=True
    )
    merged = ReleaseLock.read(work / "merged.json")

    single = tmp_path / "single"
    single.mkdir()
    run_archlift("build", config, "--lock", "single.json", cwd=single, env=env, check=True)
    one = ReleaseLock.read(single / "single.json")

    with RegistryClient() as client:
        for name in ("hello", "toolbox"):
            split_layout, single_layout = layout(client, merged, name), layout(client, one, name)
            assert split_layout == single_layout, json.dumps([split_layout, single_layout], indent=1)
            assert split_layout["attestations"] == 2
            assert set(merged.component(name).platforms) == {"linux/amd64", "linux/arm64"}
            assert merged.component(name).platforms == one.component(name).platforms
            assert merged.component(name).binaries == one.component(name).binaries
            assert set(merged.component(name).binaries) == {"linux/amd64", "linux/arm64"}
            for ref in merged.component(name).tag_refs():
                head = client.head_manifest(ref)
                assert head is not None, ref
        assert merged.component("busybox").index_digest == one.component("busybox").index_digest
