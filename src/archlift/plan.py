"""Config + selection -> Plan: a pure description of what ``build`` will do.

No git, no docker, no network: ``archlift plan`` prints it, ``build`` runs it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config.model import Component, Config
from .errors import UsageError
from .refs import ImageRef, Platform, RefError


@dataclass(frozen=True)
class PlannedComponent:
    component: Component
    image: ImageRef
    platforms: tuple[Platform, ...]
    tag_templates: tuple[str, ...]
    patches: tuple[Path, ...]
    cache: ImageRef | None

    @property
    def name(self) -> str:
        return self.component.name

    @property
    def kind(self) -> str:
        return self.component.kind

    def describe_source(self) -> str:
        comp = self.component
        if comp.mirror:
            return f"mirror of {comp.mirror}"
        assert comp.source is not None
        src = comp.source
        text = f"{src.location}"
        if src.ref:
            text += f" @ {src.ref}"
        if src.commit:
            text += f" (pinned {src.commit[:12]})"
        return text


@dataclass(frozen=True)
class Plan:
    config: Config
    components: tuple[PlannedComponent, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "config": str(self.config.path),
            "registry": self.config.registry,
            "components": [_component_json(p, self.config.root) for p in self.components],
        }


def make_plan(config: Config, names: list[str] | None = None) -> Plan:
    planned = []
    for comp in config.select(names):
        patches = comp.source.patches if comp.source else ()
        cache = config.cache.ref_for(comp.image) if comp.kind == "build" else None
        planned.append(PlannedComponent(comp, comp.image, comp.platforms, comp.tags, patches, cache))
    return Plan(config, tuple(planned))


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _component_json(p: PlannedComponent, root: Path) -> dict[str, Any]:
    comp = p.component
    out: dict[str, Any] = {
        "name": p.name,
        "kind": p.kind,
        "image": str(p.image),
        "platforms": [str(x) for x in p.platforms],
        "tags": list(p.tag_templates),
        "replaces": list(comp.replaces),
        "binaries": {"check": comp.binaries.check, "allow": list(comp.binaries.allow), "reason": comp.binaries.reason},
    }
    if comp.mirror:
        out["mirror"] = str(comp.mirror)
        return out
    assert comp.source is not None and comp.build is not None
    out["source"] = {
        "name": comp.source.name,
        "git": comp.source.git,
        "path": str(comp.source.path) if comp.source.path else None,
        "ref": comp.source.ref,
        "commit": comp.source.commit,
    }
    out["patches"] = [_rel(x, root) for x in p.patches]
    build = comp.build
    out["build"] = {
        "context": build.context,
        "dockerfile": _rel(build.dockerfile_local, root) if build.dockerfile_local else build.dockerfile,
        "dockerfile_from": "repository" if build.dockerfile_local else "source",
        "target": build.target,
        "args": dict(sorted(build.args.items())),
        "contexts": dict(sorted(build.contexts.items())),
    }
    out["cache"] = str(p.cache) if p.cache else None
    return out


def only_platform(plan: Plan, platform: str) -> Plan:
    """The plan narrowed to one platform (a native runner's share of a split release)."""
    try:
        wanted = Platform.parse(platform)
    except RefError as e:
        raise UsageError(f"--platform: {e}") from None
    narrowed = []
    for p in plan.components:
        if p.component.mirror is None and wanted not in p.platforms:
            continue  # this component is not built for that platform
        comp = dataclasses.replace(p.component, platforms=(wanted,)) if p.component.mirror is None else p.component
        narrowed.append(dataclasses.replace(p, component=comp, platforms=comp.platforms))
    return Plan(plan.config, tuple(narrowed))
