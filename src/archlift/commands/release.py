"""Release steps after the build: ``archlift report`` and ``archlift verify-reproducible``.

The whole release is a chain of commands (``nox -s release``): build, render,
publish, sign, report; each restarts from the files the previous one wrote.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import DEFAULT_LOCK, add_config_arg, add_json_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..report import DEFAULT_ARTIFACT, DEFAULT_REPORT, DEFAULT_SIGNATURES

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

    r = sub.add_parser(
        "verify-reproducible",
        help="build a component twice from empty caches and compare the digests",
        description="Build COMPONENT twice with no cache, SOURCE_DATE_EPOCH set to the upstream commit time "
        "and layer timestamps rewritten, to two OCI layouts; compare the index digests and, when they differ, "
        "name the first differing platform manifest, layer and file. Attestations carry build times and IDs: "
        "by default both builds run without them; with --attestations the images.yaml settings are used and "
        "the platform manifests are compared instead of the index. Exit 0 when reproducible, 5 when not.",
    )
    r.add_argument("component", metavar="COMPONENT")
    add_config_arg(r)
    r.add_argument("--attestations", action="store_true", help="build with provenance/SBOM as images.yaml sets")
    r.add_argument("--keep", type=Path, metavar="DIR", help="keep both OCI layouts under DIR for inspection")
    r.add_argument(
        "--lock",
        type=Path,
        metavar="LOCK",
        help="also require the rebuilt platform manifests to equal the ones this release lock records "
        "(the release build must set SOURCE_DATE_EPOCH and rewrite-timestamp too)",
    )
    add_json_arg(r)
    r.set_defaults(func=run_reproducible)


def run_report(args: argparse.Namespace) -> int:
    from ..report import load_inputs, write

    text = write(load_inputs(args.lock, args.signatures, args.artifact), args.out)
    if not args.quiet:
        print(text, end="")
    print(f"report: {args.out}", file=sys.stderr)
    return 0


def run_reproducible(args: argparse.Namespace) -> int:
    from ..errors import BuildError
    from ..model import load_config
    from ..reproducible import verify_component

    config = load_config(args.config)
    released = None
    if args.lock:
        from ..lock import ReleaseLock

        released = dict(ReleaseLock.read(args.lock).component(args.component).platforms)
    say = (lambda _: None) if args.json else (lambda m: print(m, file=sys.stderr, flush=True))
    result = verify_component(
        config, args.component, attestations=args.attestations, keep=args.keep, released=released, say=say
    )
    if args.json:
        print_json(result.to_json())
    else:
        print(result.text())
    return 0 if result.ok else BuildError.exit_code
