"""``run_archlift``: the one way tests run the CLI as a user does (a subprocess, ``python -m archlift``)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def run_archlift(
    *args: str,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
    timeout: float = 300,
    check: bool = False,
) -> subprocess.CompletedProcess[str]:
    """``python -m archlift ARGS`` in ``cwd``, with this process's environment plus ``env``, without
    the variables whose names start with one of ``unset``; ``check``: a non-zero exit fails the test
    with the command's output."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(tuple(unset))} if unset else dict(os.environ)
    full.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "archlift", *args], cwd=cwd, env=full, capture_output=True, text=True, timeout=timeout
    )
    if check:
        assert proc.returncode == 0, f"archlift {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}"
    return proc
