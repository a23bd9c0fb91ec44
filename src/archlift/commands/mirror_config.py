"""archlift mirror-config: the containerd or CRI-O files that make the nodes pull the release's
images from a mirror (upstream layout) under their upstream names."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import DEFAULT_LOCK, add_json_arg, display_path, print_json

INSTALL = {
    "containerd": "copy {out}/* to /etc/containerd/certs.d/ on every node (the CRI plugin's registry "
    'config_path = "/etc/containerd/certs.d"); containerd reads hosts.toml at each pull, no restart needed',
    "cri-o": "copy {out}/registries.conf.d/ (and {out}/certs.d/, if written) into /etc/containers/ on every "
    "node, then reload CRI-O (systemctl reload crio)",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "mirror-config",
        help="write the containerd or CRI-O files that pull the release's images from a mirror",
        description="For installs that cannot be rewritten to the mirror (a Helm chart applied as is, images "
        "named at runtime by an operator): write what the nodes need to pull every image of the release from "
        "REGISTRY[/PREFIX] under its upstream name. The mirror must hold the release in the upstream layout "
        "('archlift mirror --to REGISTRY[/PREFIX] --layout upstream'). containerd: DIR/<upstream host>/hosts.toml "
        "for /etc/containerd/certs.d; CRI-O: DIR/registries.conf.d/50-archlift-mirror.conf for "
        "/etc/containers/registries.conf.d. Files there that archlift did not write are never replaced. "
        "Details and limits: docs/node-mirrors.md.",
    )
    p.add_argument("--registry", required=True, metavar="REGISTRY[/PREFIX]", help="the mirror, as given to --to")
    p.add_argument("--format", required=True, metavar="FORMAT", help="containerd or cri-o")
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="where to write the files")
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default {DEFAULT_LOCK})")
    p.add_argument(
        "--insecure",
        action="store_true",
        help="the mirror speaks plain HTTP (the default for a loopback mirror without --ca-file)",
    )
    p.add_argument(
        "--ca-file",
        metavar="FILE",
        help="the mirror's TLS certificate is signed by this CA: copied next to each hosts.toml (containerd) "
        "or to certs.d/<mirror host>/ca.crt (CRI-O, for /etc/containers/certs.d)",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import UsageError
    from ..lock import ReleaseLock
    from ..oci import is_loopback
    from ..steps.mirror import UPSTREAM, Target
    from ..steps.nodes import FORMATS, node_config

    fmt = {"crio": "cri-o"}.get(args.format.strip().lower(), args.format.strip().lower())
    if fmt not in FORMATS:
        raise UsageError(f"--format {args.format}: not a node format (choose {' or '.join(FORMATS)})")
    target = Target.parse(args.registry, "--registry", UPSTREAM)
    if args.insecure and args.ca_file:
        raise UsageError("--insecure and --ca-file: choose one (plain HTTP, or TLS with the mirror's CA)")
    ca = None
    if args.ca_file:
        try:
            ca = Path(args.ca_file).read_bytes()
        except OSError as e:
            raise UsageError(f"--ca-file {args.ca_file}: {e.strerror}") from None
        if b"-----BEGIN CERTIFICATE-----" not in ca:
            raise UsageError(f"--ca-file {args.ca_file}: not a PEM certificate (no BEGIN CERTIFICATE line)")
    plain = args.insecure or (ca is None and is_loopback(target.registry))
    lock = ReleaseLock.read(args.lock)
    config = node_config(lock, target, fmt, plain_http=plain, ca=ca)
    written = config.write(args.out)
    if args.json:
        print_json({**config.to_json(), "out": str(args.out)})
        return 0
    for path in written:
        print(f"  {display_path(path)}")
    scheme = "plain HTTP" if plain else ("TLS, CA " + args.ca_file if ca else "TLS")
    print(
        f"wrote {len(written)} file(s) for {fmt}: {len(config.hosts)} upstream host(s) "
        f"({', '.join(h.host for h in config.hosts)}) pulled from {target} ({scheme})"
    )
    print("install: " + INSTALL[fmt].format(out=display_path(args.out)))
    return 0
