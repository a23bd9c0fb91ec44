"""Decide: Plan and resolved facts -> one ``Decision`` per component: build, skip, copy or fail, and why.

For a built component: resolve its source (once per run, ``sources.Resolver``), read the
patched Dockerfile (from a small cache keyed by commit and patches, else from the run's
work tree), resolve the external images it pulls to digests, hash the inputs, and look for
a build record in the registry. ``archlift plan --check`` and ``archlift build`` both call
``decide`` with the same lock (``--lock``), so they cannot disagree. Nothing is built,
pushed or tagged here.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..config.model import Component, Config, Source
from ..errors import ArchliftError, BuildError
from ..lock import ReleaseLock, write_atomic
from ..oci import RegistryClient
from ..plan import Plan, PlannedComponent
from ..refs import ImageRef
from ..ui import Reporter
from . import inputs as inputs_mod
from .dockerfile import check_contexts, external_images
from .inputs import BuildRecord, Inputs
from .patches import queue_hash
from .sources import ResolvedSource, Resolver, cache_root
from .trees import WorkTrees


@dataclass(frozen=True)
class Decision:
    planned: PlannedComponent
    action: str  # build | skip | copy | fail
    reason: str
    inputs: Inputs | None = None
    record: BuildRecord | None = None  # skip: what an earlier build of the same inputs produced
    resolved: ResolvedSource | None = None
    error: ArchliftError | None = None  # fail: the error as it was raised (class, exit code, hint)
    seconds: float = 0.0  # spent deciding

    @property
    def name(self) -> str:
        return self.planned.name

    @property
    def component(self) -> Component:
        return self.planned.component

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "reason": self.reason}
        if self.inputs:
            out["inputs_hash"] = self.inputs.hash
        if self.error is not None and self.error.hint:
            out["hint"] = self.error.hint
        return out


def source_of(comp: Component) -> Source:
    assert comp.source is not None, f"{comp.name} is mirrored, not built"
    return comp.source


def locked_commits(config: Config, lock: ReleaseLock | None) -> dict[str, str]:
    """Source name -> the commit the previous release lock records for it (same URL and ref)."""
    out: dict[str, str] = {}
    if lock is None:
        return out
    for name, entry in lock.components.items():
        comp = config.components.get(name)
        if comp is None or comp.source is None or entry.upstream is None:
            continue
        if entry.upstream.url == comp.source.git and entry.upstream.ref == comp.source.ref:
            out.setdefault(comp.source.name, entry.upstream.commit)
    return out


class Bases:
    """External image -> digest, asked once per run (thread-safe)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._known: dict[str, str] = {}
        self._lock = threading.Lock()

    def resolve(self, comp: Component, images: list[str]) -> dict[str, str]:
        out = {}
        for text in images:
            with self._lock:
                known = self._known.get(text)
            if known:
                out[text] = known
                continue
            try:
                ref = ImageRef.parse(text)
            except ValueError as e:
                raise BuildError(
                    f"{comp.name}: the Dockerfile pulls '{text}', which is not an image reference: {e}"
                ) from e
            if ref.digest:
                out[text] = str(ref.digest)
                continue
            try:
                desc = self.client.head_manifest(ref)
            except ArchliftError as e:
                raise BuildError(
                    f"{comp.name}: cannot resolve base image '{text}': {e.message}",
                    hint="make it reachable, or replace it with a named build context (build.contexts) "
                    "or a build arg pointing at a mirror",
                ) from e
            if desc is None:
                raise BuildError(f"{comp.name}: base image '{text}' does not exist in its registry")
            with self._lock:
                self._known[text] = str(desc.digest)
            out[text] = str(desc.digest)
        return out


def dockerfile_text(comp: Component, resolved: ResolvedSource, trees: WorkTrees) -> str:
    """The patched Dockerfile, from a small cache keyed by commit + patches (no checkout needed)."""
    assert comp.build is not None
    if comp.build.dockerfile_local:
        return comp.build.dockerfile_local.read_text()
    source = source_of(comp)
    key = f"{resolved.tree_hash or resolved.commit}-{queue_hash(source.patches)}-{comp.build.dockerfile}"
    cached = cache_root() / "dockerfiles" / (hashlib.sha256(key.encode()).hexdigest() + ".Dockerfile")
    if cached.is_file() and not resolved.tree_hash:
        return cached.read_text()
    path = trees.tree(source, comp.name).path / comp.build.dockerfile
    if not path.is_file():
        raise BuildError(
            f"{comp.name}: the Dockerfile '{comp.build.dockerfile}' is not in {resolved.url} at {resolved.commit}",
            hint="fix build.dockerfile in images.yaml (it is relative to the source root)",
        )
    text = path.read_text()
    write_atomic(cached, text)
    return text


def inputs_for(
    comp: Component, config: Config, resolver: Resolver, trees: WorkTrees, bases: Bases
) -> tuple[Inputs, ResolvedSource]:
    """What the component's image is made of, hashed (see ``archlift.steps.inputs``)."""
    assert comp.build is not None
    source = source_of(comp)
    resolved = resolver.resolve(source)
    patch_hash = queue_hash(source.patches)
    values = inputs_mod.tag_values(comp, resolved, patch_hash, "")
    args = {k: inputs_mod.expand(v, values) for k, v in comp.build.args.items()}
    text = dockerfile_text(comp, resolved, trees)
    check_contexts(text, args, comp.build)
    found = bases.resolve(comp, external_images(text, args, comp.build.contexts))
    return inputs_mod.compute(comp, config, resolved, patch_hash, found, args), resolved


def decide_one(
    planned: PlannedComponent,
    config: Config,
    client: RegistryClient,
    resolver: Resolver,
    trees: WorkTrees,
    bases: Bases,
    *,
    force: bool = False,
) -> Decision:
    start = time.monotonic()
    comp = planned.component
    if comp.mirror:
        return Decision(planned, "copy", f"mirror {comp.mirror}: copied by digest when missing")
    try:
        inputs, resolved = inputs_for(comp, config, resolver, trees, bases)
        if force:
            return Decision(planned, "build", "--force", inputs, None, resolved, None, time.monotonic() - start)
        record = inputs_mod.find_record(client, comp, config, inputs.hash)
    except ArchliftError as e:
        return Decision(planned, "fail", e.message, error=e, seconds=time.monotonic() - start)
    seconds = time.monotonic() - start
    if record:
        reason = f"unchanged: inputs {inputs.short} built as {record.index_digest.short()}"
        return Decision(planned, "skip", reason, inputs, record, resolved, None, seconds)
    reason = f"no image in the registry for inputs {inputs.short}"
    return Decision(planned, "build", reason, inputs, None, resolved, None, seconds)


def decide(
    plan: Plan,
    *,
    client: RegistryClient,
    resolver: Resolver,
    trees: WorkTrees,
    force: bool = False,
    jobs: int = 2,
    report: Reporter | None = None,
) -> tuple[Decision, ...]:
    """A decision for every planned component, in plan order (components decided concurrently)."""
    bases = Bases(client)

    def one(planned: PlannedComponent) -> Decision:
        decision = decide_one(planned, plan.config, client, resolver, trees, bases, force=force)
        if report is not None:
            report(planned.name, "", f"{decision.action}: {decision.reason}")
        return decision

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return tuple(pool.map(one, plan.components))


@dataclass(frozen=True)
class Run:
    """The services one run shares: the registry client, the source resolver (each source once)
    and the run's work trees. Opened and closed by ``open_run``."""

    client: RegistryClient
    resolver: Resolver
    trees: WorkTrees


@contextlib.contextmanager
def open_run(
    config: Config, *, lock: ReleaseLock | None = None, refresh: bool = False, timeout: float = 60.0
) -> Iterator[Run]:
    """``lock``: the previous release, whose commits a moved tag must not silently replace; ``timeout``:
    each registry request's deadline (``--timeout``)."""
    client = RegistryClient(max_connections=32, timeout=timeout)  # several components push at once
    resolver = Resolver(refresh=refresh, locked=locked_commits(config, lock))
    trees = WorkTrees(resolver)
    try:
        yield Run(client, resolver, trees)
    finally:
        trees.close()
        client.close()
