"""scripts/merge-daemon-json.py: setup-host.sh merges into /etc/docker/daemon.json, never overwrites it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "merge-daemon-json.py"


def merge(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), str(path)], capture_output=True, text=True)


def test_other_settings_stay_and_the_old_file_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    mine = {"registry-mirrors": ["https://mirror.example"], "features": {"buildkit": True}, "log-level": "warn"}
    path.write_text(json.dumps(mine))
    result = merge(path)
    assert result.returncode == 0 and result.stdout.strip() == "merged"
    assert json.loads(path.read_text()) == {**mine, "features": {"buildkit": True, "containerd-snapshotter": True}}
    assert json.loads((tmp_path / "daemon.json.archlift-backup").read_text()) == mine


def test_an_already_configured_file_is_not_touched(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    path.write_text('{"features":{"containerd-snapshotter":true}}')
    before = path.stat().st_mtime_ns
    assert merge(path).stdout.strip() == "unchanged"
    assert path.stat().st_mtime_ns == before and not (tmp_path / "daemon.json.archlift-backup").exists()


def test_a_missing_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    assert merge(path).stdout.strip() == "written"
    assert json.loads(path.read_text()) == {"features": {"containerd-snapshotter": True}}


def test_a_file_that_is_not_a_json_object_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "daemon.json"
    for text in ('{"features": ', "[1, 2]", '{"features": "on"}'):
        path.write_text(text)
        result = merge(path)
        assert result.returncode == 1 and str(path) in result.stderr and "fix it" in result.stderr
        assert path.read_text() == text
