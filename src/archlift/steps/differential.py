"""Differential bundles: what the release a site already runs lets a bundle leave out.

Export (``archlift export --since OLD``): the old release's trees are walked
(``walk``: in the registry for an old lock, offline for an old bundle) into an
``Inventory`` (every manifest and blob, with the images that hold it); the new
release is walked the same way; what both hold is left out (``left_out``). The
copy then writes into the archive through ``WithBase``, a target that already
holds the base: only what the base lacks is read and written. The bundle
records its base in ``archlift/base.json`` (``BaseRecord``: the old lock's
digest and creation time, and every piece left out, by digest, with the images
of the new release that need it and the repositories of the old one that hold
it).

Import: ``check_base`` asks the target (HEAD requests, nothing else) for every
piece left out, in the repository the copy needs it in, or in one it can be
mounted (a blob) or read (a manifest) from; when anything is missing nothing is
pushed and the error names the images, the pieces and the full bundle that
would supply them. Then the copy reads from ``WithBaseSource``: the archive,
and the target itself for the manifests the bundle left out.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, RegistryError
from ..oci import RegistryClient
from ..oci.archive import ArchiveReader, ArchiveWriter
from ..oci.copy import ImagePlan, filter_platforms
from ..oci.model import Descriptor, Manifest
from ..oci.store import Linked, Opener, RegistryStore, Source
from ..oci.walk import Walked
from ..oci.walk import walk as walk_tree
from ..refs import Digest, ImageRef, RefError

BASE_PATH = "archlift/base.json"
SCHEMA = 1


# ---------------------------------------------------------------------- what a release holds
@dataclass(frozen=True)
class Piece:
    """One manifest or blob of a release, and the images (and their repositories) that hold it."""

    digest: Digest
    size: int
    media_type: str
    manifest: bool
    images: tuple[str, ...]
    repositories: tuple[str, ...]  # as the lock names them (registry/path)

    @property
    def kind(self) -> str:
        return "manifest" if self.manifest else "blob"


Inventory = dict[Digest, Piece]


class Memo:
    """A source whose manifests are read once (the walk and the copy read the same ones)."""

    def __init__(self, source: Source) -> None:
        self.source = source
        self._manifests: dict[Digest, Manifest] = {}
        self._lock = threading.Lock()

    def where(self, repo: ImageRef) -> str:
        return self.source.where(repo)

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        with self._lock:
            known = self._manifests.get(digest)
        if known is None:
            known = self.source.manifest(repo, digest)
            with self._lock:
                self._manifests[digest] = known
        return known

    def cached(self, digest: Digest) -> Manifest | None:
        with self._lock:
            return self._manifests.get(digest)

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        return self.source.resolve(ref)

    def linked(self, repo: ImageRef, subjects: set[Digest]) -> Linked:
        return self.source.linked(repo, subjects)

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        return self.source.blob(repo, desc)


def walk(
    source: Source,
    images: Sequence[ImagePlan],
    platforms: Sequence[str] = (),
    known: Mapping[Digest, Piece] | None = None,
) -> Inventory:
    """Every manifest and blob an export of ``images`` from ``source`` carries: each image's tree
    (only ``platforms`` of its index, when given, as the copy filters it), what refers to it
    (referrers, cosign and referrers-schema tags) and their trees. What is in ``known`` is not
    read again: its tree is known already (the pieces a differential bundle left out)."""
    found: dict[Digest, tuple[Descriptor, bool, set[str], set[str]]] = {}
    known = known or {}

    def add(desc: Descriptor, manifest: bool, image: ImagePlan) -> None:
        entry = found.setdefault(desc.digest, (desc, manifest, set(), set()))
        entry[2].add(image.name)
        entry[3].add(image.source.name)

    for image in images:
        assert image.source.digest is not None
        if image.source.digest in known:
            continue
        try:
            tree = _tree(source, image, platforms, known)
        except RegistryError as e:
            raise RegistryError(f"image {image.name} ({image.source}): {e.message}") from None
        for m in tree.manifests:
            add(m.descriptor(), True, image)
        for desc in tree.blobs.values():
            add(desc, False, image)
    return {
        d: Piece(d, desc.size, desc.media_type, manifest, tuple(sorted(names)), tuple(sorted(repos)))
        for d, (desc, manifest, names, repos) in found.items()
    }


def _tree(source: Source, image: ImagePlan, platforms: Sequence[str], known: Mapping[Digest, Piece]) -> Walked:
    """One image's tree and the trees of what refers to it, as the copy walks them."""
    assert image.source.digest is not None

    def fetch(d: Digest) -> Manifest:
        return source.manifest(image.source, d)

    tree, seen = Walked(), set(known)
    index = fetch(image.source.digest)
    kept, _ = filter_platforms(index, platforms)
    if kept is not index:  # a new index, over the kept children
        for d in kept.descriptors():
            if d.digest not in seen:
                walk_tree(fetch, fetch(d.digest), seen, into=tree)
        tree.manifests.append(kept)
    else:
        walk_tree(fetch, index, seen, into=tree)
    subjects = {index.digest, kept.digest} | {d.digest for d in kept.descriptors()}
    referrers, tagged = source.linked(image.source, subjects)
    for digest in [*referrers, *(d for _, d in tagged)]:
        if digest not in seen:
            walk_tree(fetch, fetch(digest), seen, into=tree)
    return tree


def merge(*inventories: Mapping[Digest, Piece]) -> Inventory:
    """One inventory of several (the images and repositories of a piece held by more than one joined)."""
    out: Inventory = {}
    for inventory in inventories:
        for d, p in inventory.items():
            have = out.get(d)
            if have is None:
                out[d] = p
            else:
                images = tuple(sorted({*have.images, *p.images}))
                repos = tuple(sorted({*have.repositories, *p.repositories}))
                out[d] = Piece(d, have.size, have.media_type, have.manifest, images, repos)
    return out


# ---------------------------------------------------------------------- the record
@dataclass(frozen=True)
class LeftOut:
    """A piece of the new release the bundle does not carry: ``piece`` names the images of the new
    release that need it; ``base_repositories`` where the base release holds it."""

    piece: Piece
    base_repositories: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        p = self.piece
        return {
            "digest": str(p.digest),
            "size": p.size,
            "media_type": p.media_type,
            "kind": p.kind,
            "images": list(p.images),
            "repositories": list(p.repositories),
            "base_repositories": list(self.base_repositories),
        }


@dataclass(frozen=True)
class BaseRecord:
    """``archlift/base.json``: the release a differential bundle was made against, and what it left out."""

    lock_digest: Digest
    created_at: str
    source: str  # the lock file or bundle it was read from (for people)
    left_out: dict[Digest, LeftOut] = field(default_factory=dict)

    @property
    def left_out_bytes(self) -> int:
        return sum(x.piece.size for x in self.left_out.values())

    def counts(self) -> tuple[int, int]:
        """Manifests and blobs left out."""
        manifests = sum(1 for x in self.left_out.values() if x.piece.manifest)
        return manifests, len(self.left_out) - manifests

    def describe(self) -> str:
        created = f", created {self.created_at}" if self.created_at else ""
        return f"the release whose lock is {self.lock_digest}{created} ({self.source})"

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "base": {"lock_digest": str(self.lock_digest), "created_at": self.created_at, "source": self.source},
            "left_out": [self.left_out[d].to_json() for d in sorted(self.left_out)],
        }

    def dump(self) -> bytes:
        return json.dumps(self.to_json(), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def parse(cls, raw: bytes, images: Iterable[str]) -> BaseRecord:
        """A record as a bundle carries it; every field checked (``ValueError`` says which)."""
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError(f"schema {doc.get('schema') if isinstance(doc, dict) else None!r} is not {SCHEMA}")
        base = doc.get("base")
        if not isinstance(base, dict):
            raise ValueError("no 'base'")
        known = set(images)
        left: dict[Digest, LeftOut] = {}
        items = doc.get("left_out")
        if not isinstance(items, list):
            raise ValueError("'left_out' is not a list")
        for n, item in enumerate(items):
            try:
                if not isinstance(item, dict):
                    raise ValueError("not an object")
                size = item["size"]
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise ValueError(f"size {size!r}")
                kind = item["kind"]
                if kind not in ("manifest", "blob"):
                    raise ValueError(f"kind {kind!r}")
                names = _strings(item, "images")
                unknown = sorted(set(names) - known)
                if unknown or not names:
                    raise ValueError(f"images {', '.join(unknown) or '(none)'} not in the bundle's lock")
                repos = _strings(item, "repositories")
                base_repos = _strings(item, "base_repositories")
                for r in (*repos, *base_repos):
                    ImageRef.parse(r)
                digest = Digest.parse(str(item["digest"]))
                piece = Piece(digest, size, str(item.get("media_type", "")), kind == "manifest", names, repos)
            except (KeyError, TypeError, ValueError, RefError) as e:
                raise ValueError(f"left_out[{n}]: {e}") from None
            left[digest] = LeftOut(piece, base_repos)
        try:
            digest = Digest.parse(str(base.get("lock_digest")))
        except RefError as e:
            raise ValueError(f"base.lock_digest: {e}") from None
        return cls(digest, str(base.get("created_at", "")), str(base.get("source", "")), left)


def _strings(item: dict[str, Any], key: str) -> tuple[str, ...]:
    value = item.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} is not a list of strings")
    return tuple(value)


SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


def left_out(
    new: Mapping[Digest, Piece], base: Mapping[Digest, Piece], manifests: Memo | None = None
) -> dict[Digest, LeftOut]:
    """What of ``new`` the base already holds (by digest: a blob the base holds in another
    repository is mounted from there on import). The cosign payloads (a few hundred bytes) of a
    signature manifest that travels travel with it, though the base holds them: a signature added
    since the base (a new key) signs the same payload, and verify-bundle checks it offline."""
    keep: set[Digest] = set()
    for d, p in new.items():
        known = manifests.cached(d) if manifests is not None and p.manifest and d not in base else None
        if known is not None and not known.is_index:
            keep.update(x.digest for x in known.descriptors() if x.media_type == SIMPLE_SIGNING)
    return {d: LeftOut(p, base[d].repositories) for d, p in new.items() if d in base and d not in keep}


# ---------------------------------------------------------------------- export: the archive with the base
class WithBase:
    """The archive being written, as a target that already holds what ``left_out`` names: the
    copy skips those pieces (reads none of them, writes none of them) and writes the rest."""

    def __init__(self, archive: ArchiveWriter, left: Mapping[Digest, LeftOut]) -> None:
        self.archive = archive
        self.left = left

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        if ref.digest is not None and ref.digest in self.left:
            p = self.left[ref.digest].piece
            return Descriptor(p.media_type, p.digest, p.size)
        return self.archive.resolve(ref)

    def has_blob(self, repo: ImageRef, digest: Digest) -> bool:
        return digest in self.left or self.archive.has_blob(repo, digest)

    def asks_with_mounts(self, repo: ImageRef) -> bool:
        return self.archive.asks_with_mounts(repo)

    def mount_origin(self, source: Source, src: ImageRef, repo: ImageRef) -> ImageRef | None:
        return self.archive.mount_origin(source, src, repo)

    def mount(self, repo: ImageRef, digest: Digest, origin: ImageRef) -> str | None:
        return None if digest in self.left else self.archive.mount(repo, digest, origin)

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
        return self.archive.put_blob(repo, desc, opener, origin=origin, upload=upload, progress=progress)

    def put_manifest(self, ref: ImageRef, manifest: Manifest) -> None:
        if manifest.digest not in self.left:  # a left-out image's tags are in the lock
            self.archive.put_manifest(ref, manifest)


# ---------------------------------------------------------------------- import: the target must hold the base
@dataclass(frozen=True)
class Missing:
    image: str
    repository: ImageRef  # on the target
    piece: Piece


@dataclass(frozen=True)
class Located:
    """Where on the target each left-out piece is (HEAD requests only)."""

    manifests: dict[Digest, ImageRef]  # a repository holding each left-out manifest
    blobs: dict[Digest, ImageRef]
    mounts: tuple[tuple[ImageRef, Descriptor, ImageRef], ...]  # (into, blob, from): a blob held elsewhere
    missing: tuple[Missing, ...]
    requests: int


def locate(
    record: BaseRecord,
    repositories: Mapping[str, ImageRef],
    where: Callable[[str], ImageRef],
    client: RegistryClient,
    jobs: int = 8,
) -> Located:
    """Ask the target for every piece ``record`` leaves out, in the repository of each image that
    needs it (``repositories``: image name -> target repository), else in another repository
    that holds it (the base's, mapped by ``where``; or another image's): HEAD requests only."""
    tasks: list[tuple[Piece, str, ImageRef, tuple[ImageRef, ...]]] = []
    for digest in sorted(record.left_out):
        item = record.left_out[digest]
        others = [where(r) for r in item.base_repositories] + [repositories[n] for n in item.piece.images]
        for name in item.piece.images:
            into = repositories[name]
            elsewhere = tuple(dict.fromkeys(r for r in others if r.name != into.name))
            tasks.append((item.piece, name, into, elsewhere))
    count = [0]
    lock = threading.Lock()

    def has(piece: Piece, repo: ImageRef) -> bool:
        with lock:
            count[0] += 1
        if piece.manifest:
            return client.head_manifest(repo.with_digest(piece.digest)) is not None
        return client.blob_exists(repo, piece.digest)

    def one(task: tuple[Piece, str, ImageRef, tuple[ImageRef, ...]]) -> tuple[ImageRef | None, bool]:
        piece, _, into, elsewhere = task
        if has(piece, into):
            return into, True
        for repo in elsewhere:
            if has(piece, repo):
                return repo, False
        return None, False

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        answers = list(pool.map(one, tasks))
    manifests: dict[Digest, ImageRef] = {}
    blobs: dict[Digest, ImageRef] = {}
    mounts: dict[tuple[str, Digest], tuple[ImageRef, Descriptor, ImageRef]] = {}
    missing = []
    for (piece, name, into, _), (found, in_place) in zip(tasks, answers, strict=True):
        if found is None:
            missing.append(Missing(name, into, piece))
            continue
        (manifests if piece.manifest else blobs).setdefault(piece.digest, found)
        if not piece.manifest and not in_place:
            desc = Descriptor(piece.media_type, piece.digest, piece.size)
            mounts.setdefault((into.name, piece.digest), (into, desc, found))
    return Located(manifests, blobs, tuple(mounts.values()), tuple(missing), count[0])


def refusal(record: BaseRecord, bundle: str, target: str, located: Located) -> ConfigError:
    """The error for a target that lacks pieces the bundle leaves out: which images, which pieces,
    and which full bundle would supply them."""
    by_image: dict[str, list[Missing]] = {}
    for m in located.missing:
        by_image.setdefault(m.image, []).append(m)
    lines = []
    for name in sorted(by_image):
        items = sorted(by_image[name], key=lambda m: (not m.piece.manifest, -m.piece.size))
        shown = ", ".join(f"{m.piece.kind} {m.piece.digest} ({m.piece.size} bytes)" for m in items[:4])
        more = f" and {len(items) - 4} more" if len(items) > 4 else ""
        lines.append(f"  image {name} ({items[0].repository.name}): {shown}{more}")
    pieces = {m.piece.digest for m in located.missing}
    return ConfigError(
        f"refusing {bundle}: it is a differential bundle made against {record.describe()}, and {target} lacks "
        f"{len(pieces)} of the {len(record.left_out)} manifests and blobs it leaves out, so nothing was pushed "
        f"and no tag moved; missing:\n" + "\n".join(lines),
        hint=f"import the full bundle of that release (its lock has digest {record.lock_digest}"
        f"{', created ' + record.created_at if record.created_at else ''}) into {target} first, then this one; "
        "or carry a full bundle (archlift export without --since)",
    )


def bring(store: RegistryStore, mounts: Iterable[tuple[ImageRef, Descriptor, ImageRef]]) -> int:
    """Mount each blob the target holds in another repository into the one that needs it (a
    registry that refuses the mount gets it uploaded from there); the number brought."""
    n = 0
    for into, desc, origin in mounts:
        upload = store.mount(into, desc.digest, origin)
        if upload is not None:
            store.put_blob(into, desc, store.blob(origin, desc), origin=store.where(origin), upload=upload)
        n += 1
    return n


class WithBaseSource:
    """A differential bundle as the copy's source: the archive, and the target itself for the
    manifests (and, should a mount have been refused, the blobs) the bundle leaves out."""

    def __init__(self, archive: ArchiveReader, target: RegistryStore, located: Located) -> None:
        self.archive = archive
        self.target = target
        self.located = located

    def where(self, repo: ImageRef) -> str:
        return self.archive.where(repo)

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        if not self.archive.has_manifest(digest) and digest in self.located.manifests:
            return self.target.manifest(self.located.manifests[digest], digest)
        return self.archive.manifest(repo, digest)

    def resolve(self, ref: ImageRef) -> Descriptor | None:
        return self.archive.resolve(ref)

    def linked(self, repo: ImageRef, subjects: set[Digest]) -> Linked:
        return self.archive.linked(repo, subjects)

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        if self.archive.blob_name(desc.digest) not in self.archive.members and desc.digest in self.located.blobs:
            return self.target.blob(self.located.blobs[desc.digest], desc)
        return self.archive.blob(repo, desc)
