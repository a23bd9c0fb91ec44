"""Build: Plan -> prepared trees -> buildx builds pushed by digest -> tags -> lock.

1. ``decide``: resolve each source (fetching only what is missing), read the
   patched Dockerfile, resolve its external images to digests, hash the
   inputs and look for a build record: build, or skip and why.
2. ``execute``: build what must be built, concurrently (bounded), one
   ``docker buildx build`` per component for all its platforms, pushed by
   digest only; verify the digests against the registry; copy mirrored
   components by digest.
3. ``release``: only when every selected component succeeded, move the tags
   and write ``dist/release.json``. If any failed, no tag moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from ..config.model import Component, Config, Source
from ..errors import ArchliftError, BuildError, MirrorError, RegistryError, UsageError
from ..lock import ComponentRelease, PatchRecord, ReleaseLock, Upstream, write_atomic
from ..oci import Descriptor, Manifest, RegistryClient
from ..oci.layout import Layout, push_tree
from ..plan import Plan, PlannedComponent
from ..refs import Digest, ImageRef, Platform, RefError
from . import inputs as inputs_mod
from .dockerfile import external_images
from .engine import BuildJob, bake
from .inputs import BuildRecord, Inputs
from .patches import PatchedTree, apply_queue, file_sha256, queue_hash
from .sources import ResolvedSource, cache_root, checkout, resolve

Reporter = Callable[[str, str, str], None]  # (component, platform or "", message)
log = logging.getLogger("archlift.steps.build")


def _quiet(component: str, platform: str, message: str) -> None:
    return None


@dataclass(frozen=True)
class Decision:
    name: str
    action: str  # build | skip | copy | fail
    reason: str
    inputs: Inputs | None = None
    record: BuildRecord | None = None

    def to_json(self) -> dict[str, str]:
        out = {"action": self.action, "reason": self.reason}
        if self.inputs:
            out["inputs_hash"] = self.inputs.hash
        return out


@dataclass(frozen=True)
class Outcome:
    """What happened to one component in this run."""

    name: str
    status: str  # built | skipped | copied | present (mirrored, already there) | failed
    seconds: float
    release: ComponentRelease | None = None
    error: str = ""


@dataclass
class Workspace:
    """Per-run state: resolved sources and patched trees, shared by components of one source."""

    config: Config
    client: RegistryClient
    lock: ReleaseLock | None
    refresh: bool = False
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="run-", dir=_trees_dir())))
    resolved: dict[str, ResolvedSource] = field(default_factory=dict)
    trees: dict[str, PatchedTree] = field(default_factory=dict)
    guard: threading.Lock = field(default_factory=threading.Lock)
    source_locks: dict[str, threading.Lock] = field(default_factory=dict)
    bases: dict[str, str] = field(default_factory=dict)  # external image -> digest, this run
    indexes: dict[Digest, bytes] = field(default_factory=dict)  # index bytes read back this run (for tagging)
    done: dict[str, BuildRecord] = field(default_factory=dict)  # pushed, verified and recorded during the bake

    def _source_lock(self, name: str) -> threading.Lock:
        with self.guard:
            return self.source_locks.setdefault(name, threading.Lock())

    def resolve(self, comp: Component) -> ResolvedSource:
        source = _source(comp)
        with self._source_lock(source.name):
            if source.name not in self.resolved:
                locked = self._locked_commit(comp)
                self.resolved[source.name] = resolve(source, refresh=self.refresh, locked_commit=locked)
            return self.resolved[source.name]

    def _locked_commit(self, comp: Component) -> str | None:
        if not self.lock or comp.name not in self.lock.components:
            return None
        entry = self.lock.components[comp.name]
        if entry.upstream and entry.upstream.url == _source(comp).git and entry.upstream.ref == _source(comp).ref:
            return entry.upstream.commit
        return None

    def tree(self, comp: Component) -> PatchedTree:
        source = _source(comp)
        key = f"{source.name}-{queue_hash(source.patches)[:12]}"
        resolved = self.resolve(comp)
        with self._source_lock(source.name):
            if key not in self.trees:
                path = checkout(resolved, self.root / key)
                self.trees[key] = apply_queue(path, source.patches, resolved, comp.name)
            return self.trees[key]

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _trees_dir() -> Path:
    path = cache_root() / "worktrees"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _source(comp: Component) -> Source:
    assert comp.source is not None
    return comp.source


# --- deciding ---------------------------------------------------------------


def _dockerfile_text(ws: Workspace, comp: Component, resolved: ResolvedSource) -> str:
    """The patched Dockerfile, from a small cache keyed by commit + patches (no checkout needed)."""
    assert comp.build is not None
    if comp.build.dockerfile_local:
        return comp.build.dockerfile_local.read_text()
    source = _source(comp)
    key = f"{resolved.tree_hash or resolved.commit}-{queue_hash(source.patches)}-{comp.build.dockerfile}"
    cached = cache_root() / "dockerfiles" / (hashlib.sha256(key.encode()).hexdigest() + ".Dockerfile")
    if cached.is_file() and not resolved.tree_hash:
        return cached.read_text()
    path = ws.tree(comp).path / comp.build.dockerfile
    if not path.is_file():
        raise BuildError(
            f"{comp.name}: the Dockerfile '{comp.build.dockerfile}' is not in {resolved.url} at {resolved.commit}",
            hint="fix build.dockerfile in images.yaml (it is relative to the source root)",
        )
    text = path.read_text()
    write_atomic(cached, text)
    return text


def _resolve_bases(ws: Workspace, comp: Component, images: list[str]) -> dict[str, str]:
    out = {}
    for text in images:
        if text in ws.bases:
            out[text] = ws.bases[text]
            continue
        try:
            ref = ImageRef.parse(text)
        except ValueError as e:
            raise BuildError(f"{comp.name}: the Dockerfile pulls '{text}', which is not an image reference: {e}") from e
        if ref.digest:
            out[text] = str(ref.digest)
            continue
        try:
            desc = ws.client.head_manifest(ref)
        except RegistryError as e:
            raise BuildError(
                f"{comp.name}: cannot resolve base image '{text}': {e.message}",
                hint="make it reachable, or replace it with a named build context (build.contexts) "
                "or a build arg pointing at a mirror",
            ) from e
        if desc is None:
            raise BuildError(f"{comp.name}: base image '{text}' does not exist in its registry")
        out[text] = ws.bases[text] = str(desc.digest)
    return out


def inputs_for(ws: Workspace, comp: Component) -> tuple[Inputs, ResolvedSource, str]:
    assert comp.build is not None
    resolved = ws.resolve(comp)
    patch_hash = queue_hash(_source(comp).patches)
    values = inputs_mod.tag_values(comp, resolved, patch_hash, "")
    args = {k: inputs_mod.expand(v, values) for k, v in comp.build.args.items()}
    text = _dockerfile_text(ws, comp, resolved)
    bases = _resolve_bases(ws, comp, external_images(text, args, comp.build.contexts))
    return inputs_mod.compute(comp, ws.config, resolved, patch_hash, bases, args), resolved, patch_hash


def decide_one(ws: Workspace, comp: Component, force: bool = False) -> Decision:
    if comp.mirror:
        return Decision(comp.name, "copy", f"mirror {comp.mirror}: copied by digest when missing")
    try:
        inputs, _, _ = inputs_for(ws, comp)
    except ArchliftError as e:
        return Decision(comp.name, "fail", e.message)
    if force:
        return Decision(comp.name, "build", "--force", inputs)
    record = inputs_mod.find_record(ws.client, comp, ws.config, inputs.hash)
    if record:
        return Decision(
            comp.name,
            "skip",
            f"unchanged: inputs {inputs.short} built as {record.index_digest.short()}",
            inputs,
            record,
        )
    return Decision(comp.name, "build", f"no image in the registry for inputs {inputs.short}", inputs)


@contextlib.contextmanager
def workspace(
    config: Config, *, refresh: bool = False, lock: ReleaseLock | None = None, timeout: float = 60.0
) -> Iterator[Workspace]:
    client = RegistryClient(max_connections=32, timeout=timeout)  # several components push at once
    ws = Workspace(config, client, lock, refresh)
    try:
        yield ws
    finally:
        ws.close()
        client.close()


def decide(plan: Plan) -> list[Decision]:
    """Build or skip, and why, for every planned component (resolves sources, asks the registry)."""
    with workspace(plan.config, lock=_read_lock_quietly(Path("dist/release.json"))) as ws:
        return [decide_one(ws, p.component) for p in plan.components]


def _read_lock_quietly(path: Path) -> ReleaseLock | None:
    try:
        return ReleaseLock.read(path) if path.is_file() else None
    except ArchliftError:
        return None


# --- building ----------------------------------------------------------------


def verify_pushed(ws: Workspace, comp: Component, digest: Digest, inputs_hash: str) -> BuildRecord:
    """Read the pushed index back: its digest, and one manifest per wanted platform."""
    client = ws.client
    ref = comp.image.with_digest(digest)
    manifest = client.get_manifest(ref)  # verifies the bytes against the digest
    ws.indexes[digest] = manifest.raw
    platforms: dict[str, Digest] = {}
    attestations: dict[str, Digest] = {}
    for desc in manifest.descriptors():
        if desc.is_attestation:
            subject = desc.annotations.get("vnd.docker.reference.digest", "")
            if subject:
                attestations[subject] = desc.digest
        elif desc.platform:
            platforms[str(desc.platform)] = desc.digest
    wanted = {str(p) for p in comp.platforms}
    if set(platforms) != wanted:
        raise BuildError(
            f"{comp.name}: the pushed index {digest} has platforms {sorted(platforms)}, expected {sorted(wanted)}"
        )
    for platform, d in platforms.items():
        if client.head_manifest(comp.image.with_digest(d)) is None:
            raise BuildError(f"{comp.name}: the registry does not serve the {platform} manifest {d}")
    built_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return BuildRecord(inputs_hash, digest, manifest.media_type, platforms, attestations, built_at)


def finish_one(
    ws: Workspace, planned: PlannedComponent, decision: Decision, built: Digest | BuildError | None, report: Reporter
) -> Outcome:
    """After the bake: push a built component's layout by digest and verify it; copy a mirrored one;
    take a skipped one from its record. Never moves a tag."""
    comp = planned.component
    start = time.monotonic()
    try:
        if decision.action == "fail":
            raise BuildError(decision.reason)  # already names the component
        if comp.mirror:
            release, copied = copy_mirror(ws, comp, report)
            return Outcome(comp.name, "copied" if copied else "present", time.monotonic() - start, release)
        assert decision.inputs is not None
        record, status = decision.record, "skipped"
        if record is None:
            if isinstance(built, BuildError):
                raise built
            assert built is not None
            record = ws.done.get(comp.name)
            if record is None or record.index_digest != built:  # not done while the bake ran
                record = publish_built(ws, comp, built, decision.inputs, report)
            status = "built"
        patch_hash = queue_hash(_source(comp).patches)
        release = _release_entry(ws, comp, ws.resolve(comp), patch_hash, decision.inputs, record)
        return Outcome(comp.name, status, time.monotonic() - start, release)
    except ArchliftError as e:
        return Outcome(comp.name, "failed", time.monotonic() - start, error=e.message)


def publish_built(
    ws: Workspace, comp: Component, digest: Digest, inputs: Inputs, report: Reporter, *, early: bool = False
) -> BuildRecord:
    """Push a built layout by digest, read it back from the registry, and record it (no tag)."""
    push_layout(ws, comp, digest, report, early=early)
    record = verify_pushed(ws, comp, digest, inputs.hash)
    inputs_mod.save_record(ws.client, comp, ws.config, record)
    return record


def push_layout(ws: Workspace, comp: Component, digest: Digest, report: Reporter, *, early: bool = False) -> Digest:
    """Push the image ``digest`` of the OCI layout the bake wrote for ``comp``, by digest (no tag).
    ``early``: while the bake still runs, before buildx writes the layout's index.json (the blobs
    are there); the layout is kept for the check against the bake's metadata."""
    layout = Layout(_layout_dir(ws, comp))
    if early:
        raw = layout.read(digest)  # verified against the digest
        top = Descriptor(Manifest.of(raw).media_type, digest, len(raw))
    else:
        top_or_none = next((d for d in layout.index() if d.digest == digest), None)
        if top_or_none is None:
            raise BuildError(f"{comp.name}: the build reported {digest}, which its OCI layout does not hold")
        top = top_or_none
    report(comp.name, "", f"pushing {digest.short()} by digest")
    push_tree(ws.client, layout, comp.image, top)
    if not early:
        shutil.rmtree(layout.root, ignore_errors=True)
    return digest


def _layout_dir(ws: Workspace, comp: Component) -> Path:
    return ws.root / f"{comp.name}.oci"


def build_all(
    ws: Workspace, todo: list[tuple[PlannedComponent, Decision]], report: Reporter, limit: int
) -> dict[str, Digest | BuildError]:
    """Bake every component that must be built: ``limit`` components per bake (see ``archlift.steps.engine``)."""
    jobs, failed = [], dict[str, Digest | BuildError]()

    def prepare(item: tuple[PlannedComponent, Decision]) -> BuildJob | BuildError:
        comp, inputs = item[0].component, item[1].inputs
        assert inputs is not None
        try:
            return BuildJob(comp, inputs, ws.tree(comp), _layout_dir(ws, comp))
        except ArchliftError as e:  # a patch that does not apply stops only its component
            return e if isinstance(e, BuildError) else BuildError(e.message, hint=e.hint)

    with ThreadPoolExecutor(max_workers=limit) as pool:
        for (planned, _), job in zip(todo, pool.map(prepare, todo), strict=True):
            if isinstance(job, BuildError):
                failed[planned.name] = job
            else:
                jobs.append(job)
    steps = bool(getattr(report, "wants_steps", False))  # BuildKit's step lines only for a live display
    results: dict[str, Digest | BuildError] = dict(failed)
    with ThreadPoolExecutor(max_workers=limit) as pushers:

        def exported(job: BuildJob, digest: Digest) -> None:  # push while the bake goes on
            pushers.submit(_publish_early, ws, job, digest, report)

        for i in range(0, len(jobs), limit):  # at most `limit` components build at once, each batch one bake
            results.update(bake(jobs[i : i + limit], ws.config, ws.root, report, steps=steps, exported=exported))
    return results


def _publish_early(ws: Workspace, job: BuildJob, digest: Digest, report: Reporter) -> None:
    """Best effort: a failure here is done again after the bake, from the same layout."""
    try:
        ws.done[job.comp.name] = publish_built(ws, job.comp, digest, job.inputs, report, early=True)
    except (ArchliftError, OSError, ValueError) as e:
        log.debug("%s: pushing early failed (%s); pushing after the bake", job.comp.name, e)


def _release_entry(
    ws: Workspace, comp: Component, resolved: ResolvedSource, patch_hash: str, inputs: Inputs, record: BuildRecord
) -> ComponentRelease:
    values = inputs_mod.tag_values(comp, resolved, patch_hash, inputs.short)
    root = ws.config.root
    patches = tuple(
        PatchRecord(str(p.relative_to(root)) if p.is_relative_to(root) else str(p), file_sha256(p))
        for p in _source(comp).patches
    )
    return ComponentRelease(
        name=comp.name,
        kind="built",
        repository=comp.image.name,
        index_digest=record.index_digest,
        platforms=dict(record.platforms),
        tags=tuple(inputs_mod.expand(t, values) for t in comp.tags),
        upstream=Upstream(resolved.url, _source(comp).ref or "", resolved.commit, resolved.version),
        patches=patches,
        inputs_hash=inputs.hash,
        built_at=record.built_at,
        media_type=record.media_type,
        attestations=dict(record.attestations),
    )


def copy_mirror(ws: Workspace, comp: Component, report: Reporter) -> tuple[ComponentRelease, bool]:
    """Copy a third-party image into our repository by digest (no tag yet), with the mirror engine;
    returns its release entry and whether anything had to be copied."""
    from .mirror import ImagePlan, MirrorPlan, Target, check, mirror

    assert comp.mirror is not None
    source = comp.mirror
    desc = ws.client.head_manifest(source)
    if desc is None:
        raise BuildError(f"{comp.name}: the mirrored image {source} does not exist")
    target = comp.image.with_digest(desc.digest)
    copied = ws.client.head_manifest(target) is None
    if copied:
        report(comp.name, "", f"copying {source}")
        wanted = tuple(str(p) for p in comp.platforms)
        one = ImagePlan(comp.name, source.with_digest(desc.digest), comp.image, (), wanted)
        plan = MirrorPlan(Target(comp.image.registry), (one,))
        try:
            check(mirror(plan, ws.client))
        except MirrorError:
            # Two runs copying the same image at once (per-platform runners of a split release) can make
            # the registry refuse one of two simultaneous uploads of a blob; the copy is idempotent and
            # a second pass finds what the other run sent.
            report(comp.name, "", "copy refused by the registry; trying once more")
            time.sleep(0.5)
            check(mirror(plan, ws.client))
    platforms = ws.client.index_platforms(target)
    missing = {str(p) for p in comp.platforms} - set(platforms)
    if missing:
        raise BuildError(
            f"{comp.name}: the mirrored image {source} lacks {', '.join(sorted(missing))}",
            hint="mirror an image that ships every platform, or build this component from source",
        )
    release = ComponentRelease(
        name=comp.name,
        kind="mirrored",
        repository=comp.image.name,
        index_digest=desc.digest,
        platforms={p: d for p, d in platforms.items() if p in {str(x) for x in comp.platforms}},
        tags=comp.tags,
        source_image=str(source),
        media_type=desc.media_type,
        built_at="",
    )
    return release, copied


# --- releasing -----------------------------------------------------------------


def move_tags(
    client: RegistryClient,
    releases: list[ComponentRelease],
    report: Reporter,
    known: dict[Digest, bytes] | None = None,
) -> int:
    """Point every tag at its component's index (bytes from ``known`` when read already), components
    in parallel; returns how many tags moved."""

    def one(rel: ComponentRelease) -> int:
        moved, raw = 0, (known or {}).get(rel.index_digest)
        for ref in rel.tag_refs():
            current = client.head_manifest(ref)
            if current is not None and current.digest == rel.index_digest:
                continue
            if raw is None:
                raw = client.get_manifest(ref.with_digest(rel.index_digest)).raw
            client.put_manifest(ref, raw, rel.media_type)
            report(rel.name, "", f"tagged {ref.tag}")
            moved += 1
        return moved

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(one, releases))


@dataclass(frozen=True)
class RunResult:
    outcomes: tuple[Outcome, ...]
    lock: ReleaseLock | None
    tags_moved: int

    @property
    def ok(self) -> bool:
        return all(o.status != "failed" for o in self.outcomes)


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


def execute(
    plan: Plan,
    *,
    lock_path: Path,
    jobs: int | None = None,
    force: bool = False,
    refresh: bool = False,
    by_digest: str | None = None,
    report: Reporter = _quiet,
    timeout: float = 60.0,
) -> RunResult:
    """Run the plan. With ``by_digest`` (a platform, or "all"), move no tag and write a partial lock
    for ``archlift merge``."""
    previous = None if by_digest else _read_lock_quietly(lock_path)
    with workspace(plan.config, refresh=refresh, lock=previous, timeout=timeout) as ws:
        workers = jobs or plan.config.concurrency

        def decide(p: PlannedComponent) -> Decision:
            decision = decide_one(ws, p.component, force)
            report(p.name, "", f"{decision.action}: {decision.reason}")
            return decision

        with ThreadPoolExecutor(max_workers=workers) as pool:
            decisions = list(pool.map(decide, plan.components))
            todo = [(p, d) for p, d in zip(plan.components, decisions, strict=True) if d.action == "build"]
            built = build_all(ws, todo, report, workers)
            outcomes = tuple(
                pool.map(
                    lambda pd: finish_one(ws, pd[0], pd[1], built.get(pd[0].name), report),
                    zip(plan.components, decisions, strict=True),
                )
            )
        if not all(o.release for o in outcomes):
            return RunResult(outcomes, None, 0)
        releases = [o.release for o in outcomes if o.release]
        if by_digest:
            lock = dataclasses.replace(_merge_lock(plan.config, None, releases), partial_platform=by_digest)
            lock.write(lock_path)
            return RunResult(outcomes, lock, 0)
        moved = move_tags(ws.client, releases, report, ws.indexes)
        lock = _merge_lock(plan.config, previous, releases)
        lock.write(lock_path)
        return RunResult(outcomes, lock, moved)


def _merge_lock(config: Config, previous: ReleaseLock | None, releases: list[ComponentRelease]) -> ReleaseLock:
    """The new lock: this run's components, plus earlier entries of components still in images.yaml."""
    components = {}
    if previous:
        components = {n: c for n, c in previous.components.items() if n in config.components}
    components.update({r.name: r for r in releases})
    if previous and previous.components == components:
        return previous
    try:
        name = str(config.path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        name = str(config.path)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ReleaseLock(components=components, config=name, created_at=created)
