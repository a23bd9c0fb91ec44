"""archlift schema: the JSON Schema of images.yaml, for editors (YAML language server) and CI."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "schema",
        help="print the JSON Schema of images.yaml (for editors)",
        description="Print the JSON Schema of images.yaml, generated from archlift's own model. Name it in "
        "images.yaml with a first line '# yaml-language-server: $schema=PATH-OR-URL' and editors that use the "
        "YAML language server (VS Code's YAML extension, Neovim, Helix, ...) complete and check the file. "
        "archlift validate remains the authority: it also checks files, references and templates.",
    )
    p.add_argument("-o", "--output", type=Path, metavar="FILE", help="write it to FILE instead of printing it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..config.schema import schema_json
    from ..lock import write_atomic

    text = schema_json()
    if args.output:
        write_atomic(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0
