"""The command line. Each subcommand lives in ``archlift.commands.<name>``
with ``register(subparsers)``; this module is the only catcher of errors."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
from collections.abc import Sequence

from . import __version__
from .errors import ArchliftError

# The command table: each command and the module (archlift.commands.<module>) that
# registers it, in the order --help lists them.
COMMANDS: dict[str, str] = {
    "validate": "validate",
    "schema": "schema",
    "plan": "plan",
    "build": "build",
    "merge": "merge",
    "patches": "patches",
    "upgrade": "upgrade",
    "render": "render",
    "publish": "publish",
    "diff": "diff",
    "mirror": "mirror",
    "mirror-config": "mirror_config",
    "export": "export",
    "import": "import_",  # `import` is a Python keyword
    "verify-bundle": "verify_bundle",
    "verify": "verify",
    "audit": "audit",
    "sign": "sign",
    "report": "report",
    "verify-reproducible": "verify_reproducible",
    "demo": "demo",
}


def _chosen(argv: Sequence[str]) -> list[str]:
    """The command modules to import: only the one named on the command line when there is
    one (start-up stays fast: no jinja2 or schema packages for a build), else all."""
    for arg in argv:
        if arg.startswith("-"):
            if arg in ("-h", "--help", "--version"):
                return list(COMMANDS.values())
            continue
        return [COMMANDS[arg]] if arg in COMMANDS else list(COMMANDS.values())
    return list(COMMANDS.values())


def _parser(modules: Sequence[str] = tuple(COMMANDS.values())) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="archlift",
        description="Build, pin, publish and mirror multi-arch container images from patched upstreams.",
    )
    parser.add_argument("--version", action="version", version=f"archlift {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every external command run")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in modules:
        importlib.import_module(f"archlift.commands.{name}").register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # run as a program: `archlift plan | head` ends quietly, like other CLIs
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser(_chosen(argv))
    args, extra = parser.parse_known_args(argv)
    if extra:  # positionals after options (`build images.yaml --json hello`) are more components
        if isinstance(getattr(args, "components", None), list) and not any(x.startswith("-") for x in extra):
            args.components += extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose or os.environ.get("ARCHLIFT_DEBUG") else logging.WARNING,
        format="%(message)s",
    )
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # pool notices are not the user's business
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ArchliftError as e:
        print(e.render(), file=sys.stderr)
        from .ui import annotate_error

        annotate_error(f"archlift {args.command}: {e.title}", e.message + (f"\n{e.hint}" if e.hint else ""))
        return e.exit_code
    except KeyboardInterrupt:
        print("archlift: interrupted; nothing was tagged that was not complete", file=sys.stderr)
        return 130
