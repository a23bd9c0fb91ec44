"""archlift export / import: a release as one OCI layout tarball, and back into a registry."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import DEFAULT_LOCK, add_json_arg, print_json
from .mirror import DEFAULT_REPORT, RichProgress, add_artifacts_args, add_client_args, load_artifacts, make_client

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

    i = sub.add_parser(
        "import",
        help="push an exported tarball into a registry",
        description="Check the whole tarball first (paths, links, every blob's digest, the checksum list), "
        "then push every image to REGISTRY[/PREFIX]/<repository path>, tagging an image only once all of it "
        "is there.",
    )
    i.add_argument("bundle", type=Path, metavar="BUNDLE.tar")
    i.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="the target registry and path prefix")
    i.add_argument("--extract", type=Path, metavar="DIR", help="also write the bundle's lock and manifests here")
    i.add_argument("--report", type=Path, default=DEFAULT_REPORT, help=f"where to write the report ({DEFAULT_REPORT})")
    add_client_args(i)
    add_json_arg(i)
    i.set_defaults(func=run_import)


def run_export(args: argparse.Namespace) -> int:
    from ..airgap import export_bundle
    from ..lock import ReleaseLock

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


def run_import(args: argparse.Namespace) -> int:
    from ..airgap import LOCK_PATH, MANIFESTS_DIR, import_bundle, open_bundle
    from ..lock import write_atomic
    from ..mirror import Target, check

    target = Target.parse(args.to)
    client = make_client(args)
    tty = sys.stderr.isatty() and not args.json
    if tty:
        with RichProgress("checking") as bar:
            bundle = open_bundle(args.bundle, bar)
        with RichProgress("pushing") as bar:
            result = import_bundle(bundle, target, client, jobs=args.jobs, progress=bar)
    else:
        bundle = open_bundle(args.bundle)
        result = import_bundle(bundle, target, client, jobs=args.jobs)
    write_atomic(args.report, json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    if args.extract:
        args.extract.mkdir(parents=True, exist_ok=True)
        (args.extract / "release.json").write_bytes(bundle.read(LOCK_PATH))
        bundle.extract(MANIFESTS_DIR, args.extract / "manifests")
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
    check(result)
    return 0
