"""archlift verify-bundle: check a bundle offline, before it goes on the media."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import RichProgress, add_json_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify-bundle",
        help="check an exported bundle offline, before it is carried across the gap",
        description="Check a bundle (one file, or all its parts in any order) with no registry at all: every "
        "member's path, digest and the checksum list; every image tree complete (a differential bundle: "
        "together with what it leaves out, which it names as the base the target needs); the platforms the "
        "lock records; with --key, every image's cosign signature against the public key (offline, with "
        "'cosign verify-blob'). The same checks 'archlift import' makes before it pushes anything. "
        "Exit status 0 when the bundle is good, 2 when it is not.",
    )
    p.add_argument(
        "bundle", type=Path, nargs="+", metavar="BUNDLE.tar", help="the bundle, or all its parts (in any order)"
    )
    p.add_argument("--key", metavar="COSIGN_PUB", help="verify every image's cosign signature with this public key")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import ArchliftError
    from ..steps.airgap import open_bundle

    try:
        if sys.stderr.isatty() and not args.json:
            with RichProgress("checking") as bar:
                bundle = open_bundle(args.bundle, bar, key=args.key)
        else:
            bundle = open_bundle(args.bundle, key=args.key)
    except ArchliftError as e:
        if args.json:
            print_json({"bundle": " ".join(str(b) for b in args.bundle), "ok": False, "error": e.message})
        raise
    if args.json:
        print_json(bundle.report.to_json())
    else:
        print(bundle.report.summary())
    return 0
