"""archlift export: the release as one OCI layout tarball (or its parts) for an air-gapped site."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import (
    DEFAULT_LOCK,
    add_artifacts_args,
    add_client_args,
    add_json_arg,
    load_artifacts,
    make_client,
    print_json,
)

DEFAULT_MANIFESTS = Path("dist/manifests")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser(
        "export",
        help="write the release's images into one tarball for an air-gapped site",
        description="Write every image of the release lock (same digests), the rendered manifests "
        f"({DEFAULT_MANIFESTS}) and the lock into one OCI image layout tarball with a checksum list. "
        "With --since, a differential bundle: only the manifests and blobs the release the site already runs "
        "lacks (its lock: its images must still be in their registry; or its bundle), and the list of what it "
        "leaves out, which 'archlift import' checks the target for first. With --max-size, numbered parts "
        "(BUNDLE.tar.part-001-of-003, ...) that import and verify-bundle take together, in any order.",
    )
    e.add_argument("--output", "-o", type=Path, required=True, metavar="BUNDLE.tar", help="the tarball to write")
    e.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    e.add_argument(
        "--manifests", type=Path, default=DEFAULT_MANIFESTS, help=f"rendered manifests to include ({DEFAULT_MANIFESTS})"
    )
    e.add_argument("--platform", action="append", default=[], metavar="P", help="keep only this platform (repeatable)")
    e.add_argument(
        "--since",
        type=Path,
        nargs="+",
        default=[],
        metavar="OLD",
        help="write only what the release the site already runs lacks: its lock (OLD_LOCK.json) or its bundle "
        "(OLD_BUNDLE.tar, or all its parts)",
    )
    e.add_argument(
        "--max-size",
        metavar="SIZE",
        help="split the bundle into numbered parts of at most SIZE bytes (K, M, G, T suffixes: 4G, 700M)",
    )
    add_artifacts_args(e)
    add_client_args(e)
    add_json_arg(e)
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..lock import ReleaseLock
    from ..oci.parts import parse_size
    from ..steps.airgap import export_bundle

    max_size = parse_size(args.max_size) if args.max_size is not None else None
    lock = ReleaseLock.read(args.lock)
    client = make_client(args)
    result = export_bundle(
        lock,
        client,
        args.output,
        manifests_dir=args.manifests,
        platforms=args.platform,
        jobs=args.jobs,
        artifacts=load_artifacts(args),
        since=args.since,
        max_size=max_size,
    )
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    return 0
