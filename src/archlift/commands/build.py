"""archlift build: fetch, patch, build for every platform, push by digest, tag, lock."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..config.model import load_config
from ..errors import UsageError
from ..lock import ReleaseLock
from ..plan import make_plan
from .common import (
    DEFAULT_LOCK,
    add_config_arg,
    add_json_arg,
    add_registry_arg,
    add_timeout_arg,
    check_timeout,
    print_json,
)

if TYPE_CHECKING:
    from ..steps.release import RunResult


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "build",
        help="build and push every component, then tag and write the release lock",
        description="Fetch and patch each component's source, build it with docker buildx for all its "
        "platforms (registry cache, provenance and SBOM attestations), push by digest, verify, copy mirrored "
        "images by digest, and only when every selected component succeeded move the tags and write the "
        "release lock. Components whose inputs did not change are not rebuilt.",
    )
    add_config_arg(p)
    add_registry_arg(p)
    add_json_arg(p)
    p.add_argument("components", nargs="*", metavar="COMPONENT", help="only these components (default: all)")
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help="the release lock to write (default: %(default)s)")
    p.add_argument("-j", "--jobs", type=int, default=None, help="components built at once (default: concurrency:)")
    p.add_argument("--force", action="store_true", help="rebuild even when the inputs did not change")
    p.add_argument("--refresh", action="store_true", help="fetch every source even when the cache has the ref")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument(
        "--platform",
        help="build only this platform (a native runner's share of a split release; implies --by-digest)",
    )
    p.add_argument(
        "--by-digest",
        action="store_true",
        help="push by digest only and move no tag; the lock is partial, for 'archlift merge'",
    )
    p.add_argument(
        "--no-binaries-check",
        dest="check_binaries",
        action="store_false",
        help="do not check that every image's ELF binaries are for its platform (to measure what the check "
        "costs; the lock then records no binaries)",
    )
    add_timeout_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..plan import only_platform
    from ..steps.build import build
    from ..steps.decide import decide, open_run
    from ..steps.release import release
    from ..ui import group, reporter

    if args.jobs is not None and args.jobs < 1:
        raise UsageError("--jobs must be at least 1")
    timeout = check_timeout(args)
    config = load_config(args.config, registry=args.registry)
    plan = make_plan(config, args.components)
    by_digest = None
    if args.platform:
        plan = only_platform(plan, args.platform)
        by_digest = args.platform
    elif args.by_digest:
        by_digest = "all"
    previous = None if by_digest else read_lock_if_any(args.lock)
    rows = [(p.name, [str(x) for x in p.platforms]) for p in plan.components]
    jobs = args.jobs or config.concurrency
    with (
        reporter(rows, silent=args.quiet or args.json) as report,
        open_run(config, lock=previous, refresh=args.refresh, timeout=timeout) as run,
        contextlib.ExitStack() as stack,
    ):
        with group("decide: build, skip or copy each component"):
            decisions = decide(
                plan,
                client=run.client,
                resolver=run.resolver,
                trees=run.trees,
                force=args.force,
                jobs=jobs,
                report=report,
            )
        checker = None
        if args.check_binaries:  # pushed by digest -> binaries match their platforms -> (only then) tags move
            from ..checks.binaries import Checker, check_as_pushed, default_cache

            checker = stack.enter_context(Checker(run.client, cache=default_cache()))
        with group("build: bake, push by digest, verify"):
            results = build(
                decisions,
                config=config,
                client=run.client,
                trees=run.trees,
                report=report,
                jobs=jobs,
                pushed=check_as_pushed(checker, report) if checker else None,  # each layout as soon as it is pushed
            )
        if checker is not None:
            from ..checks.binaries import gate

            with group("check: every image's binaries are for its platform"):
                results = gate(checker, config, results, report)
        with group("release: move the tags, write the lock"):
            result = release(
                results,
                config=config,
                client=run.client,
                previous=previous,
                lock_path=args.lock,
                by_digest=by_digest,
                report=report,
            )
    if args.json:
        print_json(_json(result, args.lock))
    else:
        _print_summary(result, args.lock, args.check_binaries)
    return result.exit_code


def read_lock_if_any(path: Path) -> ReleaseLock | None:
    """The lock at ``path`` when there is one (a damaged one is an error: it names the file)."""
    return ReleaseLock.read(path) if path.is_file() else None


def _json(result: RunResult, lock: Path) -> dict[str, object]:
    return {
        "ok": result.ok,
        "lock": str(lock) if result.lock else None,
        "tags_moved": result.tags_moved,
        "components": [
            {
                "name": r.name,
                "status": r.status,
                "seconds": round(r.seconds, 2),
                "error": r.message or None,
                "hint": r.error.hint if r.error and r.error.hint else None,
                "exit_code": r.error.exit_code if r.error else 0,
                "image": str(r.release.ref) if r.release else None,
                "platforms": {k: str(v) for k, v in r.release.platforms.items()} if r.release else {},
                "tags": list(r.release.tags) if r.release else [],
                "binaries": {
                    p: {"elf_files": b.elf_files, "machines": b.machines} for p, b in r.release.binaries.items()
                }
                if r.release
                else {},
                "warnings": list(r.warnings),
            }
            for r in result.results
        ],
    }


def _print_summary(result: RunResult, lock: Path, checked: bool = True) -> None:
    from ..ui import annotate_error, step_summary, table

    rows = []
    for r in result.results:
        rel = r.release
        rows.append(
            [
                r.name,
                r.status,
                f"{r.seconds:.1f}s",
                rel.index_digest.value[:19] if rel else "-",
                ", ".join(sorted(rel.platforms)) if rel else "-",
                ", ".join(rel.tags) if rel else "-",
            ]
        )
    text = table(["component", "status", "time", "digest", "platforms", "tags"], rows)
    print(text)
    for r in result.results:
        for warning in r.warnings:
            print(f"\n{r.name}: warning:\n  " + warning.replace("\n", "\n  "), file=sys.stderr)
    for name, error in result.errors:
        print(f"\n{name} failed: {error.title}: " + error.message.replace("\n", "\n  "), file=sys.stderr)
        if error.hint:
            print(f"  {error.hint}", file=sys.stderr)
        annotate_error(f"{name} failed", error.message + (f"\n{error.hint}" if error.hint else ""))
    if not checked:
        print("\nbinaries not checked (--no-binaries-check): the lock records none", file=sys.stderr)
    if result.ok and result.lock and result.lock.partial_platform:
        print(
            f"\npartial release ({result.lock.partial_platform}) pushed by digest; no tag moved; partial lock: {lock}"
        )
        print("merge the partial locks of every platform with: archlift merge PARTIAL_LOCK...")
    elif result.ok and result.lock:
        built = sum(1 for r in result.results if r.status == "built")
        print(
            f"\nrelease complete: {built} built, {len(result.results) - built} unchanged or mirrored; "
            f"{result.tags_moved} tags moved; lock written to {lock}"
        )
        for rel in result.lock.components.values():
            print(f"  {rel.ref}")
        if checked:
            records = [b for r in result.results if r.release for b in r.release.binaries.values()]
            files = sum(b.elf_files for b in records)
            warned = " (see the warnings above)" if any(r.warnings for r in result.results) else ""
            print(f"binaries: {files} ELF file(s) checked in {len(records)} platform image(s){warned}")
    else:
        failed = [r.name for r in result.results if r.status == "failed"]
        print(f"\nrelease NOT complete: {', '.join(failed)} failed; no tag was moved and {lock} was not written.")
    step_summary("```\n" + text + "\n```")
