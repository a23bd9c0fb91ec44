"""archlift patches checkout/refresh: the queue regenerated from a work tree's commits."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from archlift.cli import main
from archlift.localenv import make_git_repo
from archlift.steps.patches import failing_hunk
from archlift.steps.sources import git

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo"


@pytest.fixture
def demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".upstreams"))
    make_git_repo(root / "upstreams" / "hello", root / ".upstreams" / "hello.git", tags=("v1.0.0",))
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DEMO_REGISTRY", "127.0.0.1:1")
    return root


def test_checkout_then_refresh_regenerates_the_queue(demo: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    config = str(demo / "images.yaml")
    assert main(["patches", "checkout", "hello", str(tree), "--config", config]) == 0
    log = git("log", "--format=%s", "v1.0.0..HEAD", cwd=tree).splitlines()
    assert log == ["Build for the target architecture"]
    assert "ARG TARGETARCH" in (tree / "Dockerfile").read_text()

    (tree / "hello.sh").write_text((tree / "hello.sh").read_text() + 'echo "patched"\n')
    git("commit", "-qam", "Say patched", cwd=tree)
    assert main(["patches", "refresh", "hello", str(tree), "--config", config]) == 0
    queue = sorted(p.name for p in (demo / "patches" / "hello").glob("*.patch"))
    assert queue == ["0001-Build-for-the-target-architecture.patch", "0002-Say-patched.patch"]
    second = (demo / "patches" / "hello" / "0002-Say-patched.patch").read_text()
    assert '+echo "patched"' in second and "Subject: [PATCH 2/2] Say patched" in second

    # the regenerated queue applies to a fresh checkout
    again = tmp_path / "again"
    assert main(["patches", "checkout", "hello", str(again), "--config", config]) == 0
    assert git("rev-list", "--count", "v1.0.0..HEAD", cwd=again) == "2"


def test_refresh_refuses_uncommitted_changes(demo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tree = tmp_path / "tree"
    config = str(demo / "images.yaml")
    assert main(["patches", "checkout", "hello", str(tree), "--config", config]) == 0
    (tree / "Dockerfile").write_text("changed\n")
    assert main(["patches", "refresh", "hello", str(tree), "--config", config]) == 2
    assert "uncommitted changes" in capsys.readouterr().err


def test_failing_hunk_is_extracted(tmp_path: Path) -> None:
    patch = DEMO / "patches" / "hello" / "0001-Build-for-the-target-architecture.patch"
    hunk = failing_hunk(patch, "Dockerfile", 5)
    assert hunk.startswith("@@ -5,7 +5,8 @@")
    assert "-RUN GOARCH=amd64" in hunk and "+RUN GOARCH=${TARGETARCH}" in hunk
    assert failing_hunk(patch, "Dockerfile", 99) == ""
