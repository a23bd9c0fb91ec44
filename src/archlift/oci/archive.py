"""OCI layout archives: one uncompressed tar (``oci-archive`` compatible), the air-gap bundle.

At the root: ``oci-layout``, ``index.json`` (see ``archlift.oci.layout``), every
manifest and blob under ``blobs/<algorithm>/<hex>``, the caller's own files,
and last ``SHA256SUMS`` over every member that is not a blob (a blob is named
by its digest). Reproducible: members in a fixed order, mtime 0, root-owned.

``ArchiveReader.open`` checks the whole tar before anything is read from it:
every member is a plain file or directory with a relative path inside the root
(no ``..``, no absolute path, no link, no device), none appears twice, none
runs past the end of the file, every blob matches its digest and every other
file its checksum. The tar may be one file or the parts of a split bundle
(``archlift.oci.parts``), read in place through a view over them. ``ArchiveWriter``
is a layout directory beside the output, written out as the tar (or its parts)
by ``commit``, synced and renamed into place.
"""

from __future__ import annotations

import hashlib
import io
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, RegistryError
from ..refs import Digest, ImageRef, RefError
from .client import MAX_MANIFEST
from .copy import Progress
from .layout import CHUNK, LAYOUT_FILE, Entry, IndexedLayout, LayoutStore, parse_index
from .model import Descriptor, InvalidManifest, Manifest
from .parts import BundleFile, PartWriter, open_bundle_file, write_single
from .store import Opener

SUMS = "SHA256SUMS"
MAX_FILE = 64 << 20  # a member read whole (index.json, the caller's files)


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data in the tar file
    size: int


def _check_name(archive: Path, info: tarfile.TarInfo) -> str:
    name = info.name
    refuse = f"refusing {archive}: member '{name}'"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ConfigError(f"{refuse} has an absolute path; a bundle holds only paths relative to its root")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"{refuse} would be written outside the extraction root ('..' in its path)")
    if info.issym() or info.islnk():
        kind = "a symbolic link" if info.issym() else "a hard link"
        raise ConfigError(f"{refuse} is {kind} (to '{info.linkname}'); links are not allowed in a bundle")
    if not (info.isfile() or info.isdir()):
        raise ConfigError(f"{refuse} is a device, FIFO or other special file; only plain files are allowed")
    return posixpath.normpath("/".join(parts)) if parts else "."


class ArchiveReader(IndexedLayout):
    """A checked archive, read in place (members by their offsets in the tar)."""

    def __init__(self, file: BundleFile, members: dict[str, Member], entries: list[Entry]) -> None:
        self.file = file
        self.path = file.path
        self.members = members
        self._entries = entries
        self._subjects: dict[Digest, Digest | None] = {}

    def refuse(self, why: str) -> ConfigError:
        return ConfigError(
            f"refusing {self.path}: {why}", hint="the bundle is damaged or was not made by archlift export"
        )

    @classmethod
    def open(
        cls, paths: Path | Sequence[Path], progress: Progress | None = None, required: Sequence[str] = ()
    ) -> ArchiveReader:
        """Read and check the whole archive, one file or the parts of one (and that it has the
        ``required`` files); nothing is written anywhere."""
        file = open_bundle_file([paths] if isinstance(paths, Path) else list(paths))
        path = file.path
        members: dict[str, Member] = {}
        size = file.size
        try:
            with file.open() as f, tarfile.open(fileobj=f, mode="r:") as tar:
                for info in tar:
                    name = _check_name(path, info)
                    if info.isdir():
                        continue
                    if name in members:
                        raise ConfigError(f"refusing {path}: member '{name}' appears twice")
                    if info.offset_data + info.size > size:
                        raise ConfigError(
                            f"refusing {path}: it is truncated: member '{name}' ends at byte "
                            f"{info.offset_data + info.size}, the bundle has {size} bytes",
                            hint="copy the bundle again (or export it again)",
                        )
                    members[name] = Member(name, info.offset_data, info.size)
        except tarfile.TarError as e:
            if file.parts:
                file.check_parts()  # a damaged part is named
            raise ConfigError(
                f"{path}: not an uncompressed tar archive, or a truncated one ({e})",
                hint="copy the bundle again; 'archlift verify-bundle' checks a copy before it is carried",
            ) from None
        for name in ("oci-layout", "index.json", SUMS, *required):
            if name not in members:
                truncated = " (the bundle may be truncated)" if name == SUMS else ""
                raise ConfigError(f"refusing {path}: it has no {name}{truncated}; was it written by 'archlift export'?")
        archive = cls(file, members, [])
        if progress:
            progress.start(sum(m.size for m in members.values()) + (size if file.parts else 0))
        if file.parts:
            file.check_parts(progress.advance if progress else None)
        sums: dict[str, str] = {}
        for line in archive.read(SUMS).decode("utf-8", "replace").splitlines():
            digest, _, name = line.partition("  ")
            sums[name] = digest
        for name in sorted(members, key=lambda n: members[n].offset):  # in file order: one pass
            if name != SUMS:
                archive._check_member(name, sums.get(name), progress)
        missing = sorted(n for n in sums if n not in members)
        if missing:
            raise archive.refuse(f"{SUMS} lists {', '.join(missing)}, which the bundle lacks")
        archive._entries = parse_index(archive.read("index.json"), f"refusing {path}")
        return archive

    def _check_member(self, name: str, listed: str | None, progress: Progress | None) -> None:
        """A blob against the digest it is named by, any other file against its line in ``SUMS``."""
        if name.startswith("blobs/"):
            algorithm, _, hexd = name[len("blobs/") :].partition("/")
            try:
                digest = Digest.parse(f"{algorithm}:{hexd}")
            except RefError:
                raise self.refuse(f"'{name}' is not named by a digest (blobs/sha256/<64 hex digits>)") from None
            algorithm, expected = digest.algorithm, digest.hex
        elif listed is None:
            raise self.refuse(f"'{name}' is not listed in {SUMS}")
        else:
            algorithm, expected = "sha256", listed
        h = hashlib.new(algorithm)
        chunks, close = self.chunks(name)
        try:
            for chunk in chunks:
                h.update(chunk)
                if progress:
                    progress.advance(len(chunk))
        finally:
            close()
        if h.hexdigest() != expected:
            what = "its digest" if name.startswith("blobs/") else f"its checksum in {SUMS}"
            where = self.file.where(self.members[name].offset)
            raise self.refuse(
                f"'{name}'{f' (in {where})' if where else ''} does not match {what} (sha256 is {h.hexdigest()}): "
                "corrupted"
            )

    # --- members
    def read(self, name: str) -> bytes:
        """A whole member (at most ``MAX_FILE`` bytes)."""
        m = self.members[name]
        if m.size > MAX_FILE:
            raise self.refuse(f"'{name}' has {m.size} bytes, more than a bundle's file may have ({MAX_FILE >> 20} MiB)")
        with self.file.open() as f:
            f.seek(m.offset)
            return f.read(m.size)

    def chunks(self, name: str) -> tuple[Iterator[bytes], Callable[[], None]]:
        m = self.members[name]
        f = self.file.open()
        f.seek(m.offset)

        def gen() -> Iterator[bytes]:
            left = m.size
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

        return gen(), f.close

    def blob_name(self, digest: Digest) -> str:
        return f"blobs/{digest.algorithm}/{digest.hex}"

    def blob_member(self, desc: Descriptor) -> Member:
        """The member of a blob a manifest names, there and of the size the manifest says."""
        name = self.blob_name(desc.digest)
        m = self.members.get(name)
        if m is None:
            raise self.refuse(f"it lacks {name}, which a manifest in it needs")
        if m.size != desc.size:
            raise self.refuse(f"{name} has {m.size} bytes; the manifest that names it says {desc.size}")
        return m

    # --- the store (a source)
    def entries(self) -> list[Entry]:
        return list(self._entries)

    def where(self, repo: ImageRef) -> str:
        return str(self.path)

    def has_manifest(self, digest: Digest) -> bool:
        return self.blob_name(digest) in self.members

    def manifest(self, repo: ImageRef, digest: Digest) -> Manifest:
        return self.read_manifest(digest)

    def read_manifest(self, digest: Digest) -> Manifest:
        """A manifest of the archive, by digest (at most 4 MiB)."""
        name = self.blob_name(digest)
        m = self.members.get(name)
        if m is None:
            raise self.refuse(f"it lacks {name}, which a manifest in it needs")
        if m.size > MAX_MANIFEST:
            raise self.refuse(f"manifest {name} has {m.size} bytes, more than 4 MiB")
        try:
            manifest = Manifest.of(self.read(name))
        except InvalidManifest as e:
            raise self.refuse(f"{name} is not a valid manifest ({e})") from None
        if manifest.digest != digest:
            raise self.refuse(f"{name} does not match its digest")
        return manifest

    def blob(self, repo: ImageRef, desc: Descriptor) -> Opener:
        name = self.blob_name(desc.digest)
        if name not in self.members:
            raise RegistryError(f"{self.path} has no blob {desc.digest}")
        return lambda: self.chunks(name)


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


@dataclass(frozen=True)
class ArchiveStats:
    manifests: int
    blobs: int  # not manifests
    bytes: int  # of both
    file_bytes: int = 0  # of the other files (oci-layout, index.json, the caller's, SHA256SUMS)
    outputs: tuple[Path, ...] = ()  # the archive, or its parts in order


class ArchiveWriter(LayoutStore):
    """A store that becomes an archive: a layout directory beside ``output`` (so the tar can
    be renamed into place), written out by ``commit``; ``close`` removes the directory.
    ``max_size``: split the archive into parts of at most that many bytes (``archlift.oci.parts``)."""

    def __init__(self, output: Path, max_size: int | None = None) -> None:
        output.parent.mkdir(parents=True, exist_ok=True)
        self.output = output
        self.max_size = max_size
        self.work = Path(tempfile.mkdtemp(prefix=".archlift-export-", dir=output.parent))
        super().__init__(self.work / "layout", save_index=False)

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def where(self, repo: ImageRef) -> str:
        return str(self.output)

    def commit(self, files: Sequence[tuple[str, bytes]] = ()) -> ArchiveStats:
        """Write the archive: ``oci-layout``, ``index.json``, ``files``, the manifests, the
        other blobs (each removed from the directory once in the tar), ``SHA256SUMS``; synced,
        then renamed into place (split: every part, the last one last)."""
        sums: list[tuple[str, str]] = []
        manifests = self.manifests_written()
        blobs_dir = self.root / "blobs"
        blobs = sorted(
            Digest(f"{d.name}:{p.name}")
            for d in (blobs_dir.glob("*") if blobs_dir.is_dir() else ())
            for p in d.iterdir()
            if not p.name.startswith(".")  # a blob being written
        )
        index = self.index_json()
        counts = [0, 0, 0, 0]
        tmp = self.work / "archive.tar"
        parts: PartWriter | None = None
        if self.max_size is not None:  # the id: what the bundle holds, and how it is cut
            ident = hashlib.sha256(index)
            for name, data in files:
                ident.update(name.encode() + Digest.of(data).hex.encode())
            ident.update(f"{self.max_size}".encode())
            parts = PartWriter(self.work, self.output, self.max_size, ident.hexdigest()[:32])
        sink = parts if parts is not None else tmp.open("xb")
        with sink, tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:

            def add_bytes(name: str, data: bytes) -> None:
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                sums.append((hashlib.sha256(data).hexdigest(), name))
                counts[3] += len(data)

            add_bytes("oci-layout", LAYOUT_FILE)
            add_bytes("index.json", index)
            for name, data in files:
                add_bytes(name, data)
            for is_manifest in (True, False):  # manifests first: a reader finds its way quickly
                for digest in blobs:
                    if (digest in manifests) != is_manifest:
                        continue
                    path = self.layout.blob_path(digest)
                    size = path.stat().st_size
                    with path.open("rb") as f:
                        tar.addfile(_tarinfo(f"blobs/{digest.algorithm}/{digest.hex}", size), f)
                    path.unlink()
                    counts[0 if is_manifest else 1] += 1
                    counts[2] += size
            listing = "".join(f"{h}  {n}\n" for h, n in sums).encode()
            tar.addfile(_tarinfo(SUMS, len(listing)), io.BytesIO(listing))
            counts[3] += len(listing)
        if parts is not None:
            outputs = tuple(parts.finish())
        else:
            write_single(tmp, self.output)
            outputs = (self.output,)
        return ArchiveStats(counts[0], counts[1], counts[2], counts[3], outputs)
