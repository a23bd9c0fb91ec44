"""scripts/setup-host.sh on this (already set up) host: idempotent, and it never stops the running
dockerd, not even when ``docker info`` fails (the CLI cannot reach the daemon)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "setup-host.sh"


def dockerd_pids() -> set[str]:
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout
    return set(out.split())


def test_a_second_run_changes_nothing_and_leaves_dockerd_running(docker_ready: None) -> None:
    before = dockerd_pids()
    assert before, "no dockerd runs"
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "packages already installed" in result.stdout and "dockerd running" in result.stdout
    assert "[setup-host] ready:" in result.stdout
    assert dockerd_pids() == before


def test_a_failing_docker_info_does_not_stop_the_running_dockerd(docker_ready: None) -> None:
    before = dockerd_pids()
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/archlift-test.sock"}  # the CLI cannot reach it
    result = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode != 0
    assert "dockerd is running but 'docker info' does not answer (it was left running)" in result.stderr
    assert dockerd_pids() == before
