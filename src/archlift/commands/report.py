"""archlift report: the release report (markdown) from the lock, signatures and manifests artifact.

The whole release is a chain of commands (``nox -s release``): build, render,
publish, sign, report; each restarts from the files the previous one wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEFAULT_LOCK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..checks.report import DEFAULT_ARTIFACT, DEFAULT_REPORT, DEFAULT_SIGNATURES

    p = sub.add_parser(
        "report",
        help="write the release report (markdown) from the lock, signatures and manifests artifact",
        description="Write dist/release-report.md: every image with its digest per platform, tags, upstream "
        "version and commit, patches and signature, and the published manifests artifact. Reads the release "
        "lock, and dist/signatures.json (archlift sign) and dist/manifests-artifact.json (archlift publish) "
        "when they exist. Appends the report to $GITHUB_STEP_SUMMARY when that is set.",
    )
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    p.add_argument("--signatures", type=Path, default=DEFAULT_SIGNATURES, help=f"default {DEFAULT_SIGNATURES}")
    p.add_argument("--artifact", type=Path, default=DEFAULT_ARTIFACT, help=f"default {DEFAULT_ARTIFACT}")
    p.add_argument("--out", type=Path, default=DEFAULT_REPORT, help=f"where to write it (default {DEFAULT_REPORT})")
    p.add_argument("-q", "--quiet", action="store_true", help="do not print the report")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ..checks.report import load_inputs, write

    text = write(load_inputs(args.lock, args.signatures, args.artifact), args.out)
    if not args.quiet:
        print(text, end="")
    print(f"report: {args.out}", file=sys.stderr)
    return 0
