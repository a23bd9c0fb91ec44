"""archlift import: an exported tarball back into a registry (module import_: import is a keyword)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import (
    DEFAULT_REPORT,
    RichProgress,
    add_client_args,
    add_json_arg,
    add_layout_arg,
    make_client,
    print_json,
)

DEFAULT_MANIFESTS = Path("dist/manifests")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    i = sub.add_parser(
        "import",
        help="push an exported tarball into a registry",
        description="Check the whole tarball first (paths, links, every blob's digest, the checksum list, "
        "every manifest and blob the lock and index.json name, every tag, the platforms the lock records; the "
        "checks 'archlift verify-bundle' makes): a bundle that fails any check pushes nothing. A differential "
        "bundle (export --since) has the target checked for every manifest and blob it leaves out (HEAD "
        "requests): when one is missing nothing is pushed. Then push every image to "
        "REGISTRY[/PREFIX]/<repository path>; the tags of all images move last, only once every image is there. "
        "The report is written in every case.",
    )
    i.add_argument(
        "bundle", type=Path, nargs="+", metavar="BUNDLE.tar", help="the bundle, or all its parts (in any order)"
    )
    i.add_argument("--to", required=True, metavar="REGISTRY[/PREFIX]", help="the target registry and path prefix")
    add_layout_arg(i)
    i.add_argument("--extract", type=Path, metavar="DIR", help="also write the bundle's lock and manifests here")
    i.add_argument("--report", type=Path, default=DEFAULT_REPORT, help=f"where to write the report ({DEFAULT_REPORT})")
    add_client_args(i)
    add_json_arg(i)
    i.set_defaults(func=run_import)


def run_import(args: argparse.Namespace) -> int:
    from ..errors import ArchliftError
    from ..lock import write_atomic
    from ..steps.airgap import LOCK_PATH, MANIFESTS_DIR, import_bundle, open_bundle
    from ..steps.mirror import MirrorResult, Target, check

    target = Target.parse(args.to, layout=args.layout)
    client = make_client(args)
    tty = sys.stderr.isatty() and not args.json
    start = time.monotonic()
    try:  # the whole bundle is checked before the first request to the target
        if tty:
            with RichProgress("checking") as bar:
                bundle = open_bundle(args.bundle, bar)
            with RichProgress("pushing") as bar:
                result = import_bundle(bundle, target, client, jobs=args.jobs, progress=bar)
        else:
            bundle = open_bundle(args.bundle)
            result = import_bundle(bundle, target, client, jobs=args.jobs)
    except BaseException as e:  # a refused bundle, Ctrl-C: the report says so too
        why = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        if isinstance(e, ArchliftError):
            why = e.message
        failed = MirrorResult(str(target), (), time.monotonic() - start, client.requests, error=why)
        write_atomic(args.report, json.dumps(failed.to_json(), indent=2, sort_keys=True) + "\n")
        raise
    write_atomic(args.report, json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    if args.extract:
        args.extract.mkdir(parents=True, exist_ok=True)
        (args.extract / "release.json").write_bytes(bundle.read(LOCK_PATH))
        bundle.extract(MANIFESTS_DIR, args.extract / "manifests")
    if args.json:
        print_json(result.to_json())
    else:
        print(result.summary())
        print(f"report: {args.report}")
    check(result)
    return 0
