"""The whole release chain for real: build, render, publish, sign, report (split from the report's unit tests)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

# --- the whole release chain, for real ------------------------------------------------------
from support.cli import run_archlift
from support.registry import LocalRegistry
from test_reproducible import make_demo

from archlift.localenv import seed_sbom_scanner
from archlift.lock import ReleaseLock
from archlift.refs import ImageRef


@pytest.mark.slow
def test_release_chain_build_render_publish_sign_report(
    registry: LocalRegistry,
    seeded_base: ImageRef,
    toolchain: ImageRef,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The commands `nox -s release` chains, on the demo: the report shows what was really released."""
    seed_sbom_scanner(registry.host)
    keys = tmp_path / "keys"
    keys.mkdir()
    env = {"COSIGN_PASSWORD": "chain"}
    subprocess.run(["cosign", "generate-key-pair"], cwd=keys, env={**os.environ, **env}, check=True, timeout=60)
    demo = make_demo(tmp_path, registry, seeded_base, monkeypatch)
    work = demo.parent
    target = f"{registry.host}/chain"  # its own repositories in the shared registry
    steps = [
        ("build", str(demo), "--registry", target),
        ("render", str(demo)),  # images come from the lock
        ("publish", "--to", f"{target}/manifests:v1"),
        ("sign", "--key", str(keys / "cosign.key")),
        ("report", "-q"),
    ]
    for argv in steps:
        result = run_archlift(*argv, cwd=work, env=env)
        assert result.returncode == 0, f"archlift {' '.join(argv)}:\n{result.stdout}{result.stderr}"
    lock = ReleaseLock.read(work / "dist" / "release.json")
    report = (work / "dist" / "release-report.md").read_text()
    assert set(lock.components) == {"hello", "toolbox", "busybox"}
    assert "- signatures: 3 of 3 verified" in report
    for comp in lock.components.values():
        assert f"- image: `{comp.ref}`" in report
        for platform, digest in comp.platforms.items():
            assert f"| {platform} | `{digest}` |" in report
    hello = lock.components["hello"]
    assert hello.upstream and f"- commit: `{hello.upstream.commit}`" in report
    assert "`patches/hello/0001-Build-for-the-target-architecture.patch`" in report
    artifact = json.loads((work / "dist" / "manifests-artifact.json").read_text())
    for a in artifact["artifacts"].values():
        assert f"`{a['ref']}`" in report
