"""The one runner for external programs (git, docker, oras, cosign).

It logs ``+ argv`` at debug level, checks the program exists first, stays
quiet unless the command fails, and then raises with the tail of stderr.
"""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ArchliftError, ToolMissing

log = logging.getLogger("archlift.proc")


@dataclass(frozen=True)
class Result:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


def which(program: str) -> str:
    path = shutil.which(program)
    if not path:
        raise ToolMissing(
            f"'{program}' is not installed or not on PATH",
            hint="run scripts/setup-host.sh to install the build host",
        )
    return path


def tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def run(
    argv: Sequence[str],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    input: str | None = None,
    error: type[ArchliftError] = ArchliftError,
    context: str = "",
    check: bool = True,
    timeout: float | None = None,
) -> Result:
    """Run ``argv``; on failure raise ``error`` naming ``context`` and stderr's tail."""
    which(argv[0])
    log.debug("+ %s", shlex.join(argv))
    full_env = {**os.environ, **env} if env else None
    try:
        proc = subprocess.run(
            list(argv), cwd=cwd, env=full_env, input=input, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise error(f"{context or argv[0]}: '{shlex.join(argv)}' timed out after {timeout} s") from e
    result = Result(tuple(argv), proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        prefix = f"{context}: " if context else ""
        raise error(
            f"{prefix}'{shlex.join(argv[:4])}{' ...' if len(argv) > 4 else ''}' exited with {proc.returncode}\n"
            + tail(proc.stderr or proc.stdout)
        )
    return result
