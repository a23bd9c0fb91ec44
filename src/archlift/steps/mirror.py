"""Copy every image of a release into another registry, digests preserved.

lock + target -> ``MirrorPlan`` (pure, ``plan_mirror``) -> ``mirror()`` ->
``MirrorResult``. What is copied for each component: its whole index (platform
manifests, configs, layers, BuildKit attestation manifests), what refers to
it (OCI referrers when the source offers the API; ``sha256-<hex>`` referrer
tags and cosign ``sha256-<hex>.sig/.att/.sbom`` tags otherwise), then the
lock's tags, moved only once everything of that image is on the target.

How it stays fast: an image whose index is already on the target costs only
manifest HEADs (its tags, when they point at it, prove it); each blob is
HEADed once per target repository (or, once the target has mounted a blob,
asked with a mount from that repository itself: one request either way), sent
once even when many images share it, and mounted (``?mount=&from=``) into the
other repositories of the target registry; blobs stream GET -> PUT through a
bounded thread pool, verified while streaming, never held whole in memory.
Verification of a target against the release is ``archlift.checks.verify``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, MirrorError, RegistryError
from ..lock import ComponentRelease, ReleaseLock
from ..oci import Descriptor, DigestMismatch, Manifest, RegistryClient, cosign_tag_of
from ..oci.model import ATTESTATION_FOR
from ..oci.walk import Walked, walk
from ..refs import Digest, ImageRef, Platform, RefError

log = logging.getLogger("archlift.steps.mirror")


# ---------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class Target:
    """``REGISTRY[/PREFIX]``: where images go; each keeps its repository path under the prefix."""

    registry: str
    prefix: str = ""

    @classmethod
    def parse(cls, text: str, option: str = "--to") -> Target:
        clean = text.strip().strip("/")
        host, _, prefix = clean.partition("/")
        try:
            ref = ImageRef.parse(clean if "/" in clean else f"{clean}/x")
        except RefError as e:
            raise ConfigError(f"{option} {text}: {e}") from None
        if ref.registry != host or ref.tag or ref.digest:
            raise ConfigError(
                f"{option} {text}: expected REGISTRY[/PREFIX], such as registry.internal:5000/mirror "
                "(a registry host with a '.' or ':' or 'localhost', then an optional path; no tag or digest)"
            )
        return cls(host, prefix)

    def map(self, repository: str) -> ImageRef:
        """Where ``registry/path`` (a lock's repository) goes on this target."""
        src = ImageRef.parse(repository)
        return src.in_registry(self.registry, self.prefix)

    def __str__(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry


@dataclass(frozen=True)
class ImagePlan:
    name: str
    source: ImageRef  # pinned by the lock's index digest
    target: ImageRef  # the repository on the target (no tag, no digest)
    tags: tuple[str, ...]
    platforms: tuple[str, ...]  # what the lock records
    manifests: tuple[Digest, ...] = ()  # the lock's platform and attestation manifests (signature subjects)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": str(self.source),
            "target": self.target.name,
            "tags": list(self.tags),
            "platforms": list(self.platforms),
        }


@dataclass(frozen=True)
class MirrorPlan:
    target: Target
    images: tuple[ImagePlan, ...]
    platforms: tuple[str, ...] = ()  # a filter; () keeps every platform

    def to_json(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "platforms": list(self.platforms),
            "images": [i.to_json() for i in self.images],
        }


@dataclass(frozen=True)
class Artifact:
    """A published OCI artifact that goes along with the images (the manifests artifact)."""

    name: str
    ref: ImageRef  # repository:tag@digest

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "ref": str(self.ref)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        ref = ImageRef.parse(str(data["ref"]))
        if ref.digest is None or ref.tag is None:
            raise ValueError(f"{ref} is not pinned as repository:tag@digest")
        return cls(str(data["name"]), ref)


def read_artifacts(path: Path) -> list[Artifact]:
    """The artifacts ``archlift publish`` recorded (``dist/manifests-artifact.json``); [] without the file."""
    try:
        data = json.loads(path.read_text())
        return [
            Artifact.from_json({"name": f"manifests ({key})", "ref": entry["ref"]})
            for key, entry in sorted((data.get("artifacts") or {}).items())
        ]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError, AttributeError, RefError) as e:
        raise ConfigError(f"{path}: not a valid publish record ({e})") from None


def plan_mirror(
    lock: ReleaseLock,
    target: Target,
    platforms: Sequence[str] = (),
    components: Sequence[str] = (),
    *,
    onto_itself: bool = False,
    artifacts: Sequence[Artifact] = (),
) -> MirrorPlan:
    """Which images (and ``artifacts``) go where (pure: no registry is asked). ``onto_itself``
    allows a target equal to the source (an import restores a release where it came from)."""
    wanted = []
    for p in platforms:
        try:
            wanted.append(str(Platform.parse(p)))
        except RefError as e:
            raise ConfigError(f"--platform {p}: {e}") from None
    chosen: Iterable[ComponentRelease] = (
        [lock.component(n) for n in components] if components else lock.components.values()
    )
    images = []
    for comp in sorted(chosen, key=lambda c: c.name):
        dst = target.map(comp.repository)
        src = ImageRef.parse(comp.repository)
        if src.registry == dst.registry and src.repository == dst.repository and not onto_itself:
            raise ConfigError(f"--to {target}: component '{comp.name}' would be copied onto itself ({src.name})")
        if wanted and not set(wanted) & set(comp.platforms):
            raise ConfigError(
                f"--platform {', '.join(wanted)}: component '{comp.name}' has none of these "
                f"(it has {', '.join(sorted(comp.platforms))})"
            )
        children = tuple(sorted({*comp.platforms.values(), *comp.attestations.values()}))
        images.append(ImagePlan(comp.name, comp.ref, dst, comp.tags, tuple(sorted(comp.platforms)), children))
    for art in artifacts:
        assert art.ref.digest is not None and art.ref.tag is not None
        dst = target.map(art.ref.name)
        if (art.ref.registry, art.ref.repository) == (dst.registry, dst.repository) and not onto_itself:
            raise ConfigError(f"--to {target}: artifact {art.ref} would be copied onto itself")
        images.append(ImagePlan(art.name, art.ref.with_digest(art.ref.digest), dst, (art.ref.tag,), ()))
    return MirrorPlan(target, tuple(images), tuple(wanted))


# ---------------------------------------------------------------------- the result
@dataclass(frozen=True)
class ImageResult:
    name: str
    source: str
    target: str  # repository@digest on the target
    digest: Digest  # the index digest on the target (differs from the source only with --platform)
    platforms: tuple[str, ...]
    dropped_platforms: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tags_moved: tuple[str, ...] = ()
    extra_tags: tuple[str, ...] = ()  # cosign / referrer tags copied
    referrers: int = 0
    up_to_date: bool = False
    blobs: int = 0
    blobs_sent: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    bytes_sent: int = 0
    manifests_pushed: int = 0
    error: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "target": self.target,
            "digest": str(self.digest),
            "platforms": list(self.platforms),
            "dropped_platforms": list(self.dropped_platforms),
            "tags": list(self.tags),
            "tags_moved": list(self.tags_moved),
            "extra_tags": list(self.extra_tags),
            "referrers": self.referrers,
            "up_to_date": self.up_to_date,
            "blobs": {
                "total": self.blobs,
                "sent": self.blobs_sent,
                "skipped": self.blobs_skipped,
                "mounted": self.blobs_mounted,
            },
            "bytes_sent": self.bytes_sent,
            "manifests_pushed": self.manifests_pushed,
            "error": self.error,
        }


@dataclass(frozen=True)
class MirrorResult:
    target: str
    images: tuple[ImageResult, ...]
    seconds: float
    requests: int = 0

    @property
    def ok(self) -> bool:
        return not any(i.error for i in self.images)

    @property
    def bytes_sent(self) -> int:
        return sum(i.bytes_sent for i in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
            "blobs_sent": sum(i.blobs_sent for i in self.images),
            "blobs_skipped": sum(i.blobs_skipped for i in self.images),
            "blobs_mounted": sum(i.blobs_mounted for i in self.images),
            "images": [i.to_json() for i in self.images],
        }

    def summary(self) -> str:
        mb = self.bytes_sent / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        fresh = sum(1 for i in self.images if i.up_to_date)
        lines = [
            f"mirrored {len(self.images)} image(s) to {self.target} in {self.seconds:.1f} s: "
            f"{sum(i.blobs_sent for i in self.images)} blob(s) sent ({mb:.1f} MB, {rate:.1f} MB/s), "
            f"{sum(i.blobs_mounted for i in self.images)} mounted, {sum(i.blobs_skipped for i in self.images)} "
            f"already there; {fresh} image(s) were up to date"
        ]
        for i in self.images:
            state = f"FAILED: {i.error}" if i.error else ("up to date" if i.up_to_date else "copied")
            lines.append(f"  {i.name}: {i.target} [{state}]")
            if i.dropped_platforms:
                lines.append(f"    dropped {', '.join(i.dropped_platforms)}: the index digest on the target is new")
        return "\n".join(lines)


class Progress(Protocol):
    def start(self, total_bytes: int) -> None: ...
    def advance(self, n: int) -> None: ...


class NoProgress:
    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


# ---------------------------------------------------------------------- the work
Tree = Walked  # manifests in push order (children first) and the blobs they need


@dataclass(eq=False)
class Work:
    """One image on its way: what the source has and the target lacks."""

    plan: ImagePlan
    index: Manifest | None = None
    dropped: tuple[str, ...] = ()
    up_to_date: bool = False
    tree: Tree = field(default_factory=Tree)  # the index and what it holds, when the target lacks it
    extras: list[tuple[str, Tree]] = field(default_factory=list)  # tag ("" = by digest) -> tree, top last
    referrers: int = 0
    tags_to_move: list[str] = field(default_factory=list)
    sent: int = 0
    skipped: int = 0
    mounted: int = 0
    bytes_sent: int = 0
    manifests_pushed: int = 0
    error: str = ""
    remaining: int = 0  # blobs not yet handled
    lock: threading.Lock = field(default_factory=threading.Lock)

    def fail(self, message: str) -> None:
        with self.lock:
            self.error = self.error or message

    def count(self, *, sent: int = 0, skipped: int = 0, mounted: int = 0, nbytes: int = 0) -> None:
        """Blob counters; several worker threads count for one image at once."""
        with self.lock:
            self.sent += sent
            self.skipped += skipped
            self.mounted += mounted
            self.bytes_sent += nbytes

    def all_blobs(self) -> dict[Digest, Descriptor]:
        out = dict(self.tree.blobs)
        for _, t in self.extras:
            out.update(t.blobs)
        return out


@dataclass(eq=False)
class _BlobState:
    """One digest across the images that need it."""

    desc: Descriptor
    pending: list[Work] = field(default_factory=list)  # images waiting for it (guarded by the mirror's lock)
    home: ImageRef | None = None  # a target repository that has it: mount from there
    done: set[str] = field(default_factory=set)  # target repositories that have it


SMALL_BLOB = 1 << 20


def _order(desc: Descriptor) -> tuple[bool, int]:
    """Small blobs first, then the biggest first."""
    return (desc.size >= SMALL_BLOB, -desc.size if desc.size >= SMALL_BLOB else desc.size)


def collect(fetch: Callable[[Digest], Manifest], manifest: Manifest, tree: Tree, seen: set[Digest]) -> None:
    """Add ``manifest``, everything below it first, to ``tree`` (``archlift.oci.walk.walk``:
    no recursion, a bounded depth and size)."""
    walk(fetch, manifest, seen, into=tree)


def filter_platforms(index: Manifest, platforms: Sequence[str]) -> tuple[Manifest, tuple[str, ...]]:
    """The index with only ``platforms`` (and the attestations of those); the dropped platforms."""
    if not platforms or not index.is_index:
        return index, ()
    doc = index.json()
    kept, dropped, kept_digests = [], [], set()
    for raw, d in zip(doc.get("manifests") or [], index.descriptors(), strict=True):
        if d.platform is not None and not d.is_attestation and str(d.platform) not in platforms:
            dropped.append(str(d.platform))
            continue
        kept.append((raw, d))
        kept_digests.add(str(d.digest))
    if not dropped:
        return index, ()
    manifests = [
        raw for raw, d in kept if not d.is_attestation or d.annotations.get(ATTESTATION_FOR, "") in kept_digests
    ]
    new = Manifest.of(json.dumps({**doc, "manifests": manifests}, indent=2).encode(), index.media_type)
    return new, tuple(sorted(dropped))


class Source(Protocol):
    """Where images come from: a registry (``RegistrySource``) or a bundle (``archlift.steps.airgap``)."""

    def manifest(self, image: ImagePlan, digest: Digest) -> Manifest:
        """A manifest of ``image``, verified."""
        ...

    def linked(self, image: ImagePlan, subjects: set[Digest]) -> tuple[list[Digest], list[tuple[str, Digest]]]:
        """What refers to ``subjects``: referrer manifests by digest, and ``(tag, digest)`` of referrer/cosign tags."""
        ...

    def send(self, image: ImagePlan, dst: ImageRef, desc: Descriptor, location: str | None, progress: Progress) -> int:
        """Upload one blob to ``dst`` (at an open upload ``location`` if given); the bytes sent."""
        ...

    def mount_from(self, image: ImagePlan, dst: ImageRef) -> ImageRef | None:
        """A repository in ``dst``'s registry that holds the image's blobs already, if any."""
        ...


class RegistrySource:
    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def manifest(self, image: ImagePlan, digest: Digest) -> Manifest:
        return self.client.get_manifest(image.source.with_digest(digest))

    def linked(self, image: ImagePlan, subjects: set[Digest]) -> tuple[list[Digest], list[tuple[str, Digest]]]:
        c, src = self.client, image.source
        referrers: set[Digest] = set()
        if c.referrers_api(src):
            for subject in sorted(subjects):
                referrers.update(d.digest for d in c.referrers(src, subject))
        tagged = []
        for tag in sorted(c.list_tags(src)):
            points_at = cosign_tag_of(tag)
            if points_at is None or points_at not in subjects:
                continue
            desc = c.head_manifest(src.with_tag(tag))
            if desc is not None:
                tagged.append((tag, desc.digest))
        return sorted(referrers), tagged

    def send(self, image: ImagePlan, dst: ImageRef, desc: Descriptor, location: str | None, progress: Progress) -> int:
        return self.client.copy_blob(image.source, dst, desc, location=location, progress=progress.advance)

    def mount_from(self, image: ImagePlan, dst: ImageRef) -> ImageRef | None:
        return image.source if image.source.registry == dst.registry else None


class _Mirror:
    def __init__(self, plan: MirrorPlan, source: Source, client: RegistryClient, jobs: int, progress: Progress) -> None:
        self.plan = plan
        self.source = source
        self.client = client
        self.jobs = max(1, jobs)
        self.progress = progress
        self._cond = threading.Condition()
        self._states: dict[Digest, _BlobState] = {}
        self._finished = 0
        self._total = 0
        self._crash: BaseException | None = None
        self._stop = threading.Event()
        self._discoveries = 0

    # --- discovery (per image) ---------------------------------------
    def discover(self, w: Work) -> None:
        """What of the image the target lacks. An image whose index is there already
        costs manifest checks only (and one tag list of the source, for new signatures)."""
        c, dst, image = self.client, w.plan.target, w.plan
        assert image.source.digest is not None

        def fetch(d: Digest) -> Manifest:
            return self.source.manifest(image, d)

        # Without a platform filter the index keeps its digest: tags that point at it prove it is there.
        tagged_at = {} if self.plan.platforms else {t: c.head_manifest(dst.with_tag(t)) for t in image.tags}
        tags_prove_it = bool(tagged_at) and all(d and d.digest == image.source.digest for d in tagged_at.values())
        if not self.plan.platforms and (
            tags_prove_it or c.head_manifest(dst.with_digest(image.source.digest)) is not None
        ):
            subjects = {image.source.digest, *image.manifests}
            if not image.manifests:  # not known from the lock: ask
                w.index = fetch(image.source.digest)
                subjects |= {d.digest for d in w.index.descriptors()}
            index_digest = image.source.digest
        else:
            source_index = fetch(image.source.digest)
            w.index, w.dropped = filter_platforms(source_index, self.plan.platforms)
            unchanged = not self.plan.platforms  # its HEAD above said it is missing
            if unchanged or c.head_manifest(dst.with_digest(w.index.digest)) is None:
                seen: set[Digest] = set()
                if w.index is not source_index:
                    for d in w.index.descriptors():
                        collect(fetch, fetch(d.digest), w.tree, seen)
                    w.tree.manifests.append(w.index)
                else:
                    collect(fetch, w.index, w.tree, seen)
            subjects = {source_index.digest, w.index.digest} | {d.digest for d in w.index.descriptors()}
            index_digest = w.index.digest
        referrers, tagged = self.source.linked(image, subjects)
        for digest in referrers:
            w.referrers += 1
            if c.head_manifest(dst.with_digest(digest)) is None:
                tree = Tree()
                collect(fetch, fetch(digest), tree, set())
                w.extras.append(("", tree))
        for tag, digest in tagged:
            w.referrers += 1
            have = c.head_manifest(dst.with_tag(tag))
            if have is None or have.digest != digest:
                tree = Tree()
                collect(fetch, fetch(digest), tree, set())
                w.extras.append((tag, tree))
        for tag in image.tags:
            have = tagged_at[tag] if tag in tagged_at else c.head_manifest(dst.with_tag(tag))
            if have is None or have.digest != index_digest:
                w.tags_to_move.append(tag)
        if w.tags_to_move and w.index is None:
            w.index = fetch(index_digest)
        w.up_to_date = not (w.tags_to_move or w.tree.manifests or w.extras)

    # --- blobs (per digest, across images) -----------------------------
    def blob(self, st: _BlobState, users: list[Work]) -> None:
        """One blob into every target repository that needs it: a HEAD in each (what is
        there is skipped), then one upload, or none when some repository of the target
        registry has it already, and a cross-repository mount into the others. (Into a
        registry seen to honour mounts, a blob for one repository asks with a mount
        from that repository instead of the HEAD.)"""
        c, desc = self.client, st.desc
        by_repo: dict[str, list[Work]] = {}
        for w in users:
            by_repo.setdefault(w.plan.target.repository, []).append(w)
        origin = self.source.mount_from(users[0].plan, users[0].plan.target)

        def settle(works: list[Work], **counter: int) -> None:
            works[0].count(**counter)
            for other in works[1:]:
                other.count(skipped=1)
            for _ in works:
                self.progress.advance(desc.size)
            st.done.add(works[0].plan.target.repository)

        def failed(works: list[Work], e: RegistryError) -> None:
            message = e.message if isinstance(e, DigestMismatch) else f"blob {desc.digest.short()}: {e.message}"
            for other in works:
                other.fail(message)

        missing: list[list[Work]] = []
        self_mount = False
        for repo, works in by_repo.items():
            if repo in st.done:  # an earlier image with the same target repository brought it
                settle(works, skipped=1)
            elif st.home is not None:  # known elsewhere in the target: a mount will do
                missing.append(works)
            elif len(by_repo) == 1 and c.honours_mounts(works[0].plan.target.registry):
                # One request for both: a mount from the repository itself answers 201 when
                # the blob is there, else opens the upload session the blob is sent to.
                missing.append(works)
                self_mount = True
            else:
                try:
                    if c.blob_exists(works[0].plan.target, desc.digest):
                        settle(works, skipped=1)
                        st.home = works[0].plan.target
                    else:
                        missing.append(works)
                except RegistryError as e:
                    failed(works, e)
        for works in missing:
            w = works[0]
            dst = w.plan.target
            home = st.home or origin or (dst if self_mount else None)
            try:
                location: str | None = None
                if home is not None:
                    location = c.start_upload(dst, mount=desc.digest, mount_from=home)
                    if location is None:
                        settle(works, **({"skipped": 1} if home == dst else {"mounted": 1}))
                        st.home = st.home or dst
                        continue
                n = self.source.send(w.plan, dst, desc, location, self.progress)
                settle(works, sent=1, nbytes=n)
                st.home = st.home or dst
            except RegistryError as e:
                failed(works, e)

    # --- manifests and tags (per image) --------------------------------
    def push(self, w: Work) -> None:
        if w.error:
            return
        c, dst = self.client, w.plan.target
        index_with_tag = bool(w.tags_to_move) and any(m is w.index for m in w.tree.manifests)
        try:
            for m in w.tree.manifests:
                if index_with_tag and m is w.index:  # its first tag push below brings it
                    continue
                c.put_manifest(dst.with_digest(m.digest), m.raw, m.media_type)
                w.manifests_pushed += 1
            for tag, tree in w.extras:
                for n, m in enumerate(tree.manifests):
                    top = n == len(tree.manifests) - 1
                    c.put_manifest(dst.with_tag(tag) if top and tag else dst.with_digest(m.digest), m.raw, m.media_type)
                    w.manifests_pushed += 1
            # only now, with everything of the image present, move its tags
            for n, tag in enumerate(w.tags_to_move):
                assert w.index is not None
                c.put_manifest(dst.with_tag(tag), w.index.raw, w.index.media_type)
                if n == 0 and index_with_tag:
                    w.manifests_pushed += 1
        except RegistryError as e:
            w.fail(e.message)

    # --- the pipeline ----------------------------------------------------
    # Manifests (discovery, then pushes) run on a pool of their own; blobs on the
    # ``jobs`` pool once every image is discovered (only then is it known which
    # blobs images share, and which target repositories may have one already).
    # One task per digest serves every image that needs the blob, so each is sent
    # once. Blobs go small first (an image's configs and attestations are quick
    # and let its manifests go early), then biggest first (the copy ends evenly).
    # An image's manifests and tags go as soon as its last blob is there, while
    # other images' blobs are still copying.
    def _spawn(self, pool: ThreadPoolExecutor, fn: Callable[..., None], *args: Any) -> None:
        def guarded() -> None:
            if self._stop.is_set():  # interrupted: start nothing new
                return
            try:
                fn(*args)
            except BaseException as e:  # a bug: keep it, finish the bookkeeping, raise it at the end
                with self._cond:
                    self._crash = self._crash or e
                    self._finished = len(self.plan.images)
                    self._cond.notify_all()
                raise

        if not self._stop.is_set():
            pool.submit(guarded)

    def _discovered(self, w: Work) -> None:
        try:
            self.discover(w)
        except RegistryError as e:
            w.fail(e.message)
        blobs = {} if w.error else w.all_blobs()
        start: list[_BlobState] = []
        with self._cond:
            w.remaining = len(blobs)
            self._total += sum(d.size for d in blobs.values())
            for digest, desc in blobs.items():
                self._states.setdefault(digest, _BlobState(desc)).pending.append(w)
            self._discoveries += 1
            if self._discoveries == len(self.plan.images):
                start = sorted(self._states.values(), key=lambda st: _order(st.desc))
        self.progress.start(self._total)
        if not blobs:
            self._spawn(self._meta_pool, self._pushed, w)
        for st in start:
            self._spawn(self._blob_pool, self._blob_task, st)

    def _blob_task(self, st: _BlobState) -> None:
        batch, st.pending = st.pending, []
        self.blob(st, batch)
        for w in batch:
            with self._cond:
                w.remaining -= 1
                last = w.remaining == 0
            if last:
                self._spawn(self._meta_pool, self._pushed, w)

    def _pushed(self, w: Work) -> None:
        self.push(w)
        with self._cond:
            self._finished += 1
            self._cond.notify_all()

    def run(self) -> MirrorResult:
        start = time.monotonic()
        requests_before = self.client.requests
        works = [Work(p) for p in self.plan.images]
        self._blob_pool = ThreadPoolExecutor(self.jobs, thread_name_prefix="mirror-blob")
        self._meta_pool = ThreadPoolExecutor(8, thread_name_prefix="mirror-meta")
        try:
            for w in works:
                self._spawn(self._meta_pool, self._discovered, w)
            with self._cond:
                self._cond.wait_for(lambda: self._finished >= len(works))
        except BaseException:  # Ctrl-C: no new copies, no tag moves; copies under way end on their own
            self._stop.set()
            raise
        finally:
            for pool in (self._meta_pool, self._blob_pool):
                pool.shutdown(wait=not self._stop.is_set(), cancel_futures=self._stop.is_set())
        if self._crash is not None:
            raise self._crash
        return MirrorResult(
            str(self.plan.target),
            tuple(self._result(w) for w in works),
            time.monotonic() - start,
            self.client.requests - requests_before,
        )

    def _result(self, w: Work) -> ImageResult:
        digest = w.index.digest if w.index else w.plan.source.digest
        assert digest is not None
        platforms = (
            tuple(sorted(str(d.platform) for d in w.index.descriptors() if d.platform and not d.is_attestation))
            if w.index and w.index.is_index
            else w.plan.platforms
        )
        return ImageResult(
            name=w.plan.name,
            source=str(w.plan.source),
            target=str(w.plan.target.with_digest(digest)),
            digest=digest,
            platforms=platforms,
            dropped_platforms=w.dropped,
            tags=w.plan.tags,
            tags_moved=tuple(w.tags_to_move) if not w.error else (),
            extra_tags=tuple(t for t, _ in w.extras if t),
            referrers=w.referrers,
            up_to_date=w.up_to_date and not w.error,
            blobs=len(w.all_blobs()),
            blobs_sent=w.sent,
            blobs_skipped=w.skipped,
            blobs_mounted=w.mounted,
            bytes_sent=w.bytes_sent,
            manifests_pushed=w.manifests_pushed,
            error=w.error,
        )


def mirror(
    plan: MirrorPlan,
    client: RegistryClient,
    *,
    jobs: int = 8,
    progress: Progress | None = None,
    source: Source | None = None,
) -> MirrorResult:
    """Run the plan with ``client`` for the target (and the source registries, unless
    ``source`` is given). Failures are per image (``ImageResult.error``); see ``check``."""
    return _Mirror(plan, source or RegistrySource(client), client, jobs, progress or NoProgress()).run()


def check(result: MirrorResult) -> None:
    """Raise ``MirrorError`` naming every image that failed."""
    failed = [i for i in result.images if i.error]
    if failed:
        raise MirrorError(
            f"{len(failed)} of {len(result.images)} image(s) were not mirrored to {result.target}; "
            "their tags were not moved:\n" + "\n".join(f"  {i.name}: {i.error}" for i in failed),
            hint="run the same command again: what is already there is skipped",
        )
