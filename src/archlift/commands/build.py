"""archlift build: fetch, patch, build for every platform, push by digest, tag, lock."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config.model import load_config
from ..errors import BuildError
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
    add_timeout_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..steps.build import execute
    from ..ui import reporter

    if args.jobs is not None and args.jobs < 1:
        raise BuildError("--jobs must be at least 1")
    timeout = check_timeout(args)
    config = load_config(args.config, registry=args.registry)
    plan = make_plan(config, args.components)
    by_digest = None
    if args.platform:
        from ..steps.build import only_platform

        plan = only_platform(plan, args.platform)
        by_digest = args.platform
    elif args.by_digest:
        by_digest = "all"
    rows = [(p.name, [str(x) for x in p.platforms]) for p in plan.components]
    with reporter(rows, quiet=args.quiet or args.json) as report:
        result = execute(
            plan,
            lock_path=args.lock,
            jobs=args.jobs,
            force=args.force,
            refresh=args.refresh,
            by_digest=by_digest,
            report=report,
            timeout=timeout,
        )
    if args.json:
        print_json(_json(result, args.lock))
    else:
        _print_summary(result, args.lock)
    return 0 if result.ok else BuildError.exit_code


def _json(result: object, lock: Path) -> dict[str, object]:
    from ..steps.build import RunResult

    assert isinstance(result, RunResult)
    return {
        "ok": result.ok,
        "lock": str(lock) if result.lock else None,
        "tags_moved": result.tags_moved,
        "components": [
            {
                "name": o.name,
                "status": o.status,
                "seconds": round(o.seconds, 2),
                "error": o.error or None,
                "image": str(o.release.ref) if o.release else None,
                "platforms": {k: str(v) for k, v in o.release.platforms.items()} if o.release else {},
                "tags": list(o.release.tags) if o.release else [],
            }
            for o in result.outcomes
        ],
    }


def _print_summary(result: object, lock: Path) -> None:
    from ..steps.build import RunResult
    from ..ui import step_summary, table

    assert isinstance(result, RunResult)
    rows = []
    for o in result.outcomes:
        rel = o.release
        rows.append(
            [
                o.name,
                o.status,
                f"{o.seconds:.1f}s",
                rel.index_digest.value[:19] if rel else "-",
                ", ".join(sorted(rel.platforms)) if rel else "-",
                ", ".join(rel.tags) if rel else "-",
            ]
        )
    text = table(["component", "status", "time", "digest", "platforms", "tags"], rows)
    print(text)
    for o in result.outcomes:
        if o.error:
            print(f"\n{o.name} failed:\n  " + o.error.replace("\n", "\n  "), file=sys.stderr)
    if result.ok and result.lock and result.lock.partial_platform:
        print(
            f"\npartial release ({result.lock.partial_platform}) pushed by digest; no tag moved; partial lock: {lock}"
        )
        print("merge the partial locks of every platform with: archlift merge PARTIAL_LOCK...")
    elif result.ok and result.lock:
        built = sum(1 for o in result.outcomes if o.status == "built")
        print(
            f"\nrelease complete: {built} built, {len(result.outcomes) - built} unchanged or mirrored; "
            f"{result.tags_moved} tags moved; lock written to {lock}"
        )
        for rel in result.lock.components.values():
            print(f"  {rel.ref}")
    else:
        failed = [o.name for o in result.outcomes if o.status == "failed"]
        print(f"\nrelease NOT complete: {', '.join(failed)} failed; no tag was moved and {lock} was not written.")
    step_summary("```\n" + text + "\n```")
