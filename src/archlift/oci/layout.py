"""OCI image layouts on disk: read them, and push a manifest tree from one by digest.

BuildKit's ``docker`` driver cannot push by digest, but it exports an OCI
layout (``--output type=oci,tar=false``). ``push_tree`` sends what a
registry lacks of that layout, children before parents, so the index only
appears once everything it names is there; it moves no tag.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ..errors import RegistryError
from ..refs import Digest, ImageRef
from . import Descriptor, Manifest, RegistryClient

CHUNK = 1 << 20


@dataclass(frozen=True)
class Layout:
    root: Path

    def blob_path(self, digest: Digest) -> Path:
        return self.root / "blobs" / digest.algorithm / digest.hex

    def read(self, digest: Digest) -> bytes:
        data = self.blob_path(digest).read_bytes()
        if Digest.of(data) != digest:
            raise RegistryError(f"{self.root}: blob {digest} does not match its digest")
        return data

    def manifest(self, digest: Digest, media_type: str = "") -> Manifest:
        return Manifest.of(self.read(digest), media_type)

    def index(self) -> list[Descriptor]:
        data = json.loads((self.root / "index.json").read_text())
        return [Descriptor.from_json(d) for d in data.get("manifests", [])]


@dataclass
class PushStats:
    blobs_sent: int = 0
    blobs_present: int = 0
    bytes_sent: int = 0


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def upload_file(client: RegistryClient, repo: ImageRef, path: Path, desc: Descriptor) -> int:
    """Stream ``path`` to ``repo`` as the blob ``desc`` (verified before the registry commits it)."""

    def opener() -> tuple[Iterator[bytes], Callable[[], None]]:
        return _file_chunks(path), lambda: None

    return client.upload_stream(repo, desc, opener, origin=str(path))


def push_tree(client: RegistryClient, layout: Layout, repo: ImageRef, top: Descriptor, *, jobs: int = 4) -> PushStats:
    """Push ``top`` and everything under it from ``layout`` to ``repo``, by digest."""
    stats = PushStats()
    manifests: list[tuple[Descriptor, Manifest]] = []
    blobs: dict[Digest, Descriptor] = {}
    _walk(layout, top, manifests, blobs)

    def send(desc: Descriptor) -> None:
        if client.blob_exists(repo, desc.digest):
            stats.blobs_present += 1
            return
        upload_file(client, repo, layout.blob_path(desc.digest), desc)
        stats.blobs_sent += 1
        stats.bytes_sent += desc.size

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(send, blobs.values()))
    for desc, manifest in manifests:  # children first: _walk appends in post-order; a PUT by digest is idempotent
        client.put_manifest(repo.with_digest(desc.digest), manifest.raw, manifest.media_type)
    return stats


def _walk(
    layout: Layout, desc: Descriptor, manifests: list[tuple[Descriptor, Manifest]], blobs: dict[Digest, Descriptor]
) -> None:
    manifest = layout.manifest(desc.digest, desc.media_type)
    for child in manifest.descriptors():
        if child.is_manifest:
            _walk(layout, child, manifests, blobs)
        else:
            blobs[child.digest] = child
    manifests.append((desc, manifest))
