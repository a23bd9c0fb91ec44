"""archlift plan: what build will do, per component (pure; --check asks git and the registry)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config.model import load_config
from ..errors import exit_status
from ..plan import Plan, make_plan
from .common import DEFAULT_LOCK, add_config_arg, add_json_arg, add_registry_arg, print_json


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan",
        help="show what a build would do",
        description="Print, per component, where its source comes from, which patches apply, which platforms, "
        "and the image it will produce. With --check, also resolve sources and ask the registry whether each "
        "component would be built or skipped, and why.",
    )
    add_config_arg(p)
    add_registry_arg(p)
    add_json_arg(p)
    p.add_argument("components", nargs="*", metavar="COMPONENT", help="only these components")
    p.add_argument("--check", action="store_true", help="resolve sources and the registry: build or skip, and why")
    p.add_argument(
        "--lock",
        type=Path,
        default=DEFAULT_LOCK,
        help="with --check: the previous release lock, as build reads it (default: %(default)s)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, registry=args.registry)
    plan = make_plan(config, args.components)
    decisions: dict[str, dict[str, Any]] = {}
    status = 0
    if args.check:
        from ..steps.decide import decide, open_run
        from .build import read_lock_if_any

        with open_run(config, lock=read_lock_if_any(args.lock)) as run:
            found = decide(plan, client=run.client, resolver=run.resolver, trees=run.trees, jobs=config.concurrency)
        decisions = {d.name: d.to_json() for d in found}
        status = exit_status(d.error for d in found if d.error is not None)  # what build would exit with
    if args.json:
        data = plan.to_json()
        for comp in data["components"]:
            if comp["name"] in decisions:
                comp["decision"] = decisions[comp["name"]]
        print_json(data)
        return status
    print_text(plan, decisions)
    return status


def print_text(plan: Plan, decisions: dict[str, dict[str, Any]]) -> None:
    root = plan.config.root
    print(f"plan for {plan.config.path} -> {plan.config.registry}")
    for p in plan.components:
        print(f"\n{p.name} ({p.kind})")
        print(f"  source:    {p.describe_source()}")
        comp = p.component
        if comp.build:
            where = comp.build.dockerfile_local or comp.build.dockerfile
            target = f" target {comp.build.target}" if comp.build.target else ""
            print(f"  build:     {where}{target} (context {comp.build.context})")
            names = [str(x.relative_to(root)) if x.is_relative_to(root) else str(x) for x in p.patches]
            print(f"  patches:   {', '.join(names) if names else 'none'}")
        print(f"  platforms: {', '.join(map(str, p.platforms))}")
        print(f"  image:     {p.image} tags {', '.join(p.tag_templates)}")
        if comp.replaces:
            print(f"  replaces:  {', '.join(comp.replaces)}")
        policy = comp.binaries
        if policy.allow or (comp.mirror and policy.check == "fail"):  # other than the default
            allowed = f"; allowed: {', '.join(policy.allow)} ({policy.reason})" if policy.allow else ""
            print(f"  binaries:  a binary of another machine fails the build{allowed}")
        if p.name in decisions:
            d = decisions[p.name]
            print(f"  decision:  {d['action']}: {d['reason']}")
            if d.get("hint"):
                print(f"             {d['hint']}")
