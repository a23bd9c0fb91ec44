"""archlift audit: which platforms the images of an install, a release or a list really have."""

from __future__ import annotations

import argparse

from ..checks.audit import audit, collect, format_table, summary
from ..errors import UsageError
from ..refs import Platform, RefError
from .common import add_json_arg, add_timeout_arg, check_timeout, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "audit",
        help="check that every image has the platforms you need",
        description="Find every image referenced by TARGETs (Kubernetes manifest files or directories: every "
        "container, initContainer and ephemeralContainer, also inside YAML held in strings such as ConfigMap data; "
        "an images.yaml: mirrored images, published images, base images; a release lock; image references), "
        "inspect each in its registry (all platforms of an index, attestations, referrers, the config of a "
        "single-platform image) and print image, platforms, missing platforms and source "
        "(org.opencontainers.image.source). With --binaries, also read every layer of every platform and check "
        "that each ELF file is for that platform's machine (x86-64 for linux/amd64, aarch64 for linux/arm64, ...) "
        "and that the image config names the platform the index lists. Exit 1 when a wanted platform is "
        "missing, a binary is another machine's, or an image cannot be inspected.",
    )
    p.add_argument("targets", nargs="+", metavar="TARGET", help="manifest file or directory, images.yaml, "
                   "release lock (.json), or image reference")  # fmt: skip
    p.add_argument(
        "--platform",
        action="append",
        default=[],
        metavar="OS/ARCH",
        help="a platform every image must have (repeat, or comma-separate); default: the images.yaml "
        "component's platforms, the lock's, else linux/amd64 and linux/arm64",
    )
    p.add_argument(
        "--binaries",
        action="store_true",
        help="check that every platform's ELF binaries are for that platform (reads every layer once; "
        "--json lists the files of another machine)",
    )
    add_json_arg(p)
    p.add_argument("--insecure", action="store_true", help="allow plain HTTP and unverified TLS to any registry")
    p.add_argument("--ca-file", metavar="FILE", help="also trust this CA (PEM) for registry TLS, besides the system's")
    p.add_argument("--jobs", type=int, default=4, metavar="N", help="images inspected at once (default 4)")
    add_timeout_arg(p)
    p.set_defaults(func=run)


def parse_platforms(values: list[str]) -> list[Platform]:
    out: list[Platform] = []
    for value in values:
        for text in filter(None, (v.strip() for v in value.split(","))):
            try:
                platform = Platform.parse(text)
            except RefError as e:
                raise UsageError(f"--platform: {e}") from None
            if platform not in out:
                out.append(platform)
    return out


def run(args: argparse.Namespace) -> int:
    from ..oci import RegistryClient

    targets = collect(args.targets, parse_platforms(args.platform))
    if not targets:
        raise UsageError("no images found in " + ", ".join(args.targets))
    with RegistryClient(insecure=args.insecure, ca_file=args.ca_file, timeout=check_timeout(args)) as client:
        if args.binaries:
            from ..checks.binaries import Checker, default_cache

            with Checker(client, cache=default_cache()) as checker:
                reports = audit(client, targets, workers=args.jobs, checker=checker)
        else:
            reports = audit(client, targets, workers=args.jobs)
    ok = all(r.ok for r in reports)
    if args.json:
        print_json({"ok": ok, "images": [r.to_json() for r in reports]})
    else:
        print(format_table(reports, binaries=args.binaries))
        print(summary(reports))
    return 0 if ok else 1
