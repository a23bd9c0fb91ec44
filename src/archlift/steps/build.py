"""Build: decisions -> one ``BuildResult`` per component, everything pushed by digest, no tag moved.

- ``build``: the components that must be built are baked (``archlift.steps.engine``: one
  ``docker buildx bake`` per batch of ``concurrency`` components, each an OCI layout for all
  its platforms); each layout is pushed by digest as soon as it is written, read back from
  the registry (its digest and one manifest per wanted platform) and recorded under its
  inputs hash. Skipped components take their record; mirrored ones are copied by digest.
- A failure stops only its component, and keeps the error that caused it (its class, exit
  code and hint). Moving tags and writing the lock is the next step, ``archlift.steps.release``.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .. import buildx
from ..config.model import Component, Config
from ..errors import ArchliftError, BuildError, MirrorError
from ..lock import ComponentRelease, PatchRecord, Upstream
from ..oci import RegistryClient
from ..oci.layout import Layout, push_image
from ..refs import Digest, ImageRef, RefError, normalized
from ..ui import Reporter
from . import inputs as inputs_mod
from .decide import Decision, source_of
from .engine import BuildJob, bake
from .inputs import BuildRecord, Inputs
from .patches import file_sha256, queue_hash
from .sources import ResolvedSource
from .trees import WorkTrees

log = logging.getLogger("archlift.steps.build")


@dataclass(frozen=True)
class BuildResult:
    """What happened to one component in this run."""

    name: str
    status: str  # built | skipped | copied | present (mirrored, already there) | failed
    seconds: float  # deciding and building it, pushing it included
    release: ComponentRelease | None = None
    error: ArchliftError | None = None  # failed: the error as it was raised
    index: bytes | None = None  # the index bytes read back from the registry (for tagging)
    warnings: tuple[str, ...] = ()  # for the summary (a mirrored image's binaries of another machine)

    @property
    def message(self) -> str:
        return self.error.message if self.error else ""


def _failed(decision: Decision, error: ArchliftError, started: float) -> BuildResult:
    return BuildResult(decision.name, "failed", decision.seconds + time.monotonic() - started, error=error)


def verify_pushed(
    client: RegistryClient, comp: Component, digest: Digest, inputs_hash: str
) -> tuple[BuildRecord, bytes]:
    """Read the pushed index back: its digest, and one manifest per wanted platform."""
    ref = comp.image.with_digest(digest)
    manifest = client.get_manifest(ref)  # verifies the bytes against the digest
    platforms: dict[str, Digest] = {}
    attestations: dict[str, Digest] = {}
    if not manifest.is_index:  # one platform without attestations: buildx exports a bare manifest
        platforms = client.index_platforms(ref)
    for desc in manifest.descriptors() if manifest.is_index else ():
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
    record = BuildRecord(inputs_hash, digest, manifest.media_type, platforms, attestations, built_at)
    return record, manifest.raw


@dataclass(frozen=True)
class _Pushed:
    record: BuildRecord
    index: bytes
    at: float  # when it was done (time.monotonic)


Pushed = Callable[[str, Path, Digest, ImageRef], None]
"""Called with each OCI layout as soon as its image is pushed by digest (the component, the layout, the
digest, the repository), while the layout is still there: the binaries check reads it
(``archlift.checks.binaries.check_as_pushed``)."""


def push_layout(
    client: RegistryClient, job: BuildJob, digest: Digest, report: Reporter, *, early: bool, pushed: Pushed | None
) -> None:
    """Push the image ``digest`` of the OCI layout the bake wrote for the job, by digest (no tag),
    then hand the layout to ``pushed``. ``early``: while the bake still runs, before buildx writes the
    layout's index.json (the blobs are there); the layout is kept for the check against the bake's
    metadata."""
    layout = Layout(job.layout)
    if early:
        layout.read(digest)  # there, and verified against the digest
    elif all(d.digest != digest for d in layout.index()):
        raise BuildError(f"{job.comp.name}: the build reported {digest}, which its OCI layout does not hold")
    report(job.comp.name, "", f"pushing {digest.short()} by digest")
    push_image(client, layout.root, digest, job.comp.image)
    if pushed is not None:
        pushed(job.comp.name, layout.root, digest, job.comp.image)
    if not early:
        shutil.rmtree(layout.root, ignore_errors=True)


def publish_built(
    client: RegistryClient,
    config: Config,
    job: BuildJob,
    digest: Digest,
    report: Reporter,
    *,
    early: bool = False,
    pushed: Pushed | None = None,
) -> _Pushed:
    """Push a built layout by digest, read it back from the registry, and record it (no tag)."""
    push_layout(client, job, digest, report, early=early, pushed=pushed)
    record, raw = verify_pushed(client, job.comp, digest, job.inputs.hash)
    inputs_mod.save_record(client, job.comp, config, record)
    return _Pushed(record, raw, time.monotonic())


def replaced_names(comp: Component) -> tuple[str, ...]:
    """The lock's ``replaces``: the entries of ``replaces:`` that are image references, as docker
    names them (a tag kept, a digest dropped: it is upstream's, not ours); placeholders such as
    ``RECONCILER_IMAGE_NAME`` are for render only."""
    names: dict[str, None] = {}
    for text in comp.replaces:
        try:
            ref = normalized(text)
        except RefError:
            continue
        names[ref.name + (f":{ref.tag}" if ref.tag else "")] = None
    return tuple(names)


def release_entry(
    comp: Component, config: Config, resolved: ResolvedSource, inputs: Inputs, record: BuildRecord
) -> ComponentRelease:
    """The lock's entry for a built (or skipped) component."""
    source = source_of(comp)
    values = inputs_mod.tag_values(comp, resolved, queue_hash(source.patches), inputs.short)
    root = config.root
    patches = tuple(
        PatchRecord(str(p.relative_to(root)) if p.is_relative_to(root) else str(p), file_sha256(p))
        for p in source.patches
    )
    return ComponentRelease(
        name=comp.name,
        kind="built",
        repository=comp.image.name,
        index_digest=record.index_digest,
        platforms=dict(record.platforms),
        tags=tuple(inputs_mod.expand(t, values) for t in comp.tags),
        upstream=Upstream(resolved.url, source.ref or "", resolved.commit, resolved.version),
        patches=patches,
        inputs_hash=inputs.hash,
        built_at=record.built_at,
        media_type=record.media_type,
        attestations=dict(record.attestations),
        replaces=replaced_names(comp),
    )


def copy_mirror(client: RegistryClient, comp: Component, report: Reporter) -> tuple[ComponentRelease, bool]:
    """Copy a third-party image into our repository by digest (no tag yet), with the mirror engine;
    returns its release entry and whether anything had to be copied."""
    from .mirror import ImagePlan, MirrorPlan, Target, check, mirror

    assert comp.mirror is not None
    source = comp.mirror
    desc = client.head_manifest(source)
    if desc is None:
        raise BuildError(f"{comp.name}: the mirrored image {source} does not exist")
    target = comp.image.with_digest(desc.digest)
    copied = client.head_manifest(target) is None
    if copied:
        report(comp.name, "", f"copying {source}")
        wanted = tuple(str(p) for p in comp.platforms)
        one = ImagePlan(comp.name, source.with_digest(desc.digest), comp.image, (), wanted)
        plan = MirrorPlan(Target(comp.image.registry), (one,))
        try:
            check(mirror(plan, client))
        except MirrorError:
            # Two runs copying the same image at once (per-platform runners of a split release) can make
            # the registry refuse one of two simultaneous uploads of a blob; the copy is idempotent and
            # a second pass finds what the other run sent.
            report(comp.name, "", "copy refused by the registry; trying once more")
            time.sleep(0.5)
            check(mirror(plan, client))
    platforms = client.index_platforms(target)
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
        replaces=replaced_names(comp),
    )
    return release, copied


class _Builds:
    """The bakes of one run and the pushes that follow each export (concurrently)."""

    def __init__(
        self, config: Config, client: RegistryClient, trees: WorkTrees, report: Reporter, pushed: Pushed | None
    ) -> None:
        self.config, self.client, self.trees, self.report = config, client, trees, report
        self.on_pushed = pushed
        self.pushed: dict[str, _Pushed] = {}  # pushed, verified and recorded while the bake ran
        self.started: dict[str, float] = {}
        self._lock = threading.Lock()

    def job(self, decision: Decision) -> BuildJob:
        assert decision.inputs is not None
        comp = decision.component
        tree = self.trees.tree(source_of(comp), comp.name)
        return BuildJob(comp, decision.inputs, tree, self.trees.root / f"{comp.name}.oci")  # the OCI layout

    def run(self, jobs: list[BuildJob], limit: int) -> dict[str, Digest | BuildError]:
        if not jobs:
            return {}
        # the builder, once: can it build every platform wanted, and is buildx new enough?
        buildx.preflight(self.config.builder, sorted({str(p) for j in jobs for p in j.comp.platforms}))
        steps = bool(getattr(self.report, "wants_steps", False))  # BuildKit's step lines only for a live display
        results: dict[str, Digest | BuildError] = {}
        with ThreadPoolExecutor(max_workers=limit) as pushers:

            def exported(job: BuildJob, digest: Digest) -> None:  # push while the bake goes on
                pushers.submit(self._push_early, job, digest)

            for i in range(0, len(jobs), limit):  # at most `limit` components at once, each batch one bake
                batch = jobs[i : i + limit]
                now = time.monotonic()
                for job in batch:
                    self.started[job.comp.name] = now
                workdir = self.trees.root
                results.update(bake(batch, self.config, workdir, self.report, steps=steps, exported=exported))
        return results

    def _push_early(self, job: BuildJob, digest: Digest) -> None:
        """Best effort: a failure here is done again after the bake, from the same layout."""
        try:
            pushed = publish_built(
                self.client, self.config, job, digest, self.report, early=True, pushed=self.on_pushed
            )
        except (ArchliftError, OSError, ValueError) as e:
            log.debug("%s: pushing early failed (%s); pushing after the bake", job.comp.name, e)
            return
        with self._lock:
            self.pushed[job.comp.name] = pushed

    def finish(self, decision: Decision, job: BuildJob, built: Digest | BuildError) -> BuildResult:
        """After the bake: the component pushed by digest, verified and recorded."""
        started = self.started.get(decision.name, time.monotonic())
        if isinstance(built, BuildError):
            return _failed(decision, built, started)
        with self._lock:
            pushed = self.pushed.get(decision.name)
        try:
            if pushed is None or pushed.record.index_digest != built:  # not done while the bake ran
                pushed = publish_built(self.client, self.config, job, built, self.report, pushed=self.on_pushed)
            assert decision.inputs is not None and decision.resolved is not None
            release = release_entry(job.comp, self.config, decision.resolved, decision.inputs, pushed.record)
        except ArchliftError as e:
            return _failed(decision, e, started)
        seconds = decision.seconds + pushed.at - started
        return BuildResult(decision.name, "built", seconds, release, index=pushed.index)


def build(
    decisions: tuple[Decision, ...],
    *,
    config: Config,
    client: RegistryClient,
    trees: WorkTrees,
    report: Reporter,
    jobs: int | None = None,
    pushed: Pushed | None = None,
) -> tuple[BuildResult, ...]:
    """Carry out every decision; results in the decisions' order. Never moves a tag. ``pushed`` is
    called with each built layout as soon as it is pushed (see ``Pushed``)."""
    limit = jobs or config.concurrency
    builds = _Builds(config, client, trees, report, pushed)
    results: dict[str, BuildResult] = {}
    to_build: list[tuple[Decision, BuildJob]] = []

    def prepare(decision: Decision) -> BuildJob | BuildResult:
        started = time.monotonic()
        try:
            return builds.job(decision)
        except ArchliftError as e:  # a patch that does not apply stops only its component
            return _failed(decision, e, started)

    wanted = [d for d in decisions if d.action == "build"]
    with ThreadPoolExecutor(max_workers=limit) as pool:
        for decision, prepared in zip(wanted, pool.map(prepare, wanted), strict=True):
            if isinstance(prepared, BuildResult):
                results[decision.name] = prepared
            else:
                to_build.append((decision, prepared))
    baked = builds.run([job for _, job in to_build], limit)

    def finish(decision: Decision) -> BuildResult:
        if decision.name in results:
            return results[decision.name]
        started = time.monotonic()
        if decision.action == "fail":
            assert decision.error is not None
            return _failed(decision, decision.error, started)
        if decision.action == "copy":
            try:
                release, copied = copy_mirror(client, decision.component, report)
            except ArchliftError as e:
                return _failed(decision, e, started)
            status = "copied" if copied else "present"
            return BuildResult(decision.name, status, decision.seconds + time.monotonic() - started, release)
        if decision.action == "skip":
            assert decision.inputs is not None and decision.record is not None and decision.resolved is not None
            release = release_entry(decision.component, config, decision.resolved, decision.inputs, decision.record)
            return BuildResult(decision.name, "skipped", decision.seconds, release)
        job = next(j for d, j in to_build if d.name == decision.name)
        return builds.finish(decision, job, baked[decision.name])

    with ThreadPoolExecutor(max_workers=limit) as pool:
        return tuple(pool.map(finish, decisions))
