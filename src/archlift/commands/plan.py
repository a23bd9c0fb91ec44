"""archlift plan: what build will do, per component (pure; --check asks git and the registry)."""

from __future__ import annotations

import argparse

from ..config.model import load_config
from ..plan import Plan, make_plan
from .common import add_config_arg, add_json_arg, add_registry_arg, print_json


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
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config, registry=args.registry)
    plan = make_plan(config, args.components)
    decisions: dict[str, dict[str, str]] = {}
    if args.check:
        from ..steps.build import decide

        decisions = {d.name: d.to_json() for d in decide(plan)}
    if args.json:
        data = plan.to_json()
        for comp in data["components"]:
            if comp["name"] in decisions:
                comp["decision"] = decisions[comp["name"]]
        print_json(data)
        return 0
    print_text(plan, decisions)
    return 0


def print_text(plan: Plan, decisions: dict[str, dict[str, str]]) -> None:
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
