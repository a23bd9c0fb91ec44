"""archlift validate: check an images.yaml and say what is wrong, precisely."""

from __future__ import annotations

import argparse

from ..config.model import load_config
from .common import add_config_arg, add_registry_arg


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "validate",
        help="check an images.yaml",
        description="Load and validate an images.yaml. Exit 0 when valid; exit 2 with file:line:column, "
        "the field and what is expected when not.",
    )
    add_config_arg(p)
    add_registry_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, registry=args.registry)
    builds = sum(1 for c in config.components.values() if c.kind == "build")
    mirrors = len(config.components) - builds
    print(f"{config.path}: valid ({builds} to build, {mirrors} to mirror, {len(config.sources)} shared sources)")
    return 0
