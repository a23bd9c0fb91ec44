"""archlift mirror: copy every image of the release lock to another registry, digests preserved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import TracebackType
from typing import Any

from .common import DEFAULT_LOCK, add_json_arg, print_json

DEFAULT_REPORT = Path("dist/mirror-report.json")


def add_client_args(p: argparse.ArgumentParser) -> None:
    """--insecure, --ca-file, --jobs: shared by mirror, import and verify."""
    p.add_argument(
        "--insecure", action="store_true", help="allow plain HTTP and unverified TLS for a non-loopback registry"
    )
    p.add_argument("--ca-file", metavar="FILE", help="trust this CA for the registries' TLS certificates")
    p.add_argument("--jobs", "-j", type=int, default=4, metavar="N", help="blob copies at once (default 4)")


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
    from ..mirror import read_artifacts

    return [] if args.no_artifacts else read_artifacts(args.artifacts)


def make_client(args: argparse.Namespace) -> Any:
    from ..errors import UsageError
    from ..registry import RegistryClient

    if args.jobs < 1 or args.jobs > 64:
        raise UsageError(f"--jobs {args.jobs}: give a number from 1 to 64")
    if args.ca_file and not Path(args.ca_file).is_file():
        raise UsageError(f"--ca-file {args.ca_file}: no such file")
    return RegistryClient(insecure=args.insecure, ca_file=args.ca_file, max_connections=2 * args.jobs)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mirror",
        help="copy the release's images to another registry",
        description="Copy every image of the release lock (whole indexes: platform manifests, layers, "
        "attestations, referrers, cosign signatures) to REGISTRY[/PREFIX]/<repository path>, with every "
        "digest preserved; then move the lock's tags there. Blobs already present are skipped, shared "
        "blobs are sent once and mounted elsewhere. Run it again after an interruption: only what is "
        "missing is sent.",
    )
    p.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="the target registry and path prefix")
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="P",
        help="keep only this platform (repeatable); the index digest on the target then changes",
    )
    p.add_argument("--component", action="append", default=[], metavar="NAME", help="only this component")
    p.add_argument("--report", type=Path, default=DEFAULT_REPORT, help=f"where to write the report ({DEFAULT_REPORT})")
    p.add_argument("--dry-run", action="store_true", help="print the plan; copy nothing")
    add_artifacts_args(p)
    add_client_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


class RichProgress:
    """A byte progress bar on stderr (only used on a terminal)."""

    def __init__(self, what: str) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        self._progress = Progress(
            "[progress.description]{task.description}",
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            transient=True,
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


def run(args: argparse.Namespace) -> int:
    from ..lock import ReleaseLock, write_atomic
    from ..mirror import Target, check, mirror, plan_mirror

    target = Target.parse(args.to)
    lock = ReleaseLock.read(args.lock)
    plan = plan_mirror(lock, target, args.platform, args.component, artifacts=load_artifacts(args))
    if args.dry_run:
        if args.json:
            print_json(plan.to_json())
        else:
            for img in plan.images:
                print(f"{img.name}: {img.source} -> {img.target.name} (tags: {', '.join(img.tags) or 'none'})")
        return 0
    client = make_client(args)
    if not args.json:
        print(f"mirroring {len(plan.images)} image(s) from {args.lock} to {target}", file=sys.stderr)
    if sys.stderr.isatty() and not args.json:
        with RichProgress("mirror") as bar:
            result = mirror(plan, client, jobs=args.jobs, progress=bar)
    else:
        result = mirror(plan, client, jobs=args.jobs)
    import json

    write_atomic(args.report, json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
        print(f"report: {args.report}")
    check(result)
    return 0
