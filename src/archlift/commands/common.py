"""Arguments and output helpers shared by subcommands."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DEFAULT_CONFIG = "images.yaml"
DEFAULT_LOCK = Path("dist/release.json")


def add_config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        nargs="?",
        default=os.environ.get("ARCHLIFT_CONFIG", DEFAULT_CONFIG),
        help="the release definition (default: images.yaml, or $ARCHLIFT_CONFIG)",
    )


def add_registry_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry",
        default=os.environ.get("ARCHLIFT_REGISTRY") or None,
        help="publish under this registry[/prefix] instead of the file's 'registry:' (or $ARCHLIFT_REGISTRY)",
    )


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of a table")


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def is_tty() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")
