"""archlift mirror: copy every image of the release lock to another registry, digests preserved."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import (
    DEFAULT_LOCK,
    DEFAULT_REPORT,
    RichProgress,
    add_artifacts_args,
    add_client_args,
    add_json_arg,
    add_layout_arg,
    load_artifacts,
    make_client,
    print_json,
)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mirror",
        help="copy the release's images to another registry",
        description="Copy every image of the release lock (whole indexes: platform manifests, layers, "
        "attestations, referrers, cosign signatures) to REGISTRY[/PREFIX]/<repository path> (or, with --layout "
        "upstream, to REGISTRY[/PREFIX]/<registry host>/<repository path> under each of its names), with every "
        "digest preserved; then move the lock's tags there. Blobs already present are skipped, shared "
        "blobs are sent once and mounted elsewhere. Run it again after an interruption: only what is "
        "missing is sent.",
    )
    p.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="the target registry and path prefix")
    add_layout_arg(p)
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


def run(args: argparse.Namespace) -> int:
    from ..lock import ReleaseLock, write_atomic
    from ..steps.mirror import Target, check, mirror, plan_mirror

    target = Target.parse(args.to, layout=args.layout)
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
