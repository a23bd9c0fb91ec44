"""archlift merge PARTIAL_LOCK...: one index per component from per-platform builds, then tags."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..lock import ReleaseLock
from .common import DEFAULT_LOCK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "merge",
        help="merge per-platform partial locks into one multi-platform release",
        description="Combine the partial locks written by 'archlift build --platform P' on native runners: "
        "each component's single-platform indexes become one index (docker buildx imagetools create), pushed "
        "by digest; when every component merged, the tags move and the full release lock is written.",
    )
    p.add_argument("partials", nargs="+", type=Path, metavar="PARTIAL_LOCK")
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the release lock to write (default: %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..oci import RegistryClient
    from ..steps.merge import merge_locks
    from ..ui import PlainReporter

    partials = [ReleaseLock.read(p) for p in args.partials]
    with RegistryClient() as client:
        lock = merge_locks(partials, client, PlainReporter())
    lock.write(args.lock)
    print(f"merged {len(partials)} partial lock(s) into {args.lock}:")
    for rel in lock.components.values():
        print(f"  {rel.ref}  {', '.join(sorted(rel.platforms))}  tags {', '.join(rel.tags)}")
    return 0
