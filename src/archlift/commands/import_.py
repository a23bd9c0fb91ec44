"""archlift import: an exported tarball back into a registry (module import_: import is a keyword)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import (
    DEFAULT_REPORT,
    RichProgress,
    add_client_args,
    add_json_arg,
    make_client,
    print_json,
)

DEFAULT_MANIFESTS = Path("dist/manifests")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def run_import(args: argparse.Namespace) -> int:
    from ..lock import write_atomic
    from ..steps.airgap import LOCK_PATH, MANIFESTS_DIR, import_bundle, open_bundle
    from ..steps.mirror import Target, check

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
