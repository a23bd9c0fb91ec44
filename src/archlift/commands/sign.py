"""archlift sign: sign every index of the release by digest with cosign, then verify."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .common import DEFAULT_LOCK, add_json_arg, add_layout_arg, print_json

if TYPE_CHECKING:
    from ..lock import ReleaseLock

DEFAULT_RECORD = Path("dist/signatures.json")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "sign",
        help="sign every image of the release by digest with cosign, and verify",
        description="Sign each component's index of the release lock by digest with 'cosign sign --key KEY "
        "--tlog-upload=false' (a key pair: no Fulcio or Rekor, so no internet), then verify every signature "
        "with the public key. The private key's password comes from COSIGN_PASSWORD. Writes "
        "dist/signatures.json, which 'archlift report' reads. With --verify, only verify (KEY is then the "
        "public key), optionally in a mirror of the release (--registry).",
    )
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    p.add_argument(
        "--key",
        default=os.environ.get("ARCHLIFT_COSIGN_KEY") or None,
        required=not os.environ.get("ARCHLIFT_COSIGN_KEY"),
        help="cosign private key (file, env://VAR or a KMS URI; default $ARCHLIFT_COSIGN_KEY); "
        "with --verify, the public key",
    )
    p.add_argument("--pub", help="the public key to verify with (default: derived from --key)")
    p.add_argument("--verify", action="store_true", help="verify only; --key is the public key")
    p.add_argument(
        "--registry",
        metavar="REGISTRY[/PREFIX]",
        help="with --verify: check the copies in this mirror (as 'archlift mirror --to' wrote them)",
    )
    add_layout_arg(p)
    p.add_argument("--component", action="append", default=[], metavar="NAME", help="only this component")
    p.add_argument("--record", type=Path, default=DEFAULT_RECORD, help=f"where to write the record ({DEFAULT_RECORD})")
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP / unverified TLS (loopback needs none)")
    p.add_argument("--ca-file", help="also trust this CA (PEM) for the registries' TLS, besides the system's roots")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..checks.sign import Cosign, sign_release, verify_release
    from ..errors import UsageError
    from ..lock import ReleaseLock, write_atomic

    if args.registry and not args.verify:
        raise UsageError("--registry is for --verify (signing happens in the release's own registry)")
    lock = ReleaseLock.read(args.lock)
    cosign = Cosign(insecure=args.insecure, ca_file=args.ca_file)
    if args.verify:
        from ..steps.mirror import Target

        where = Target.parse(args.registry, "--registry", args.layout) if args.registry else None
        results = verify_release(lock, args.key, registry=where, components=args.component, cosign=cosign)
    else:
        results = sign_release(lock, args.key, public_key=args.pub, components=args.component, cosign=cosign)
        write_atomic(args.record, _record(args.record, lock, [r.to_json() for r in results]))
    if args.json:
        print_json({"signatures": [r.to_json() for r in results]})
        return 0
    verb = "verified" if args.verify else "signed and verified"
    for r in results:
        print(f"{r.component:<16} {r.ref}  {verb} ({r.signature_tag})")
    print(f"{len(results)} image(s) {verb}" + ("" if args.verify else f"; record: {args.record}"))
    return 0


def _record(path: Path, lock: ReleaseLock, new: list[dict[str, object]]) -> str:
    """The signatures record: this run's entries, plus earlier ones (a run for some components only) of
    other components whose image is still the lock's."""
    entries = {str(e["component"]): e for e in new}
    try:
        old = json.loads(path.read_text()).get("signatures", [])
    except (OSError, ValueError, AttributeError):
        old = []
    for e in old:
        name = e.get("component") if isinstance(e, dict) else None
        if name in lock.components and name not in entries and e.get("image") == str(lock.components[name].ref):
            entries[name] = e
    return json.dumps({"signatures": [entries[n] for n in sorted(entries)]}, indent=2, sort_keys=True) + "\n"
