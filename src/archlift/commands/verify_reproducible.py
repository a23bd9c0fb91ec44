"""archlift verify-reproducible: build a component twice from empty caches and compare."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_config_arg, add_json_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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


def run_reproducible(args: argparse.Namespace) -> int:
    from ..checks.reproducible import verify_component
    from ..config.model import load_config
    from ..errors import BuildError

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
