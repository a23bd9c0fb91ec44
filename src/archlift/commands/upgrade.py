"""archlift upgrade SOURCE --to REF: move a source to a new upstream ref and carry its patch queue over."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..steps.upgrade import Outcome, UpgradeReport, UpgradeRequest, upgrade
from .common import DEFAULT_CONFIG, add_json_arg, display_path, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "upgrade",
        help="move a source to a new upstream ref and replay its patch queue there",
        description="Fetch REF, resolve it to a commit and replay SOURCE's patch queue on it in order, with a "
        "three-way merge where plain application fails. Each patch applies, applies with offsets or a three-way "
        "merge, is already upstream (dropped), or conflicts (each failing hunk is named with the upstream commits "
        "that touched its lines). When nothing conflicts, 'ref:' and 'commit:' are rewritten in images.yaml (no "
        "other byte changes) and the queue is regenerated against the new commit under the same names; exit 0. "
        "On a conflict nothing is changed: a work tree is left with the queue replayed up to it, to finish with "
        "'git cherry-pick --continue' and 'archlift patches refresh'; exit 1. Bad input (unknown source, a ref "
        "the upstream does not have, an unreachable URL): exit 2.",
    )
    p.add_argument("source", metavar="SOURCE", help="a name under 'sources:', or a component with an inline source")
    p.add_argument("--to", required=True, metavar="REF", help="the tag, branch or full commit id to move to")
    p.add_argument("--dry-run", action="store_true", help="only report what becomes of each patch; change nothing")
    p.add_argument("--config", default=DEFAULT_CONFIG, type=Path, help="the images.yaml (default: %(default)s)")
    p.add_argument(
        "--work-tree",
        type=Path,
        metavar="DIR",
        help="where a conflict is left to finish (default: .cache/patches/SOURCE)",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    request = UpgradeRequest(args.config, args.source, args.to, dry_run=args.dry_run, work_tree=args.work_tree)
    report = upgrade(request, progress=lambda text: print(f"  {text} ...", file=sys.stderr, flush=True))
    if args.json:
        print_json(report.to_json())
    else:
        print(format_text(report), end="")
    return 0 if report.ok else 1


def format_text(r: UpgradeReport) -> str:
    lines = [
        f"upgrade {r.source}: {r.old.ref} ({r.old.commit[:12]}) -> {r.new.ref} ({r.new.commit[:12]}), "
        f"{r.upstream_commits} upstream commit(s) between them",
        f"  from {r.url}",
    ]
    if r.same:
        return "\n".join([*lines, f"already at {r.new.ref} ({r.new.commit}): nothing to do", ""])
    lines.append("")
    if not r.results:
        lines.append("no patches: the pin alone moves")
    width = max((len(x.patch.name) for x in r.results), default=0)
    for x in r.results:
        outcome = x.outcome.value + (f": {x.detail}" if x.detail else "")
        lines.append(f"  {x.patch.name.ljust(width)}  {outcome}")
    for x in r.conflicts:
        lines += ["", f"{x.patch.name} conflicts with {r.new.ref}; the hunks that fail there:"]
        for hunk in x.failed:
            lines.append(f"  {hunk.file}: {hunk.header}")
            if hunk.commits:
                lines.append(f"    upstream commits {r.old.ref}..{r.new.ref} that touched these lines:")
                lines += [f"      {c.sha[:12]} {c.subject}" for c in hunk.commits]
            else:
                lines.append(f"    no upstream commit {r.old.ref}..{r.new.ref} touched these lines")
    lines.append("")
    config = display_path(r.config)
    if r.dry_run:
        lines.append(f"dry run: nothing was changed in {config} or the patch queue.")
        if r.ok:
            lines.append(f"without --dry-run: archlift upgrade {r.source} --to {r.new.ref} --config {config}")
        return "\n".join([*lines, ""])
    if not r.ok:
        assert r.work_tree is not None
        tree = display_path(r.work_tree)
        conflict = r.conflicts[0]
        later = [x.patch.name for x in r.results if x.outcome is Outcome.NOT_TRIED]
        files = " ".join(r.conflict_files) or "the files git status lists"
        lines += [
            f"nothing was changed in {config} or the patch queue.",
            f"work tree: {tree}: {r.new.ref} with the patches before {conflict.patch.name} as commits, and "
            f"{conflict.patch.name} being cherry-picked (conflicts in {files}).",
            "finish it there:",
            f"  cd {tree}",
            f"  # resolve the conflicts in {files}, then",
            f"  git add {files} && git cherry-pick --continue"
            + (f"    # then replays {', '.join(later)}" if later else ""),
            f"and write it back (the queue against {r.new.commit[:12]}, and the pin in {config}):",
            f"  archlift patches refresh {r.source} {tree} --config {config}",
            "",
        ]
        return "\n".join(lines)
    lines.append(f"{config}: {len(r.changes)} line(s) rewritten")
    for change in r.changes:
        lines += [f"  {change.line:4d} - {change.old.strip()}", f"       + {change.new.strip()}"]
    if not any("commit:" in c.new for c in r.changes):
        lines.append(f"  (no 'commit:' pin there; add 'commit: {r.new.commit}' to pin the tag's commit)")
    kept = len(r.written)
    queue = (
        display_path(r.written[0].parent)
        if r.written
        else display_path(r.dropped[0].parent)
        if r.dropped
        else "the queue"
    )
    lines.append(f"{queue}: {kept} patch(es) regenerated against {r.new.commit[:12]}, {len(r.dropped)} dropped")
    lines += [f"  dropped {display_path(p)} (already upstream)" for p in r.dropped]
    if r.checked:
        lines.append(f"  checked: {r.checked}")
    lines += [f"note: {note}" for note in r.notes]
    lines += [
        "",
        "next:",
        f"  archlift plan {config} --check        # the new pin resolves; what will be rebuilt",
        "  cp dist/release.json dist/release-" + r.old.ref + ".json   # keep today's lock to compare",
        f"  archlift build {config}",
        f"  archlift diff dist/release-{r.old.ref}.json dist/release.json   # what the upgrade changes",
        "",
    ]
    return "\n".join(lines)
