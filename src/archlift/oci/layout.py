"""OCI image layouts: a directory as a store (``LayoutStore``), and the ``index.json`` model
that the layout archive (``archlift.oci.archive``) shares.

BuildKit's ``docker`` driver cannot push by digest, but it exports an OCI
layout (``--output type=oci,tar=false``): the build pushes it with the one copy
(``archlift.oci.copy``), children before parents, no tag.

A layout holds the blobs of any number of repositories in one ``blobs/``
directory. An ``index.json`` entry names its repository
(``io.archlift.repository``) and its tag (``org.opencontainers.image.ref.name``,
a tag only, as skopeo and buildx write it); an entry with no repository, as
buildx and skopeo write them, belongs to every repository. Written into, a
layout lists the tags and the referrers (manifests with a ``subject``) it was
given; ``index.json`` is written atomically after each, so a killed copy
leaves a layout that lists only what is complete.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, RegistryError
from ..refs import Digest, ImageRef, RefError, is_tag
from .client import MAX_MANIFEST, RegistryClient, RequestFailed, cosign_tag_of, verified_chunks
from .model import OCI_INDEX, Descriptor, InvalidManifest, Manifest
from .store import Linked, Opener

if TYPE_CHECKING:
    from .copy import ImageResult

CHUNK = 1 << 20
REF_NAME = "org.opencontainers.image.ref.name"
REPOSITORY = "io.archlift.repository"
KIND = "io.archlift.kind"  # "image" | "tag" (cosign / referrers schema) | "referrer"
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'


@dataclass(frozen=True)
class Layout:
    """Reading a layout directory's blobs by digest."""

    root: Path

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def read(self, digest: Digest) -> bytes:
        data = self.blob_path(digest).read_bytes()
        if Digest.of(data) != digest:
            raise RegistryError(f"{self.root}: blob {digest} does not match its digest")
        return data

    def manifest(self, digest: Digest, media_type: str = "") -> Manifest:
        try:
            return Manifest.of(self.read(digest), media_type)
        except InvalidManifest as e:
            raise RegistryError(f"{self.root}: blob {digest} is not a valid manifest ({e})") from None

    def index(self) -> list[Descriptor]:
        data = json.loads((self.root / "index.json").read_text())
        return [Descriptor.from_json(d) for d in data.get("manifests", [])]


# ---------------------------------------------------------------------- index.json
@dataclass(frozen=True)
class Entry:
    """One ``index.json`` entry: a manifest, its repository ("" = every one) and tag ("" = none)."""

    desc: Descriptor
    repository: str = ""
    tag: str = ""

    def of(self, repo: ImageRef) -> bool:
        return not self.repository or self.repository == repo.repository


def parse_index(raw: bytes, where: str) -> list[Entry]:
    """The entries of an ``index.json``; a malformed one, or a tag or repository that does not
    follow the reference grammar, is a ``ConfigError`` naming ``where`` and the entry."""
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests", []), list):
            raise ValueError("not an image index")
    except ValueError as e:
        raise ConfigError(f"{where}: index.json is not valid ({e})") from None
    entries = []
    for n, item in enumerate(doc.get("manifests") or []):
        try:
            if not isinstance(item, dict):
                raise ValueError("not a descriptor")
            desc = Descriptor.from_json(item)
            if desc.size < 0:
                raise ValueError(f"size {desc.size}")
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(f"{where}: index.json, manifests[{n}]: not a valid descriptor ({e})") from None
        tag = desc.annotations.get(REF_NAME, "")
        repository = desc.annotations.get(REPOSITORY, "")
        if tag and not is_tag(tag):
            raise ConfigError(
                f"{where}: index.json, manifests[{n}]: '{tag}' is not a valid tag "
                "(letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
            )
        if repository:
            try:
                ImageRef.parse(f"layout.invalid/{repository}")
            except RefError:
                raise ConfigError(
                    f"{where}: index.json, manifests[{n}]: '{repository}' is not a repository path"
                ) from None
        entries.append(Entry(desc, repository, tag))
    return entries


def dump_index(entries: Iterable[Entry]) -> bytes:
    """``index.json`` for ``entries``, in a stable order."""
    manifests = []
    for entry in sorted(entries, key=lambda e: (e.repository, e.tag, e.desc.digest)):
        d = entry.desc
        item: dict[str, Any] = {"mediaType": d.media_type, "digest": str(d.digest), "size": d.size}
        if d.artifact_type:
            item["artifactType"] = d.artifact_type
        if d.annotations:
            item["annotations"] = dict(d.annotations)
        manifests.append(item)
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}, indent=2).encode()


class IndexedLayout:
    """What a layout answers from its ``index.json`` entries (directory and archive alike)."""

    _subjects: dict[Digest, Digest | None]  # an entry's manifest -> what it refers to

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        raise NotImplementedError

    def has_manifest(self, digest: Digest) -> bool:
        raise NotImplementedError

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        if ref.digest is not None:
            return self.manifest(ref, ref.digest).descriptor() if self.has_manifest(ref.digest) else None
        found = [e.desc for e in self.entries() if e.of(ref) and e.tag == (ref.tag or "latest")]
        return found[-1] if found else None

    def linked(self, repo: ImageRef, subjects: set[Digest]) -> Linked:
        referrers: set[Digest] = set()
        tagged: dict[str, Digest] = {}
        for e in self.entries():
            if not e.of(repo):
                continue
            if e.tag:
                points_at = cosign_tag_of(e.tag)
                if points_at is not None and points_at in subjects:
                    tagged[e.tag] = e.desc.digest
            elif e.desc.is_manifest and self._subject(repo, e.desc.digest) in subjects:
                referrers.add(e.desc.digest)
        return sorted(referrers), sorted(tagged.items())

    def _subject(self, repo: ImageRef, digest: Digest) -> Digest | None:
        if digest not in self._subjects:
            subject = self.manifest(repo, digest).subject if self.has_manifest(digest) else None
            self._subjects[digest] = subject.digest if subject else None
        return self._subjects[digest]


# ---------------------------------------------------------------------- a directory
def file_chunks(path: Path, what: str) -> tuple[Iterator[bytes], Callable[[], None]]:
    """A file's bytes in chunks, and the function that closes it; no such file is ``RegistryError``."""
    try:
        f = path.open("rb")
    except FileNotFoundError:
        raise RegistryError(f"{what} is missing ({path})") from None

    def chunks() -> Iterator[bytes]:
        while chunk := f.read(CHUNK):
            yield chunk

    return chunks(), f.close


@dataclass(eq=False)
class LayoutStore(IndexedLayout):
    """An OCI image layout directory as a store: read (what buildx exported), or written (a copy
    into it; the directory is made when it does not exist). ``save_index``: write ``index.json``
    after each change (else ``index_json()`` gives it)."""

    root: Path
    save_index: bool = True
    _entries: dict[tuple[str, str, Digest], Entry] | None = field(default=None, init=False, repr=False)
    _manifests: set[Digest] = field(default_factory=set, init=False, repr=False)  # written here
    _subjects: dict[Digest, Digest | None] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @property
    def layout(self) -> Layout:
        return Layout(self.root)

    def where(self, repo: ImageRef) -> str:
        return str(self.root)

    # --- reading
    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._load().values())

    def _load(self) -> dict[tuple[str, str, Digest], Entry]:
        """The entries by (repository, tag, digest); read once (call with the lock held)."""
        if self._entries is None:
            path = self.root / "index.json"
            raw = path.read_bytes() if path.is_file() else b'{"manifests": []}'
            self._entries = {(e.repository, e.tag, e.desc.digest): e for e in parse_index(raw, str(self.root))}
        return self._entries

    def has_manifest(self, digest: Digest) -> bool:
        return self.layout.blob_path(digest).is_file()

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        path = self.layout.blob_path(digest)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise RegistryError(f"{self.root} has no manifest {digest}") from None
        if size > MAX_MANIFEST:
            raise RegistryError(f"{self.root}: manifest {digest} has {size} bytes, more than 4 MiB")
        return self.layout.manifest(digest)

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        return lambda: file_chunks(self.layout.blob_path(desc.digest), f"{self.root}: blob {desc.digest}")

    # --- writing
    def has_blob(self, repo: ImageRef, digest: Digest) -> bool:
        return self.layout.blob_path(digest).is_file()

    def asks_with_mounts(self, repo: ImageRef) -> bool:
        return False

    def mount_origin(self, source: object, src: ImageRef, repo: ImageRef) -> ImageRef | None:
        return None

    def mount(self, repo: ImageRef, digest: Digest, origin: ImageRef) -> str | None:
        return None if self.has_blob(repo, digest) else ""  # one blobs/ for every repository

    def put_blob(
        self,
        repo: ImageRef,
        desc: Descriptor,
        opener: Opener,
        *,
        origin: str,
        upload: str | None = None,
        progress: Callable[[int], None] | None = None,
        attempts: int = 4,
    ) -> int:
        """Write the blob beside its place and rename it there once its size and digest are
        right (nothing longer than the descriptor's size is written); a temporary read
        failure starts it again."""
        path = self.layout.blob_path(desc.digest)
        self._prepare(path.parent)
        for attempt in range(attempts):
            tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
            written = 0
            try:
                chunks, close = opener()
                try:
                    with tmp.open("xb") as f:
                        for chunk in verified_chunks(chunks, desc, origin):
                            f.write(chunk)
                            written += len(chunk)
                            if progress:
                                progress(len(chunk))
                finally:
                    close()
                os.replace(tmp, path)
                return written
            except RequestFailed as e:
                if not e.temporary or attempt == attempts - 1:
                    raise
                if progress and written:
                    progress(-written)
            finally:
                tmp.unlink(missing_ok=True)
        raise AssertionError("unreachable")

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> None:
        if ref.digest is not None and ref.digest != manifest.digest:
            raise RegistryError(f"{self.root}: manifest {manifest.digest} given as {ref.digest}")
        path = self.layout.blob_path(manifest.digest)
        self._prepare(path.parent)
        if not path.is_file():
            _write_atomic(path, manifest.raw)
        tag = "" if ref.digest is not None else (ref.tag or "latest")
        subject = None if tag else manifest.subject
        with self._lock:
            self._manifests.add(manifest.digest)
            if not tag and subject is None:
                return  # a child: reached from its parent
            entries = self._load()
            kind = "referrer" if not tag else ("tag" if cosign_tag_of(tag) else "image")
            annotations = {REPOSITORY: ref.repository, KIND: kind} | ({REF_NAME: tag} if tag else {})
            if tag:  # a tag names one manifest: move it
                for key in [k for k in entries if k[:2] == (ref.repository, tag)]:
                    del entries[key]
            desc = Descriptor(manifest.media_type, manifest.digest, len(manifest.raw), annotations=annotations)
            entries[(ref.repository, tag, manifest.digest)] = Entry(desc, ref.repository, tag)
            if self.save_index:
                _write_atomic(self.root / "index.json", dump_index(entries.values()))

    def index_json(self) -> bytes:
        with self._lock:
            return dump_index(self._load().values())

    def manifests_written(self) -> set[Digest]:
        with self._lock:
            return set(self._manifests)

    def _prepare(self, blob_dir: Path) -> None:
        if not blob_dir.is_dir():
            blob_dir.mkdir(parents=True, exist_ok=True)
        if not (self.root / "oci-layout").is_file():
            _write_atomic(self.root / "oci-layout", LAYOUT_FILE)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def push_image(
    client: RegistryClient, root: Path, digest: Digest, repo: ImageRef, tags: Sequence[str] = (), *, jobs: int = 4
) -> ImageResult:
    """Copy the image ``digest`` of the layout directory ``root`` into ``repo``, by digest, with
    the one copy (what the registry has is skipped; ``tags`` move last); a failure is a
    ``RegistryError``."""
    from .copy import ImagePlan, copy
    from .store import RegistryStore

    plan = ImagePlan(str(root), repo.with_digest(digest), ImageRef(repo.registry, repo.repository), tuple(tags), ())
    (result,) = copy([plan], LayoutStore(root), RegistryStore(client), jobs=jobs)
    if result.error:
        raise RegistryError(f"pushing {digest.short()} from {root} to {repo.name}: {result.error}")
    return result
