"""archlift report: the markdown release report from the lock, the signatures and the manifests artifact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.cli import run_archlift

from archlift.checks.report import load_inputs, render, write
from archlift.errors import ConfigError
from archlift.lock import ComponentRelease, PatchRecord, ReleaseLock, Upstream
from archlift.refs import Digest


def d(n: int) -> Digest:
    return Digest("sha256:" + f"{n:x}" * 64 if n < 16 else "sha256:" + f"{n:02x}" * 32)


HELLO = ComponentRelease(
    name="hello",
    kind="built",
    repository="registry.example:5000/demo/hello",
    index_digest=d(1),
    platforms={"linux/amd64": d(2), "linux/arm64": d(3)},
    tags=("v1.0.0", "git-4362e632a-dirty"),
    upstream=Upstream("https://git.example/hello.git", "v1.0.0", "4362e632a8f6a88263e6bf64759e670d005dc521", "v1.0.0"),
    patches=(PatchRecord("patches/hello/0001-Build-for-the-target-architecture.patch", "ab" * 32),),
    inputs_hash="cd" * 32,
    built_at="2026-11-21T05:00:00Z",
    attestations={str(d(2)): d(4), str(d(3)): d(5)},
)
BUSYBOX = ComponentRelease(
    name="busybox",
    kind="mirrored",
    repository="registry.example:5000/demo/busybox",
    index_digest=d(6),
    platforms={"linux/amd64": d(7), "linux/arm64": d(8)},
    tags=("1.35",),
    source_image="registry.example:5000/thirdparty/busybox:1.35",
)
LOCK = ReleaseLock(
    components={"hello": HELLO, "busybox": BUSYBOX}, config="images.yaml", created_at="2026-11-21T05:01:00Z"
)
ARTIFACT = {
    "repository": "registry.example:5000/demo/manifests",
    "files": ["hello.yaml", "kustomization.yaml"],
    "plain_http": True,
    "artifacts": {
        "config-sync": {
            "ref": f"registry.example:5000/demo/manifests:v1@{d(9)}",
            "tag": "v1",
            "digest": str(d(9)),
            "layer": {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(d(10))},
        },
        "flux": {
            "ref": f"registry.example:5000/demo/manifests:v1-flux@{d(11)}",
            "tag": "v1-flux",
            "digest": str(d(11)),
            "layer": {"mediaType": "application/vnd.cncf.flux.content.v1.tar+gzip", "digest": str(d(12))},
        },
    },
}


def _dist(tmp_path: Path, *, signatures: bool = True, artifact: bool = True) -> Path:
    dist = tmp_path / "dist"
    LOCK.write(dist / "release.json")
    if signatures:
        sig = {
            "component": "hello",
            "image": str(HELLO.ref),
            "signature_tag": f"sha256-{d(1).hex}.sig",
            "verified": True,
            "signatures": 1,
        }
        (dist / "signatures.json").write_text(json.dumps({"signatures": [sig]}))
    if artifact:
        (dist / "manifests-artifact.json").write_text(json.dumps(ARTIFACT))
    return dist


def test_report_lists_every_image_with_its_digests_upstream_patches_signature_and_artifact(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    text = render(load_inputs(dist / "release.json", dist / "signatures.json", dist / "manifests-artifact.json"))
    assert text.startswith("# Release report\n")
    assert "- images: 2 (1 built, 1 mirrored)" in text
    assert "- signatures: 1 of 2 verified" in text
    # the summary table, one row per image, sorted by name
    assert text.index("| busybox | mirrored |") < text.index("| hello | built |")
    assert "| hello | built | linux/amd64, linux/arm64 | `v1.0.0` at `4362e632a8f6` | 1 | verified |" in text
    assert "| busybox | mirrored | linux/amd64, linux/arm64 | mirror of `registry.example:5000/thirdparty" in text
    # per image: the pinned reference, every platform digest and its attestation, tags, upstream, patches
    assert f"- image: `registry.example:5000/demo/hello@{d(1)}`" in text
    assert f"| linux/amd64 | `{d(2)}` | `{d(4)}` |" in text
    assert f"| linux/arm64 | `{d(3)}` | `{d(5)}` |" in text
    assert f"| linux/arm64 | `{d(8)}` | - |" in text
    assert "- tags: `v1.0.0`, `git-4362e632a-dirty`" in text
    assert "- upstream: https://git.example/hello.git ref `v1.0.0`, version `v1.0.0`" in text
    assert "- commit: `4362e632a8f6a88263e6bf64759e670d005dc521`" in text
    assert "  - `patches/hello/0001-Build-for-the-target-architecture.patch` (sha256 abababababab)" in text
    assert "## busybox" in text and "- signature: not signed" in text
    # the manifests artifact, both forms
    assert f"| config-sync | `registry.example:5000/demo/manifests:v1@{d(9)}` |" in text
    assert "`application/vnd.cncf.flux.content.v1.tar+gzip`" in text


def test_report_without_signatures_or_artifact_says_so(tmp_path: Path) -> None:
    dist = _dist(tmp_path, signatures=False, artifact=False)
    text = render(load_inputs(dist / "release.json", dist / "signatures.json", dist / "manifests-artifact.json"))
    assert "- signatures: none recorded (run 'archlift sign')" in text
    assert "none published (run 'archlift publish')" in text


def test_a_signature_for_another_digest_is_stale(tmp_path: Path) -> None:
    dist = _dist(tmp_path)
    sig = json.loads((dist / "signatures.json").read_text())
    sig["signatures"][0]["image"] = f"registry.example:5000/demo/hello@{d(13)}"
    (dist / "signatures.json").write_text(json.dumps(sig))
    text = render(load_inputs(dist / "release.json", dist / "signatures.json"))
    assert "signed for another digest (stale)" in text


def test_write_appends_to_the_step_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = _dist(tmp_path)
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    inputs = load_inputs(dist / "release.json", dist / "signatures.json", dist / "manifests-artifact.json")
    text = write(inputs, dist / "release-report.md")
    assert (dist / "release-report.md").read_text() == text
    assert summary.read_text() == "earlier step\n" + text + "\n"
    assert write(inputs, dist / "again.md") == text  # deterministic


def test_bad_inputs_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no release lock here"):
        load_inputs(tmp_path / "missing.json")
    dist = _dist(tmp_path)
    (dist / "signatures.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"signatures.json:1:2: the signatures record is not valid JSON"):
        load_inputs(dist / "release.json", dist / "signatures.json")


def test_cli_report(tmp_path: Path) -> None:
    _dist(tmp_path)
    env = {"GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    result = run_archlift("report", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    report = (tmp_path / "dist" / "release-report.md").read_text()
    assert result.stdout == report
    assert "report: dist/release-report.md" in result.stderr
    assert (tmp_path / "summary.md").read_text() == report + "\n"
    quiet = run_archlift("report", "-q", "--out", "other.md", cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stdout == ""
    missing = run_archlift("report", "--lock", "nope.json", cwd=tmp_path)
    assert missing.returncode == ConfigError.exit_code
    assert "no release lock here" in missing.stderr
