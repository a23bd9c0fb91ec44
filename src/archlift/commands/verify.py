"""archlift verify: does a registry hold the release, digest for digest?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from .common import (
    DEFAULT_LOCK,
    add_artifacts_args,
    add_client_args,
    add_json_arg,
    add_layout_arg,
    load_artifacts,
    make_client,
    print_json,
)

if TYPE_CHECKING:
    from ..lock import ReleaseLock
    from ..steps.mirror import Target


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "verify",
        help="check that a registry holds every image of the release with the same digests",
        description="Compare REGISTRY[/PREFIX] with the release lock: every image index, platform manifest, "
        "attestation and tag present with the lock's digests; referrers and cosign signature tags compared "
        "with the source registry when it can be reached. Exit status 9 on any mismatch.",
    )
    p.add_argument("--registry", required=True, metavar="REGISTRY[/PREFIX]", help="the registry to check")
    add_layout_arg(p)
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    p.add_argument("--deep", action="store_true", help="also check that every blob is present")
    p.add_argument(
        "--key",
        metavar="COSIGN_PUB",
        help="also verify every image's cosign signature there with this public key (a path or env://VAR)",
    )
    add_artifacts_args(p)
    add_client_args(p)
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checks.verify import verify_target
    from ..errors import VerifyError
    from ..lock import ReleaseLock
    from ..steps.mirror import Target

    target = Target.parse(args.registry, option="--registry", layout=args.layout)
    lock = ReleaseLock.read(args.lock)
    report = verify_target(
        lock, target, make_client(args), deep=args.deep, jobs=args.jobs, artifacts=load_artifacts(args)
    )
    signatures = _signatures(lock, args.key, target) if args.key and report.ok else None
    if args.json:
        print_json({**report.to_json(), "signatures": signatures} if signatures is not None else report.to_json())
    else:
        print(report.summary())
        if signatures is not None:
            print(f"signatures: {len(signatures)} of {len(lock.components)} image(s) verified with {args.key}")
    if not report.ok:
        bad = list(dict.fromkeys(i.name for i in report.images if i.problems))
        raise VerifyError(
            f"{target} does not match the release: {', '.join(bad)}",
            hint=f"run 'archlift mirror --to {target} --layout {target.layout}' to copy what is missing",
        )
    return 0


def _signatures(lock: ReleaseLock, key: str, registry: Target) -> list[dict[str, str]]:
    """cosign verify of every image in ``registry`` (raises VerifyError naming each one that fails)."""
    from ..checks.sign import verify_release

    return [{"component": s.component, "image": str(s.ref)} for s in verify_release(lock, key, registry=registry)]
