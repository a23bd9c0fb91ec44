"""The build engine: one ``docker buildx bake`` for every component to build in a run.

Each component is one bake target for all its platforms, exported as an OCI
layout (``type=oci,tar=false``, timestamps rewritten to ``SOURCE_DATE_EPOCH``)
that the build step pushes by digest: BuildKit's ``docker`` driver cannot push
by digest itself. One bake shares one BuildKit session and solve across all
targets. If the bake fails, each target is baked alone (cache-warm) to tell the
failing components from the good ones, so the good ones are still pushed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import buildx
from ..config.model import Component, Config
from ..errors import BuildError
from ..proc import tail
from ..refs import Digest
from ..ui import Reporter
from .inputs import Inputs
from .patches import PatchedTree

_EXPORT_RE = re.compile(r"^#(?P<vertex>\d+) \[(?P<target>[A-Za-z0-9_-]+)\] exporting to oci image format")
_DONE_RE = re.compile(r"^#(?P<vertex>\d+) DONE")
_TOP_RE = re.compile(r"^#(?P<vertex>\d+) exporting (?P<what>manifest list|manifest) (?P<digest>sha256:[0-9a-f]{64})")
_STEP_RE = re.compile(
    r"^#\d+ \[(?P<target>[A-Za-z0-9_-]+) (?P<platform>(?:linux|windows|darwin)/[^ \]]+) (?P<step>[^\]]*)\]"
)


@dataclass(frozen=True)
class BuildJob:
    comp: Component
    inputs: Inputs
    tree: PatchedTree
    layout: Path  # where the OCI layout is written
    exporter: str = ""  # more options of the OCI exporter (test images: compression=zstd,...)

    @property
    def target(self) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "_", self.comp.name)


def labels(comp: Component, tree: PatchedTree) -> dict[str, str]:
    resolved = tree.resolved
    out = {
        "org.opencontainers.image.revision": resolved.commit,
        "org.opencontainers.image.version": resolved.version,
        "dev.archlift.component": comp.name,
    }
    if "://" in resolved.url:
        out["org.opencontainers.image.source"] = resolved.url
    return out


def _attest(config: Config, attestations: bool) -> list[str]:
    if not attestations:
        return ["type=provenance,disabled=true", "type=sbom,disabled=true"]
    sbom = "type=sbom,disabled=true"
    if config.sbom:
        sbom = f"type=sbom,generator={config.sbom_generator}" if config.sbom_generator else "type=sbom"
    provenance = "type=provenance,mode=min" if config.provenance else "type=provenance,disabled=true"
    return [provenance, sbom]


def bake_target(
    job: BuildJob,
    config: Config,
    *,
    fresh: bool = False,
    attestations: bool = True,
    reproducible: bool | None = None,
) -> dict[str, Any]:
    """The one definition of how a component is built, as a bake target. ``fresh``: from an empty
    cache, importing and exporting none (verify-reproducible); ``attestations`` off drops provenance
    and SBOM; ``reproducible`` overrides the file's setting."""
    comp, build = job.comp, job.comp.build
    assert build is not None
    tree = job.tree.path
    target: dict[str, Any] = {
        "context": str(tree / build.context),
        "dockerfile": str(build.dockerfile_local or tree / build.dockerfile),
        "args": dict(job.inputs.args),
        "contexts": build.named_contexts,  # keyed as BuildKit looks them up: bake passes keys as they are
        "platforms": [str(p) for p in comp.platforms],
        "labels": labels(comp, job.tree),
        "attest": _attest(config, attestations),
        "output": [f"type=oci,dest={job.layout},tar=false" + (f",{job.exporter}" if job.exporter else "")],
    }
    if build.target:
        target["target"] = build.target
    if config.reproducible if reproducible is None else reproducible:
        # the upstream commit's time in every timestamp: same inputs, same digests
        target["args"]["SOURCE_DATE_EPOCH"] = str(job.tree.resolved.commit_time)
        target["output"] = [target["output"][0] + ",rewrite-timestamp=true"]
    cache = config.cache.ref_for(comp.image)
    if fresh:
        target["no-cache"] = True
    elif cache is not None:
        target["cache-from"] = [f"type=registry,ref={cache}"]
        target["cache-to"] = [f"type=registry,ref={cache},mode=max"]
    return target


Exported = Callable[[BuildJob, Digest], None]  # a job whose layout blobs are written, and its top digest


def bake(
    jobs: list[BuildJob],
    config: Config,
    workdir: Path,
    report: Reporter,
    *,
    steps: bool = False,
    exported: Exported | None = None,
) -> dict[str, Digest | BuildError]:
    """Build every job; the index digest of each, or the error that stopped it. With ``steps``,
    BuildKit's step lines go to ``report`` (a live display). ``exported(job, digest)`` is called as
    soon as a job's layout blobs are written (buildx writes the layout's index.json only when the
    whole bake ends, after the cache export), so the job can be pushed while the others go on."""
    if not jobs:
        return {}
    definition = {
        "group": {"default": {"targets": [j.target for j in jobs]}},
        "target": {j.target: bake_target(j, config) for j in jobs},
    }
    bakefile = workdir / "bake.json"
    bakefile.write_text(json.dumps(definition, indent=2, sort_keys=True))
    for job in jobs:
        report(job.comp.name, "", f"building {', '.join(map(str, job.comp.platforms))}")
    watch = _Watch({j.target: j for j in jobs}, report, steps, exported)
    results, error = _run(jobs, config, bakefile, workdir / "bake-metadata.json", watch)
    if error is None:
        return results
    if len(jobs) == 1:
        return {jobs[0].comp.name: error}
    out: dict[str, Digest | BuildError] = {}
    for job in jobs:  # tell the failing targets from the good ones
        report(job.comp.name, "", "the shared bake failed: building it alone")
        alone, err = _run([job], config, bakefile, workdir / f"{job.target}.metadata.json", watch)
        out[job.comp.name] = err if err is not None else alone[job.comp.name]
    return out


def _run(
    jobs: list[BuildJob], config: Config, bakefile: Path, metadata: Path, watch: _Watch
) -> tuple[dict[str, Digest | BuildError], BuildError | None]:
    by_target = {j.target: j for j in jobs}
    result = buildx.bake(bakefile, metadata, list(by_target), builder=config.builder, on_line=watch.line)
    if result.returncode != 0:
        names = ", ".join(j.comp.name for j in jobs)
        return {}, BuildError(
            f"{names}: {failure_text(list(result.lines))}",
            hint="the failing step and its output are above; nothing of this component was pushed or tagged",
        )
    data = json.loads(metadata.read_text())
    return {by_target[t].comp.name: Digest.parse(data[t]["containerimage.digest"]) for t in by_target}, None


_CACHE_VERTEX = ("importing cache manifest", "exporting cache", "[auth]")


def failure_text(lines: list[str]) -> str:
    """What a failed bake says, error first: BuildKit's final ``ERROR:`` line, then the output of
    each failing step and the Dockerfile excerpt it prints, without the registry cache's lines (a
    missing cache only warns) or the progress of the steps that worked."""
    errors = [
        line.removeprefix("ERROR: ").removeprefix("failed to solve: ") for line in lines if line.startswith("ERROR:")
    ]
    blocks: list[list[str]] = []
    current: list[str] | None = None
    excerpt: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "------" and i + 1 < len(lines) and lines[i + 1].startswith(" > "):
            current = [lines[i + 1].removeprefix(" > ").rstrip(":")]
            i += 2
            while i < len(lines) and lines[i] != "------":
                current.append(lines[i])
                i += 1
            if not current[0].startswith(_CACHE_VERTEX):
                blocks.append(current)
        elif re.match(r"^\S+:\d+$", line) and i + 1 < len(lines) and lines[i + 1].startswith("-----"):
            excerpt = [line]
            i += 2
            while i < len(lines) and not lines[i].startswith("-----"):
                excerpt.append(lines[i])
                i += 1
        i += 1
    if not errors and not blocks:  # not BuildKit's shape (a bake file error, a missing builder): its tail
        return "docker buildx bake failed:\n" + tail("\n".join(lines))
    text = errors[-1] if errors else "the build failed"
    for block in blocks:
        text += f"\n  step {block[0]}:" + "".join(f"\n    {x}" for x in block[1:] if x.strip())
    if excerpt:
        text += f"\n  {excerpt[0]}" + "".join(f"\n  {x}" for x in excerpt[1:])
    return text


def target_platform(text: str) -> str:
    """The platform a step builds for: a cross-compiling step is named ``linux/amd64->arm64``
    (it runs on the build platform for the target one)."""
    if "->" not in text:
        return text
    build, _, target = text.partition("->")
    return target if "/" in target else f"{build.split('/', 1)[0]}/{target}"


@dataclass
class _Watch:
    """Reads bake's plain progress: step lines for a live display, and each target's export finishing."""

    jobs: dict[str, BuildJob]
    report: Reporter
    steps: bool
    exported: Exported | None
    exports: dict[str, str] = field(default_factory=dict)  # export vertex -> target
    tops: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # vertex -> (kind, digest) exported

    def line(self, line: str) -> None:
        if self.exported is not None:
            self._export_line(line)
        if self.steps:
            m = _STEP_RE.match(line)
            if m and m.group("target") in self.jobs:
                rest = line[m.end() :].strip()
                step = f"{m.group('step')} {rest}".strip()
                self.report(self.jobs[m.group("target")].comp.name, target_platform(m.group("platform")), step)

    def _export_line(self, line: str) -> None:
        assert self.exported is not None
        m = _EXPORT_RE.match(line)
        if m and m.group("target") in self.jobs:
            self.exports[m.group("vertex")] = m.group("target")
        top = _TOP_RE.match(line)
        if top and top.group("vertex") in self.exports:
            self.tops.setdefault(top.group("vertex"), []).append((top.group("what"), top.group("digest")))
        done = _DONE_RE.match(line)
        if done and done.group("vertex") in self.exports:
            target = self.exports.pop(done.group("vertex"))
            found = self.tops.pop(done.group("vertex"), [])
            lists = {d for what, d in found if what == "manifest list"}
            single = {d for _, d in found}
            digest = lists.pop() if len(lists) == 1 else (single.pop() if not lists and len(single) == 1 else None)
            if digest:  # otherwise the layout is pushed after the bake, from its index.json
                self.exported(self.jobs[target], Digest.parse(digest))
