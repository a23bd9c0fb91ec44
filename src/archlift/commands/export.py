"""archlift export: the release as one OCI layout tarball for an air-gapped site."""

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
        f"({DEFAULT_MANIFESTS}) and the lock into one OCI image layout tarball with a checksum list.",
    )
    e.add_argument("--output", "-o", type=Path, required=True, metavar="BUNDLE.tar", help="the tarball to write")
    e.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    e.add_argument(
        "--manifests", type=Path, default=DEFAULT_MANIFESTS, help=f"rendered manifests to include ({DEFAULT_MANIFESTS})"
    )
    e.add_argument("--platform", action="append", default=[], metavar="P", help="keep only this platform (repeatable)")
    add_artifacts_args(e)
    add_client_args(e)
    add_json_arg(e)
    e.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from ..lock import ReleaseLock
    from ..steps.airgap import export_bundle

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
    )
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    return 0
