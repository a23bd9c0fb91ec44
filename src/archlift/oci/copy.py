"""The one copy: images from a ``Source`` store to a ``Target`` store, digests preserved.

``copy(images, source, target)`` -> one ``ImageResult`` per ``ImagePlan``. It is
the mirror (registry -> registry), the export (registry -> layout archive), the
import (archive -> registry), the build's push (layout directory -> registry) and
publish (layout directory -> registry); stores are in ``archlift.oci.store``.
What is copied for each image: its whole tree (platform manifests, configs,
layers, BuildKit attestation manifests), what refers to it (referrers, and
cosign / referrers-schema ``sha256-<hex>[.sig|.att|.sbom]`` tags), then its tags.

How it stays fast and correct:
- an image whose index is on the target already costs manifest checks only (its
  tags, when they point at it, prove it);
- each blob is checked once per target repository (or, in a registry seen to
  mount, asked with a mount from that repository itself: one request either
  way), sent once even when many images share it, and mounted into the other
  repositories (and from the source, when both are one registry); a refused
  mount is an upload;
- blobs go small first (configs and attestations: an image's manifests can go
  early), then the biggest first (the copy ends evenly), through a pool of
  ``jobs`` threads, verified while they stream, never whole in memory;
- manifests go children first, as soon as an image's blobs are there; tags go
  last, only once everything of the image is there (``tags_together``: only
  once everything of every image is there, and not at all when one failed);
- Ctrl-C starts nothing new and moves no more tags; a copy run again sends only
  what is missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import RegistryError
from ..refs import Digest, ImageRef
from .client import DigestMismatch
from .model import ATTESTATION_FOR, Descriptor, Manifest
from .store import Source, Target
from .walk import Walked, walk


# ---------------------------------------------------------------------- in and out
@dataclass(frozen=True)
class ImagePlan:
    name: str
    source: ImageRef  # pinned by the index digest, in the source store
    target: ImageRef  # the repository in the target store (no tag, no digest)
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
class ImageResult:
    name: str
    source: str
    target: str  # repository@digest on the target
    digest: Digest  # the index digest on the target (differs from the source only with a platform filter)
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


class Progress(Protocol):
    def start(self, total_bytes: int) -> None: ...
    def advance(self, n: int) -> None: ...


class NoProgress:
    def start(self, total_bytes: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass


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


# ---------------------------------------------------------------------- the work
@dataclass(eq=False)
class Work:
    """One image on its way: what the source has and the target lacks."""

    plan: ImagePlan
    rank: int = 0  # its place in the copy: its blobs go before those of the images after it
    index: Manifest | None = None
    dropped: tuple[str, ...] = ()
    up_to_date: bool = False
    tree: Walked = field(default_factory=Walked)  # the index and what it holds, when the target lacks it
    extras: list[tuple[str, Walked]] = field(default_factory=list)  # tag ("" = by digest) -> tree, top last
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

    @property
    def moves_tags(self) -> bool:
        return bool(self.tags_to_move) or any(tag for tag, _ in self.extras)


@dataclass(eq=False)
class _BlobState:
    """One digest across the images that need it."""

    desc: Descriptor
    pending: list[Work] = field(default_factory=list)  # images waiting for it (guarded by the copy's lock)


_Task = tuple[tuple[Any, ...], Callable[..., None], tuple[Any, ...]]  # (priority, function, its arguments)

SMALL_BLOB = 1 << 20
LOOKED_FOR_ONCE = 64 << 10
"""A blob smaller than this that several target repositories need is looked for in one of them only
(the first by name), sent there when it lacks it, and mounted into the others: sending a few kB once
more (when another repository had it after all) costs less than asking every repository first."""


def _order(desc: Descriptor) -> tuple[bool, int]:
    """Small blobs first, then the biggest first."""
    return (desc.size >= SMALL_BLOB, -desc.size if desc.size >= SMALL_BLOB else desc.size)


class _Workers:
    """Worker threads that take the task of the smallest priority first (a ``ThreadPoolExecutor``
    takes them in the order they came): a blob that every image waits for goes before the rest, and
    each image's own blobs (and its mounts) go together, so that images finish one after the other
    while the others copy. Equal priorities keep their order."""

    _LAST = (9,)  # after every task: the end of a worker

    def __init__(self, workers: int, name: str) -> None:
        self._queue: queue.PriorityQueue[tuple[tuple[Any, ...], int, Callable[[], None] | None]] = queue.PriorityQueue()
        self._seq = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{n}") for n in range(workers)]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[[], None], priority: tuple[Any, ...]) -> None:
        self._queue.put((priority, next(self._seq), fn))

    def _work(self) -> None:
        while True:
            _, _, fn = self._queue.get()
            if fn is None:
                return
            with contextlib.suppress(BaseException):  # the task keeps what went wrong (``_Copy._spawn``)
                fn()

    def shutdown(self, *, wait: bool, cancel: bool) -> None:
        """End the workers once the tasks queued are done (``cancel``: the tasks not yet started are
        dropped); ``wait``: return only then."""
        if cancel:
            with contextlib.suppress(queue.Empty):
                while True:
                    self._queue.get_nowait()
        for _ in self._threads:
            self._queue.put((self._LAST, next(self._seq), None))
        if wait:
            for thread in self._threads:
                thread.join()


class _Copy:
    def __init__(
        self,
        images: Sequence[ImagePlan],
        source: Source,
        target: Target,
        platforms: Sequence[str],
        jobs: int,
        progress: Progress,
        tags_together: bool,
    ) -> None:
        self.images = tuple(images)
        self.source = source
        self.target = target
        self.platforms = tuple(platforms)
        self.jobs = max(1, jobs)
        self.progress = progress
        self.tags_together = tags_together
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
        costs manifest checks only (and one look for new signatures in the source)."""
        t, dst, image = self.target, w.plan.target, w.plan
        assert image.source.digest is not None

        def fetch(d: Digest) -> Manifest:
            return self.source.manifest(image.source, d)

        # Without a platform filter the index keeps its digest: tags that point at it prove it is there.
        tagged_at = {} if self.platforms else {tag: t.resolve(dst.with_tag(tag)) for tag in image.tags}
        tags_prove_it = bool(tagged_at) and all(d and d.digest == image.source.digest for d in tagged_at.values())
        if not self.platforms and (tags_prove_it or t.resolve(dst.with_digest(image.source.digest)) is not None):
            subjects = {image.source.digest, *image.manifests}
            if not image.manifests:  # not known from the lock: ask
                w.index = fetch(image.source.digest)
                subjects |= {d.digest for d in w.index.descriptors()}
            index_digest = image.source.digest
        else:
            source_index = fetch(image.source.digest)
            w.index, w.dropped = filter_platforms(source_index, self.platforms)
            unchanged = not self.platforms  # its check above said it is missing
            if unchanged or t.resolve(dst.with_digest(w.index.digest)) is None:
                seen: set[Digest] = set()
                if w.index is not source_index:
                    for d in w.index.descriptors():
                        walk(fetch, fetch(d.digest), seen, into=w.tree)
                    w.tree.manifests.append(w.index)
                else:
                    walk(fetch, w.index, seen, into=w.tree)
            subjects = {source_index.digest, w.index.digest} | {d.digest for d in w.index.descriptors()}
            index_digest = w.index.digest
        referrers, tagged = self.source.linked(image.source, subjects)
        for digest in referrers:
            w.referrers += 1
            if t.resolve(dst.with_digest(digest)) is None:
                w.extras.append(("", walk(fetch, fetch(digest))))
        for tag, digest in tagged:
            w.referrers += 1
            have = t.resolve(dst.with_tag(tag))
            if have is None or have.digest != digest:
                w.extras.append((tag, walk(fetch, fetch(digest))))
        for tag in image.tags:
            have = tagged_at[tag] if tag in tagged_at else t.resolve(dst.with_tag(tag))
            if have is None or have.digest != index_digest:
                w.tags_to_move.append(tag)
        if w.tags_to_move and w.index is None:
            w.index = fetch(index_digest)
        w.up_to_date = not (w.tags_to_move or w.tree.manifests or w.extras)

    # --- blobs (per digest, across images) -----------------------------
    # Each digest's work is split by target repository: one task per repository that needs
    # it, so that an image's blobs complete on their own. A digest that several repositories
    # need is first made present in one of them (its home), then mounted from there into the
    # others, each mount a task of the image it is for.
    def blob(self, st: _BlobState) -> list[_Task]:
        """The first tasks of one digest, once every image is discovered."""
        by_repo: dict[str, list[Work]] = {}
        for w in sorted(st.pending, key=lambda w: (w.plan.target.repository, w.rank)):
            by_repo.setdefault(w.plan.target.repository, []).append(w)
        groups = list(by_repo.values())
        first = groups[0][0].plan
        origin = self.target.mount_origin(self.source, first.source, first.target)
        if len(groups) == 1 or origin is not None:  # each repository on its own (a mount from the source)
            return [self._into_task(st, works, origin) for works in groups]
        return [((0, _order(st.desc)), self._home, (st, groups))]

    def _into_task(self, st: _BlobState, works: list[Work], home: ImageRef | None) -> _Task:
        mount = home is not None and home != works[0].plan.target
        if st.desc.size >= SMALL_BLOB and not mount:  # a copy of its own: the biggest first, to end evenly
            priority: tuple[Any, ...] = (2, _order(st.desc))
        else:  # with the rest of its image
            priority = (1, min(w.rank for w in works), _order(st.desc))
        return priority, self._into_and_count, (st, works, home)

    def _home(self, st: _BlobState, groups: list[list[Work]]) -> None:
        """A digest that several target repositories need, made present in one of them (its home):
        the first repository that has it (a small blob is looked for in the first one only, see
        ``LOOKED_FOR_ONCE``), else the first one, where it is sent. Then each other repository gets
        a mount from there."""
        t, desc = self.target, st.desc
        home: ImageRef | None = None
        done: list[list[Work]] = []
        if desc.size < LOOKED_FOR_ONCE:
            done.append(groups[0])
            if self._into(st, groups[0], None):
                home = groups[0][0].plan.target
        else:
            for works in groups:
                try:
                    if t.has_blob(works[0].plan.target, desc.digest):
                        self._settle(st, works, skipped=1)
                        home = works[0].plan.target
                        done.append(works)
                        break
                except RegistryError as e:
                    self._failed(st, works, e)
                    done.append(works)
            if home is None:
                upload_to = next((works for works in groups if not any(works is d for d in done)), None)
                if upload_to is not None:
                    done.append(upload_to)
                    if self._send(st, upload_to, None):
                        home = upload_to[0].plan.target
        for works in done:
            self._counted(works)
        for works in groups:
            if not any(works is d for d in done):
                priority, fn, args = self._into_task(st, works, home)
                self._spawn(self._blob_pool, fn, *args, priority=priority)

    def _into_and_count(self, st: _BlobState, works: list[Work], home: ImageRef | None) -> None:
        self._into(st, works, home)
        self._counted(works)

    def _into(self, st: _BlobState, works: list[Work], home: ImageRef | None) -> bool:
        """The blob into one target repository (``works``: the images that go there): a mount from
        ``home`` (a repository of the target, or of the source in the same registry, that has it),
        else a check there and an upload when it lacks it. (Into a registry seen to honour mounts,
        the check is a mount from that repository itself: it answers 201 when the blob is there,
        else opens the upload session the blob is sent to; one request for both.) Whether the blob
        is there now."""
        t, desc = self.target, st.desc
        dst = works[0].plan.target
        try:
            if home is None and t.asks_with_mounts(dst):
                home = dst
            if home is None:
                if t.has_blob(dst, desc.digest):
                    self._settle(st, works, skipped=1)
                    return True
                return self._send(st, works, None)
            upload = t.mount(dst, desc.digest, home)  # a refused mount opens an upload instead
        except RegistryError as e:
            self._failed(st, works, e)
            return False
        if upload is None:
            self._settle(st, works, **({"skipped": 1} if home == dst else {"mounted": 1}))
            return True
        return self._send(st, works, upload)

    def _send(self, st: _BlobState, works: list[Work], upload: str | None) -> bool:
        """Upload the blob into the repository of ``works`` (into ``upload``, a session opened already)."""
        w = works[0]
        try:
            n = self.target.put_blob(
                w.plan.target,
                st.desc,
                self.source.blob(w.plan.source, st.desc),
                origin=self.source.where(w.plan.source),
                upload=upload,
                progress=self.progress.advance,
            )
        except RegistryError as e:
            self._failed(st, works, e)
            return False
        self._settle(st, works, sent=1, nbytes=n)
        return True

    def _settle(self, st: _BlobState, works: list[Work], **counter: int) -> None:
        works[0].count(**counter)
        for other in works[1:]:  # the same target repository: there already
            other.count(skipped=1)
        for _ in works:
            self.progress.advance(st.desc.size)

    def _failed(self, st: _BlobState, works: list[Work], e: RegistryError) -> None:
        message = e.message if isinstance(e, DigestMismatch) else f"blob {st.desc.digest.short()}: {e.message}"
        for w in works:
            w.fail(message)

    def _counted(self, works: list[Work]) -> None:
        """One blob of each of ``works`` is handled; an image with none left pushes its manifests."""
        for w in works:
            with self._cond:
                w.remaining -= 1
                last = w.remaining == 0
            if last:
                self._spawn(self._meta_pool, self._pushed, w)

    # --- manifests and tags (per image) --------------------------------
    def push(self, w: Work) -> None:
        """The image's manifests, children first, then (unless ``tags_together``) its tags;
        the index goes up with its first tag, a tagged referrer with its tag."""
        if w.error:
            return
        t, dst, now = self.target, w.plan.target, not self.tags_together
        index_with_tag = now and bool(w.tags_to_move) and any(m is w.index for m in w.tree.manifests)
        try:
            for m in w.tree.manifests:
                if index_with_tag and m is w.index:  # its first tag push below brings it
                    continue
                t.put_manifest(dst.with_digest(m.digest), m)
                w.manifests_pushed += 1
            for tag, tree in w.extras:
                for n, m in enumerate(tree.manifests):
                    top = n == len(tree.manifests) - 1
                    t.put_manifest(dst.with_tag(tag) if top and tag and now else dst.with_digest(m.digest), m)
                    w.manifests_pushed += 1
            if now:  # only now, with everything of the image present, move its tags
                self.move_tags(w, extras=False, index_with_tag=index_with_tag)
        except RegistryError as e:
            w.fail(e.message)

    def move_tags(self, w: Work, *, extras: bool, index_with_tag: bool = False) -> None:
        t, dst = self.target, w.plan.target
        if extras:
            for tag, tree in w.extras:
                if tag:
                    t.put_manifest(dst.with_tag(tag), tree.manifests[-1])
        for n, tag in enumerate(w.tags_to_move):
            assert w.index is not None
            t.put_manifest(dst.with_tag(tag), w.index)
            if n == 0 and index_with_tag:
                w.manifests_pushed += 1

    def move_all_tags(self, works: list[Work]) -> None:
        """``tags_together``: every image's tags, once every image's content is there; none when one failed."""
        failed = sorted(w.plan.name for w in works if w.error)
        if failed:
            for w in works:
                if not w.error and w.moves_tags:
                    w.fail(f"tags not moved: they wait for every image, and {', '.join(failed)} failed")
            return

        def one(w: Work) -> None:
            try:
                self.move_tags(w, extras=True)
            except RegistryError as e:
                w.fail(e.message)

        list(self._meta_pool.map(one, [w for w in works if w.moves_tags]))

    # --- the pipeline ----------------------------------------------------
    # Manifests (discovery, then pushes) run on a pool of their own; blobs on the
    # ``jobs`` workers once every image is discovered (only then is it known which
    # blobs images share, and which target repositories may have one already).
    # Each digest is sent at most once (``blob``). An image's manifests (and tags) go
    # as soon as its last blob is there, while other images' blobs are still copying.
    def _spawn(
        self, pool: ThreadPoolExecutor | _Workers, fn: Callable[..., None], *args: Any, priority: tuple[Any, ...] = ()
    ) -> None:
        def guarded() -> None:
            if self._stop.is_set():  # interrupted: start nothing new
                return
            try:
                fn(*args)
            except BaseException as e:  # a bug: keep it, finish the bookkeeping, raise it at the end
                with self._cond:
                    self._crash = self._crash or e
                    self._finished = len(self.images)
                    self._cond.notify_all()
                raise

        if self._stop.is_set():
            return
        if isinstance(pool, _Workers):
            pool.submit(guarded, priority)
        else:
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
            if self._discoveries == len(self.images):
                start = sorted(self._states.values(), key=lambda st: _order(st.desc))
        self.progress.start(self._total)
        if not blobs:
            self._spawn(self._meta_pool, self._pushed, w)
        # Queued in the order they are to run: a worker that starts meanwhile takes the first.
        for priority, fn, args in sorted((t for st in start for t in self.blob(st)), key=lambda t: t[0]):
            self._spawn(self._blob_pool, fn, *args, priority=priority)

    def _pushed(self, w: Work) -> None:
        self.push(w)
        with self._cond:
            self._finished += 1
            self._cond.notify_all()

    def run(self) -> tuple[ImageResult, ...]:
        works = [Work(p, rank=n) for n, p in enumerate(self.images)]
        self._blob_pool = _Workers(self.jobs, "copy-blob")
        self._meta_pool = ThreadPoolExecutor(8, thread_name_prefix="copy-meta")
        try:
            for w in works:
                self._spawn(self._meta_pool, self._discovered, w)
            with self._cond:
                self._cond.wait_for(lambda: self._finished >= len(works))
            if self.tags_together and self._crash is None:
                self.move_all_tags(works)
        except BaseException:  # Ctrl-C: no new copies, no tag moves; copies under way end on their own
            self._stop.set()
            raise
        finally:
            stop = self._stop.is_set()
            self._meta_pool.shutdown(wait=not stop, cancel_futures=stop)
            self._blob_pool.shutdown(wait=not stop, cancel=stop)
        if self._crash is not None:
            raise self._crash
        return tuple(self._result(w) for w in works)

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


def copy(
    images: Sequence[ImagePlan],
    source: Source,
    target: Target,
    *,
    platforms: Sequence[str] = (),
    jobs: int = 8,
    progress: Progress | None = None,
    tags_together: bool = False,
) -> tuple[ImageResult, ...]:
    """Copy ``images`` from ``source`` to ``target`` (only ``platforms`` of each index, when
    given: its digest then changes). Failures are per image (``ImageResult.error``): a failed
    image moves no tag; with ``tags_together``, no image moves a tag unless all succeed."""
    return _Copy(images, source, target, platforms, jobs, progress or NoProgress(), tags_together).run()
