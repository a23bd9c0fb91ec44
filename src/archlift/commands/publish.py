"""archlift publish: push the rendered manifests as OCI artifacts for Config Sync and Flux."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..steps.publish import CONFIG_SYNC, FLUX, flux_objects, parse_target, publish, rootsync, write_outputs, yaml_stream
from .common import add_json_arg, print_json

DEFAULT_MANIFESTS = Path("dist/manifests")
DEFAULT_OUT = Path("dist")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "publish",
        help="push the rendered manifests as OCI artifacts (Config Sync and Flux)",
        description="Pack the files under dist/manifests/ into a reproducible tar and push it twice to "
        "REGISTRY/REPO: as TAG for a Config Sync RootSync (sourceType: oci, a tar layer) and as TAG-flux for a "
        "Flux OCIRepository (Flux's media types, a tar+gzip layer). The same files give the same digests. "
        "Prints and writes dist/rootsync.yaml and dist/flux.yaml pinned by digest.",
    )
    p.add_argument(
        "--to",
        required=True,
        metavar="REGISTRY/REPO[:TAG]",
        help="where to push (tag default: latest; the Flux form gets TAG-flux)",
    )
    p.add_argument("--manifests", type=Path, default=DEFAULT_MANIFESTS, help=f"default: {DEFAULT_MANIFESTS}")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"where the snippets go (default: {DEFAULT_OUT})")
    p.add_argument(
        "--name", help="name of the RootSync, OCIRepository and Kustomization (default: the repo's last part)"
    )
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP / unverified TLS (loopback needs no flag)")
    p.add_argument("--ca-file", help="CA bundle for the registry's TLS certificate")
    p.add_argument("--dry-run", action="store_true", help="compute the digests and snippets, push nothing")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    target = parse_target(args.to)
    name = args.name or target.repository.rsplit("/", 1)[-1]
    pub = publish(args.manifests, target, insecure=args.insecure, ca_file=args.ca_file, dry_run=args.dry_run)
    paths = write_outputs(pub, args.out, name)
    if args.json:
        print_json({**pub.to_json(), "dry_run": args.dry_run, "outputs": {k: str(v) for k, v in paths.items()}})
        return 0
    print(f"{len(pub.files)} file(s) from {args.manifests}:")
    for form in (CONFIG_SYNC, FLUX):
        a = pub.by_form(form)
        state = "would push" if args.dry_run else "pushed" if a.pushed else "already there"
        print(f"  {form.name:<10} {a.ref}  ({state})")
    print(f"\n# Config Sync ({paths['rootsync']})")
    print(yaml_stream([rootsync(pub, name)]), end="")
    print(f"\n# Flux ({paths['flux']})")
    print(yaml_stream(flux_objects(pub, name)), end="")
    return 0
