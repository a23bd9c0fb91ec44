"""archlift patches checkout|refresh COMPONENT: keep a patch queue current in one command.

``checkout`` makes a work tree at the pinned upstream commit with the queue
applied as commits (stopping at a patch that no longer applies, for you to
fix with ``git am --3way``/``git am --continue``); ``refresh`` writes the
commits above the upstream commit back as the queue.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config.model import Component, Source, load_config
from ..errors import PatchError, UsageError
from ..proc import run
from ..steps.patches import apply_queue, refresh
from ..steps.sources import GIT_ENV, checkout, resolve
from ..steps.upgrade import Pending, finish
from .common import DEFAULT_CONFIG, display_path


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "patches",
        help="check out a component's patched tree, or write its commits back as the patch queue",
        description="Keep a patch queue current: 'checkout' makes DIR a git work tree at the upstream commit "
        "with the queue applied as commits; edit and commit there (or move 'ref:' to a new upstream version "
        "and fix what no longer applies), then 'refresh' writes the commits back as patches/<name>/NNNN-*.patch.",
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in (
        ("checkout", "a work tree with the queue applied as commits"),
        ("refresh", "write the work tree's commits back as the queue"),
    ):
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("component", help="a component built from source (or the name of a shared source)")
        a.add_argument("dir", nargs="?", type=Path, help="the work tree (default: .cache/patches/COMPONENT)")
        a.add_argument("--config", default=DEFAULT_CONFIG, help="the images.yaml (default: %(default)s)")
        a.set_defaults(func=run_checkout if name == "checkout" else run_refresh)


def _source(args: argparse.Namespace) -> tuple[Source, Path, Path]:
    config = load_config(args.config)
    comp: Component | None = config.components.get(args.component)
    source = comp.source if comp else config.sources.get(args.component)
    if source is None:
        raise UsageError(f"'{args.component}' is neither a component built from source nor a source in {config.path}")
    if source.git is None:
        raise UsageError(f"'{args.component}' builds from a local directory: edit it in place, it has no queue")
    directory = args.dir or Path(".cache") / "patches" / args.component
    queue_dir = source.patches[0].parent if source.patches else config.root / "patches" / source.name
    return source, directory, queue_dir


def run_checkout(args: argparse.Namespace) -> int:
    source, directory, _ = _source(args)
    resolved = resolve(source)
    checkout(resolved, directory)
    run(["git", "checkout", "-q", "-B", "archlift-patches"], cwd=directory, env=GIT_ENV, error=PatchError)
    try:
        apply_queue(directory, source.patches, resolved, args.component)
    except PatchError as e:
        print(e.render())
        print(f"\nfix it in {directory} (git am --3way <patch>, resolve, git am --continue), then run refresh")
        return PatchError.exit_code
    print(f"{directory}: {resolved.version} ({resolved.commit}) with {len(source.patches)} patch(es) as commits")
    print(f"commit your changes there, then: archlift patches refresh {args.component} {directory}")
    return 0


def run_refresh(args: argparse.Namespace) -> int:
    source, directory, queue_dir = _source(args)
    if Pending.read(directory) is not None:  # an upgrade left with a conflict: finish it
        return _finish_upgrade(args, source, directory)
    resolved = resolve(source)
    written = refresh(directory, resolved.commit, queue_dir)
    print(f"wrote {len(written)} patch(es) to {queue_dir} from {directory} above {resolved.commit[:12]}:")
    for path in written:
        print(f"  {path.name}")
    return 0


def _finish_upgrade(args: argparse.Namespace, source: Source, directory: Path) -> int:
    pending, written = finish(directory, source.name, Path(args.config))
    print(f"finished the upgrade of {pending.source} to {pending.new.ref} ({pending.new.commit[:12]}):")
    for change in written.changes:
        print(f"  {display_path(pending.config)}:{change.line}: {change.old.strip()} -> {change.new.strip()}")
    print(f"  wrote {len(written.written)} patch(es) above {pending.new.commit[:12]}, dropped {len(written.dropped)}:")
    for path in written.written:
        print(f"    {display_path(path)}")
    for path in written.dropped:
        print(f"    {display_path(path)} (dropped: not among the work tree's commits)")
    print(f"  checked: {written.checked}")
    print(f"next: archlift plan {args.config} --check, archlift build {args.config}, archlift diff OLD NEW")
    return 0
