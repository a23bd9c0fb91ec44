"""Arguments and output helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

DEFAULT_CONFIG = "images.yaml"
DEFAULT_LOCK = Path("dist/release.json")


def display_path(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (shorter in output)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=os.environ.get("ARCHLIFT_CONFIG", DEFAULT_CONFIG),
        help="the release definition (default: images.yaml, or $ARCHLIFT_CONFIG)",
    )


def add_registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=os.environ.get("ARCHLIFT_REGISTRY") or None,
        help="publish under this registry[/prefix] instead of the file's 'registry:' (or $ARCHLIFT_REGISTRY)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


DEFAULT_REPORT = Path("dist/mirror-report.json")
DEFAULT_TIMEOUT = 60.0


def add_layout_arg(p: argparse.ArgumentParser) -> None:
    """--layout: how images are placed under REGISTRY[/PREFIX] (archlift.steps.mirror.Target)."""
    p.add_argument(
        "--layout",
        default="repository",
        metavar="LAYOUT",
        help="how images are placed under the prefix: 'repository' (default: PREFIX/<repository path>) or "
        "'upstream' (PREFIX/<registry host>/<repository path> under every name an install may pull the image by: "
        "its repository, its replaces: names, the image it was mirrored from; what 'archlift mirror-config' "
        "points the nodes at; docs/node-mirrors.md)",
    )


def add_client_args(p: argparse.ArgumentParser) -> None:
    """--insecure, --ca-file, --jobs, --timeout: shared by mirror, export, import and verify."""
    p.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP and unverified TLS for a non-loopback registry"
    )
    p.add_argument(
        "--ca-file", metavar="FILE", help="also trust this CA (PEM) for the registries' TLS, besides the system's"
    )
    p.add_argument("--jobs", "-j", type=int, default=4, metavar="N", help="blob copies at once (default 4)")
    add_timeout_arg(p)


def add_timeout_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--timeout",
        type=float,
        default=os.environ.get("ARCHLIFT_TIMEOUT") or DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="each registry request's deadline: to connect and send, then to get the answer's headers, then "
        "for every such window of its body (which must bring at least 16 KiB/s); no retry starts later than "
        f"twice that after the first attempt (default {DEFAULT_TIMEOUT:g}, or $ARCHLIFT_TIMEOUT)",
    )


def check_timeout(args: argparse.Namespace) -> float:
    from ..errors import UsageError

    timeout = float(args.timeout)
    if not 0.1 <= timeout <= 3600:
        raise UsageError(f"--timeout {args.timeout:g}: give a number of seconds from 0.1 to 3600")
    return timeout


DEFAULT_ARTIFACTS = Path("dist/manifests-artifact.json")


def add_artifacts_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--artifacts",
        type=Path,
        default=DEFAULT_ARTIFACTS,
        metavar="FILE",
        help=f"also the artifacts 'archlift publish' recorded here, when the file exists ({DEFAULT_ARTIFACTS})",
    )
    p.add_argument("--no-artifacts", action="store_true", help="images only, no published artifacts")


def load_artifacts(args: argparse.Namespace) -> Any:
    from ..steps.mirror import read_artifacts

    return [] if args.no_artifacts else read_artifacts(args.artifacts)


def make_client(args: argparse.Namespace) -> Any:
    from ..errors import UsageError
    from ..oci import RegistryClient

    if args.jobs < 1 or args.jobs > 64:
        raise UsageError(f"--jobs {args.jobs}: give a number from 1 to 64")
    if args.ca_file and not Path(args.ca_file).is_file():
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    return RegistryClient(
        insecure=args.insecure, ca_file=args.ca_file, max_connections=2 * args.jobs, timeout=check_timeout(args)
    )


class RichProgress:
    """A byte progress bar on stderr (only used on a terminal)."""

    def __init__(self, what: str) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        from ..ui import console

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
            console=console(),
        )
        self._task = self._progress.add_task(what, total=None)

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._progress.stop()

    def start(self, total_bytes: int) -> None:
        self._progress.update(self._task, total=total_bytes)

    def advance(self, n: int) -> None:
        self._progress.advance(self._task, n)
