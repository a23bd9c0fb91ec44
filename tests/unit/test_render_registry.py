"""render --registry: the install pointing at the private registry a mirror filled, by the same digests."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archlift.cli import main
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.refs import Digest

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo" / "images.yaml"


def _lock(path: Path) -> dict[str, Digest]:
    digests = {name: Digest.of(name.encode()) for name in ("hello", "toolbox", "busybox")}
    components = {
        name: ComponentRelease(
            name=name,
            kind="mirrored" if name == "busybox" else "built",
            repository=f"127.0.0.1:5000/demo/{name}",
            index_digest=digest,
            platforms={"linux/amd64": Digest.of(b"a" + name.encode()), "linux/arm64": Digest.of(b"b" + name.encode())},
            tags=("v1",),
            source_image="127.0.0.1:5000/thirdparty/busybox:1.35" if name == "busybox" else None,
        )
        for name, digest in digests.items()
    }
    ReleaseLock(components=components).write(path)
    return digests


def _images(out: Path) -> set[str]:
    images = set()
    for path in out.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {}).get(
            "template", {}
        ).get("spec", {})
        for key in ("containers", "initContainers"):
            images |= {c["image"] for c in pod.get(key, [])}
    return images


def test_render_points_every_image_at_the_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_REGISTRY", "127.0.0.1:5000")
    digests = _lock(tmp_path / "release.json")
    out = tmp_path / "out"
    argv = ["render", str(DEMO), "--lock", str(tmp_path / "release.json"), "--out", str(out)]
    assert main([*argv, "--registry", "mirror.internal:5000/airgap"]) == 0
    images = _images(out)
    assert images == {f"mirror.internal:5000/airgap/demo/{n}@{d}" for n, d in digests.items()}

    assert main([*argv, "--out", str(tmp_path / "plain")]) == 0
    assert _images(tmp_path / "plain") == {f"127.0.0.1:5000/demo/{n}@{d}" for n, d in digests.items()}


def test_a_bad_registry_is_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_REGISTRY", "127.0.0.1:5000")
    _lock(tmp_path / "release.json")
    argv = ["render", str(DEMO), "--lock", str(tmp_path / "release.json"), "--out", str(tmp_path / "o")]
    assert main([*argv, "--registry", "Not A Registry"]) == 2
