"""Where images are kept, as the one copy (``archlift.oci.copy``) sees them.

A store holds content-addressed blobs and manifests in repositories, and tags.
Three kinds: a registry (``RegistryStore``, over ``RegistryClient``), an OCI
image layout directory (``archlift.oci.layout.LayoutStore``) and an OCI layout
archive, the air-gap bundle (``archlift.oci.archive``: read checked whole,
written through a layout directory). The copy reads a ``Source`` and writes a
``Target``; a ``Store`` is both.

Every read is verified: a manifest against its digest when it is fetched, a
blob while it streams into the target (``verified_chunks``), so a wrong blob is
never committed. Blobs are never held whole in memory.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import Protocol, TypeVar, cast

from ..refs import Digest, ImageRef
from .client import RegistryClient, RequestFailed, cosign_tag_of
from .model import Descriptor, Manifest

Opener = Callable[[], tuple[Iterable[bytes], Callable[[], None]]]
"""Opens a blob: its bytes as they come, and the function that ends the read (called once)."""

Linked = tuple[list[Digest], list[tuple[str, Digest]]]
"""Referrer manifests by digest, and ``(tag, digest)`` of cosign / referrers-schema tags."""


class Source(Protocol):
    """What the copy reads images from."""

    def where(self, repo: ImageRef) -> str:
        """``repo`` of this store, for messages (``"host/path"``, a file)."""
        ...

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        """A manifest, verified against ``digest``."""
        ...

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        """The manifest ``ref`` (by tag or digest) names; None when there is none."""
        ...

    def linked(self, repo: ImageRef, subjects: set[Digest]) -> Linked:
        """What refers to ``subjects``: referrers, and tags that point at one (cosign, referrers schema)."""
        ...

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        """How to read a blob (not yet verified: the target checks it while writing)."""
        ...


class Target(Protocol):
    """What the copy writes images to."""

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        """The manifest ``ref`` (by tag or digest) names; None when there is none."""
        ...

    def has_blob(self, repo: ImageRef, digest: Digest) -> bool: ...

    def asks_with_mounts(self, repo: ImageRef) -> bool:
        """Whether a mount from ``repo`` itself answers whether it has a blob (and opens the
        upload when not): one request instead of a check and then an upload."""
        ...

    def mount_origin(self, source: Source, src: ImageRef, repo: ImageRef) -> ImageRef | None:
        """A repository that ``source``'s ``src`` can be mounted from into ``repo`` (same registry)."""
        ...

    def mount(self, repo: ImageRef, digest: Digest, origin: ImageRef) -> str | None:
        """Make ``origin``'s blob ``digest`` ``repo``'s: None when it is there now, else an upload
        session for ``put_blob`` ("" when the store has none): a refused mount is an upload."""
        ...

    def put_blob(
        self,
        repo: ImageRef,
        desc: Descriptor,
        opener: Opener,
        *,
        origin: str,
        upload: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Write a blob read from ``opener()``, verified while streaming; the bytes written."""
        ...

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> None:
        """Store a manifest by digest, or by tag (which moves the tag)."""
        ...


class Store(Source, Target, Protocol):
    """A store the copy reads and writes."""


# Answers to a mount that mean "no mount here" (not "you may not push"): the blob is uploaded instead.
_MOUNT_REFUSED = frozenset({400, 401, 403, 404, 405, 501})


T = TypeVar("T")


class RegistryStore:
    """Registries, through one ``RegistryClient`` (every host it can reach). One store serves one copy:
    what ``linked`` learns of a source repository (its tags, what a cosign tag points at) is asked
    once, however many images of the copy come from that repository (the upstream layout copies
    one image to several names)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self._lock = threading.Lock()
        self._asked: dict[tuple[str, ...], Future[object]] = {}

    def _once(self, key: tuple[str, ...], ask: Callable[[], T]) -> T:
        with self._lock:
            future = self._asked.get(key)
            first = future is None
            if future is None:
                future = self._asked[key] = Future()
        if first:
            try:
                future.set_result(ask())
            except BaseException as e:
                future.set_exception(e)
        return cast(T, future.result())

    def where(self, repo: ImageRef) -> str:
        return f'"{repo.name}"'

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        return self.client.get_manifest(repo.with_digest(digest))

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        return self.client.head_manifest(ref)

    def linked(self, repo: ImageRef, subjects: set[Digest]) -> Linked:
        c = self.client
        referrers: set[Digest] = set()
        if c.referrers_api(repo):
            for subject in sorted(subjects):
                referrers.update(d.digest for d in c.referrers(repo, subject))
        tagged = []
        where = (repo.registry, repo.repository)
        for tag in sorted(self._once(("tags", *where), functools.partial(c.list_tags, repo))):
            points_at = cosign_tag_of(tag)
            if points_at is None or points_at not in subjects:
                continue
            desc = self._once(("tag", *where, tag), functools.partial(c.head_manifest, repo.with_tag(tag)))
            if desc is not None:
                tagged.append((tag, desc.digest))
        return sorted(referrers), tagged

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        return lambda: self.client.blob_chunks(repo, desc)

    def has_blob(self, repo: ImageRef, digest: Digest) -> bool:
        return self.client.blob_exists(repo, digest)

    def asks_with_mounts(self, repo: ImageRef) -> bool:
        return self.client.honours_mounts(repo.registry)

    def mount_origin(self, source: Source, src: ImageRef, repo: ImageRef) -> ImageRef | None:
        return src if isinstance(source, RegistryStore) and src.registry == repo.registry else None

    def mount(self, repo: ImageRef, digest: Digest, origin: ImageRef) -> str | None:
        try:
            return self.client.start_upload(repo, mount=digest, mount_from=origin)
        except RequestFailed as e:
            if e.temporary or e.status not in _MOUNT_REFUSED:
                raise
        return self.client.start_upload(repo)  # a registry that refuses to mount: upload it

    def put_blob(
        self,
        repo: ImageRef,
        desc: Descriptor,
        opener: Opener,
        *,
        origin: str,
        upload: str | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        return self.client.upload_stream(repo, desc, opener, origin=origin, location=upload or None, progress=progress)

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> None:
        self.client.put_manifest(ref, manifest.raw, manifest.media_type)
