"""archlift diff: what an upgrade from one release to another changes, before it is synced."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checks.diff import diff_releases, format_text
from ..errors import UsageError
from ..lock import ReleaseLock
from .common import add_json_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "diff",
        help="show what changes between two releases (images by digest, manifest documents)",
        description="Compare two release locks: images changed (old and new digest, upstream version), components "
        "added and removed. With --manifests-a and --manifests-b (two rendered directories), also the manifest "
        "documents added, removed and changed, with a unified diff of each changed document.",
    )
    p.add_argument("release_a", type=Path, metavar="RELEASE_A", help="the lock of the release running now")
    p.add_argument("release_b", type=Path, metavar="RELEASE_B", help="the lock of the release to upgrade to")
    p.add_argument("--manifests-a", type=Path, help="the rendered manifests of RELEASE_A")
    p.add_argument("--manifests-b", type=Path, help="the rendered manifests of RELEASE_B")
    p.add_argument("--stat", action="store_true", help="a summary per document instead of unified diffs")
    p.add_argument("--exit-code", action="store_true", help="exit 1 when the releases differ (like git diff)")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if (args.manifests_a is None) != (args.manifests_b is None):
        raise UsageError("give both --manifests-a and --manifests-b, or neither")
    manifests = (args.manifests_a, args.manifests_b) if args.manifests_a is not None else None
    result = diff_releases(ReleaseLock.read(args.release_a), ReleaseLock.read(args.release_b), manifests)
    if args.json:
        print_json(result.to_json())
    else:
        print(format_text(result, stat=args.stat), end="")
    return 1 if args.exit_code and result.changed else 0
