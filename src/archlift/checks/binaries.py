"""Binaries match their platform: every ELF file of an image's final filesystem is built for the
machine of the platform its index lists it under.

The pure parts, tested without a registry:

- :func:`elf_machine`: class, byte order and ``e_machine`` from a file's first bytes;
- :func:`scan_layer`: one layer read as a stream (gzip, zstd or plain tar, told apart by their
  magic bytes as containerd does), in bounded memory: only the first 64 bytes of each regular
  file are read, the rest is skipped; whiteouts and opaque directories are recorded;
- :func:`final_files`: the layers applied in order, OCI whiteouts honoured: the ELF files of
  the filesystem a container gets;
- :func:`judge`: those files against the platform's machine and the paths a component allows.

:class:`Checker` reads images from a registry, or from the OCI layout a build has just pushed
(``Checker.layout_pushed``: the same bytes, read from the disk while the bake still builds the
other components): every layer at most once per run, shared by the platforms and components that
have it in common, and each platform manifest's ELF files remembered in the cache directory by
digest (a component skipped on a re-run is judged again without reading anything). :func:`gate` is
the build's step between "pushed by digest" and "move tags": it judges every platform of every
component, with what the layouts gave already.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import functools
import hashlib
import io
import json
import logging
import posixpath
import tarfile
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ..errors import ArchliftError, BuildError, RegistryError
from ..lock import BinariesRecord, ComponentRelease, write_atomic
from ..refs import Digest, ImageRef, Platform

if TYPE_CHECKING:
    from ..config.model import BinariesPolicy, Config
    from ..oci import Descriptor, Manifest, RegistryClient
    from ..oci.store import Opener
    from ..steps.build import BuildResult
    from ..ui import Reporter

log = logging.getLogger("archlift.checks.binaries")

ELF_MAGIC = b"\x7fELF"
HEAD = 64  # bytes read of each regular file: the ELF64 header
SCAN_VERSION = 1  # of the cached findings: a change of what a scan records bumps it
MAX_ENTRIES = 1_000_000  # tar entries in one layer
HEADER_LIMIT = 8 << 20  # bytes of tar headers (PAX, GNU long names) between two members
MAX_LAYER_BYTES = 64 << 30  # uncompressed bytes of one layer
SHOWN = 5  # offending paths named in a message, then a count

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# Filesystem layers. BuildKit writes the OCI types, and under Docker media types (oci-mediatypes=false)
# labels zstd layers application/vnd.docker.image.rootfs.diff.tar.zstd, as containerd names them.
LAYER_TYPES = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        "application/vnd.docker.image.rootfs.foreign.diff.tar",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)


# --- ELF machines ---------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Machine:
    """What an ELF header says it runs on: ``e_machine``, the class (32/64 bits) and byte order."""

    code: int
    bits: int
    little: bool

    @property
    def name(self) -> str:
        known = _NAMES.get((self.code, self.bits, self.little))
        if known:
            return known
        base = _BASE_NAMES.get(self.code, f"e_machine {self.code}")
        return f"{base} ({self.bits}-bit {'little' if self.little else 'big'}-endian)"


_NAMES = {
    (62, 64, True): "x86-64",
    (183, 64, True): "aarch64",
    (40, 32, True): "ARM",
    (3, 32, True): "i386",
    (21, 64, True): "PowerPC64 little-endian",
    (21, 64, False): "PowerPC64 big-endian",
    (22, 64, False): "S390x",
    (243, 64, True): "RISC-V 64-bit",
    (8, 64, True): "MIPS64 little-endian",
    (258, 64, True): "LoongArch64",
}
_BASE_NAMES = {
    2: "SPARC",
    3: "i386",
    8: "MIPS",
    20: "PowerPC",
    21: "PowerPC64",
    22: "S390",
    40: "ARM",
    43: "SPARC V9",
    50: "IA-64",
    62: "x86-64",
    183: "aarch64",
    243: "RISC-V",
    258: "LoongArch",
}
# The machine of each Linux platform's binaries (the variant does not change it).
PLATFORM_MACHINES = {
    "linux/amd64": Machine(62, 64, True),
    "linux/arm64": Machine(183, 64, True),
    "linux/arm": Machine(40, 32, True),
    "linux/386": Machine(3, 32, True),
    "linux/ppc64le": Machine(21, 64, True),
    "linux/s390x": Machine(22, 64, False),
    "linux/riscv64": Machine(243, 64, True),
}
_DEFAULT_VARIANTS = {"arm64": "v8", "arm": "v7", "amd64": "v1"}


def elf_machine(head: bytes) -> Machine | None:
    """The machine of an ELF file from its first bytes (at least 20); None for anything else
    (a script, a text or data file, a header no kernel would load)."""
    if len(head) < 20 or head[:4] != ELF_MAGIC or head[4] not in (1, 2) or head[5] not in (1, 2):
        return None
    little = head[5] == 1
    return Machine(int.from_bytes(head[18:20], "little" if little else "big"), 32 if head[4] == 1 else 64, little)


def expected_machine(platform: Platform) -> Machine | None:
    """The machine a platform's binaries are for; None when archlift knows none (not Linux, or an
    architecture not in :data:`PLATFORM_MACHINES`)."""
    return PLATFORM_MACHINES.get(f"{platform.os}/{platform.architecture}")


def same_platform(a: Platform, b: Platform) -> bool:
    """os, architecture and variant equal, a missing variant taken as the architecture's default
    (arm64 = v8, arm = v7, amd64 = v1), as containerd normalises them."""

    def norm(p: Platform) -> tuple[str, str, str]:
        return p.os, p.architecture, p.variant or _DEFAULT_VARIANTS.get(p.architecture, "")

    return norm(a) == norm(b)


def platform_of(text: str) -> Platform:
    """``os/arch[/variant]`` as an index or a config writes it (any value, not only known platforms)."""
    parts = text.split("/")
    return Platform(parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")


def path_allowed(path: str, pattern: str) -> bool:
    """``pattern`` matches ``path``: ``*``, ``?`` and ``[...]`` within one path segment, ``**`` any
    number of segments (``/usr/bin/qemu-*``, ``/opt/cross/**``)."""
    return _match(tuple(path.strip("/").split("/")), tuple(pattern.strip("/").split("/")))


def _match(parts: tuple[str, ...], pattern: tuple[str, ...]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatch.fnmatchcase(parts[0], pattern[0]) and _match(parts[1:], pattern[1:])


# --- reading one layer ----------------------------------------------------------------------
@dataclass(frozen=True)
class Link:
    target: str


_DIR, _OTHER = "dir", "other"


@dataclass(frozen=True)
class LayerScan:
    """What one layer holds, as far as the ELF files of the final filesystem go: every path is
    absolute and normalised."""

    elves: dict[str, Machine]  # regular files that are ELF
    links: dict[str, str]  # hard links: path -> target
    dirs: frozenset[str]
    others: frozenset[str]  # every other entry: other files, symlinks, devices
    whiteouts: frozenset[str]  # paths this layer deletes from the layers under it
    opaques: frozenset[str]  # directories whose content in the layers under it is hidden

    def replaces(self, path: str) -> bool:
        """Whether this layer has an entry at ``path`` that is not a directory."""
        return path in self.elves or path in self.links or path in self.others


def _normal(name: str) -> str:
    return posixpath.normpath("/" + name.lstrip("/"))


class _Counted(io.RawIOBase):
    """The uncompressed tar stream, counted: tar headers (PAX records, GNU long names) between two
    members may not exceed ``HEADER_LIMIT`` (tarfile would hold them in memory whole), and the
    layer may not exceed ``MAX_LAYER_BYTES`` (a decompression bomb)."""

    def __init__(self, inner: IO[bytes], what: str) -> None:
        self._inner = inner
        self._what = what
        self.pos = 0
        self.limit = HEADER_LIMIT

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        n = len(data)
        b[:n] = data
        self.pos += n
        if self.pos > self.limit:
            raise RegistryError(f"{self._what}: a tar header of more than {HEADER_LIMIT >> 20} MiB")
        if self.pos > MAX_LAYER_BYTES:
            raise RegistryError(f"{self._what}: more than {MAX_LAYER_BYTES >> 30} GiB uncompressed")
        return n


class _Raw(io.RawIOBase):
    """Any binary file object as a raw stream (for a buffered reader that can peek)."""

    def __init__(self, inner: IO[bytes] | io.RawIOBase) -> None:
        self._inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._inner.read(len(b))
        b[: len(data)] = data
        return len(data)


def _decompressed(stream: IO[bytes] | io.RawIOBase, what: str) -> IO[bytes]:
    raw = stream if isinstance(stream, io.RawIOBase) else _Raw(stream)
    buffered = io.BufferedReader(raw, 1 << 20)
    magic = buffered.peek(4)[:4]
    if magic[:2] == _GZIP_MAGIC:
        import gzip

        return cast(IO[bytes], gzip.GzipFile(fileobj=buffered, mode="rb"))
    if magic == _ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:  # a declared dependency: only a broken install lacks it
            raise RegistryError(f"{what} is zstd-compressed and the zstandard package is missing") from None
        reader: IO[bytes] = zstandard.ZstdDecompressor().stream_reader(buffered, read_across_frames=True, closefd=False)
        return reader
    return buffered


def _decompression_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, EOFError, zlib.error]
    try:
        import zstandard

        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def scan_layer(stream: IO[bytes] | io.RawIOBase, what: str = "the layer") -> LayerScan:
    """Read one layer (a tar, gzip- or zstd-compressed or not) to its end and record its entries.

    Memory stays bounded: tar is read as a stream, the first ``HEAD`` bytes of each regular file
    are read and the rest skipped, tar headers are capped. Raises :class:`RegistryError` for a
    stream that is not a layer.
    """
    counted = _Counted(_decompressed(stream, what), what)
    entries: dict[str, Machine | Link | str] = {}
    whiteouts: set[str] = set()
    opaques: set[str] = set()
    try:
        with tarfile.open(fileobj=counted, mode="r|", bufsize=1 << 20) as tar:
            while (member := tar.next()) is not None:
                counted.limit = member.offset_data + -(-member.size // 512) * 512 + HEADER_LIMIT
                _record(tar, member, entries, whiteouts, opaques)
                # TarFile keeps every member read in .members (an attribute typeshed leaves out): a
                # stream needs none of them, and a layer of a million entries would hold them all.
                tar.members.clear()  # type: ignore[attr-defined]
                if len(entries) + len(whiteouts) > MAX_ENTRIES:
                    raise RegistryError(f"{what}: more than {MAX_ENTRIES} entries")
        counted.limit = MAX_LAYER_BYTES  # what follows the end of the archive is read to its end
        while counted.read(1 << 20):
            pass
    except tarfile.TarError as e:
        raise RegistryError(f"{what} is not a valid tar archive: {e}") from None
    except _decompression_errors() as e:
        raise RegistryError(f"{what} cannot be decompressed: {e.__class__.__name__}: {e}") from None
    return LayerScan(
        elves={p: v for p, v in entries.items() if isinstance(v, Machine)},
        links={p: v.target for p, v in entries.items() if isinstance(v, Link)},
        dirs=frozenset(p for p, v in entries.items() if v == _DIR),
        others=frozenset(p for p, v in entries.items() if v == _OTHER),
        whiteouts=frozenset(whiteouts),
        opaques=frozenset(opaques),
    )


def _record(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    entries: dict[str, Machine | Link | str],
    whiteouts: set[str],
    opaques: set[str],
) -> None:
    path = _normal(member.name)
    if path == "/":
        return
    parent, base = posixpath.split(path)
    if base.startswith(".wh."):
        if base == ".wh..wh..opq":
            opaques.add(parent)
        elif not base.startswith(".wh..wh."):  # .wh..wh.* other than .opq: aufs bookkeeping
            whiteouts.add(posixpath.join(parent, base[4:]))
        return
    value: Machine | Link | str = _OTHER
    if member.isdir():
        value = _DIR
    elif member.islnk():
        value = Link(_normal(member.linkname))
    elif member.isreg() and member.size >= 20:
        f = tar.extractfile(member)
        machine = elf_machine(f.read(HEAD)) if f is not None else None
        value = machine or _OTHER
    entries[path] = value


# --- the final filesystem -------------------------------------------------------------------
def final_files(layers: Iterable[LayerScan]) -> dict[str, Machine]:
    """The ELF files left when ``layers`` are applied in order: a layer's whiteout deletes the
    path (and what is under it) from the layers below, an opaque directory hides their content
    of it, and any entry replaces the path below it (a file or a link also what was under a
    directory of that name)."""
    files: dict[str, Machine] = {}
    for layer in layers:
        for path in [p for p in files if _hidden(p, layer)]:
            del files[path]
        linked = {}
        for path, target in layer.links.items():
            machine = layer.elves.get(target) or files.get(target)
            if machine is not None:
                linked[path] = machine
        files.update(layer.elves)
        files.update(linked)
    return files


def _hidden(path: str, layer: LayerScan) -> bool:
    if path in layer.whiteouts or path in layer.dirs or layer.replaces(path):
        return True
    parent = posixpath.dirname(path)
    while True:
        if parent in layer.opaques:
            return True
        if parent == "/":
            return False
        if parent in layer.whiteouts or layer.replaces(parent):
            return True
        parent = posixpath.dirname(parent)


# --- judging --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Mismatch:
    path: str
    machine: str


@dataclass(frozen=True)
class PlatformBinaries:
    """The check of one platform's image."""

    image: str  # the platform's manifest, by digest
    platform: str
    expected: str  # the machine its binaries must be for; "" when none is known (not checked)
    elf_files: int
    machines: dict[str, int]
    mismatches: tuple[Mismatch, ...] = ()
    allowed: tuple[Mismatch, ...] = ()  # another machine's, in paths the component allows
    config_platform: str = ""  # the image config's platform when it is not the one the index lists

    @property
    def checked(self) -> bool:
        return bool(self.expected)

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.config_platform

    def record(self) -> BinariesRecord:
        return BinariesRecord(self.elf_files, dict(self.machines))

    def summary(self) -> str:
        """One line: ``linux/arm64: 12 ELF files, aarch64`` or what is wrong."""
        if not self.checked:
            return f"{self.platform}: not checked (no ELF machine known for this platform)"
        if self.ok:
            return f"{self.platform}: {self.elf_files} ELF file(s) ok"
        parts = []
        if self.config_platform:
            parts.append(f"the image config says {self.config_platform}")
        if self.mismatches:
            first = self.mismatches[0]
            more = f" (+{len(self.mismatches) - 1} more)" if len(self.mismatches) > 1 else ""
            parts.append(f"{first.path} is {first.machine}{more}")
        return f"{self.platform}: {'; '.join(parts)}"

    def problem(self) -> str:
        """What is wrong, naming the image, the platform, at most ``SHOWN`` paths and a count."""
        lines = []
        if self.config_platform:
            lines.append(f"{self.image} is listed as {self.platform}, but its image config says {self.config_platform}")
        if self.mismatches:
            n = len(self.mismatches)
            lines.append(
                f"{self.image} ({self.platform}) holds {n} ELF file(s) for another machine (expected {self.expected}):"
            )
            lines += [f"  {m.path}: {m.machine}" for m in self.mismatches[:SHOWN]]
            if n > SHOWN:
                lines.append(f"  ... and {n - SHOWN} more")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "platform": self.platform,
            "expected": self.expected or None,
            "elf_files": self.elf_files,
            "machines": dict(sorted(self.machines.items())),
            "mismatches": [{"path": m.path, "machine": m.machine} for m in self.mismatches],
            "allowed": [{"path": m.path, "machine": m.machine} for m in self.allowed],
            "config_platform": self.config_platform or None,
            "ok": self.ok,
        }


def judge(
    image: str,
    platform: Platform,
    files: Mapping[str, Machine],
    allow: Sequence[str] = (),
    config_platform: str = "",
) -> PlatformBinaries:
    """``files`` (path -> machine) against the machine of ``platform``; paths matching an ``allow``
    pattern may be another machine's."""
    expected = expected_machine(platform)
    machines: dict[str, int] = {}
    mismatches: list[Mismatch] = []
    allowed: list[Mismatch] = []
    for path in sorted(files):
        machine = files[path]
        machines[machine.name] = machines.get(machine.name, 0) + 1
        if expected is None or machine == expected:
            continue
        found = Mismatch(path, machine.name)
        (allowed if any(path_allowed(path, p) for p in allow) else mismatches).append(found)
    return PlatformBinaries(
        image=image,
        platform=str(platform),
        expected=expected.name if expected else "",
        elf_files=len(files),
        machines=machines,
        mismatches=tuple(mismatches),
        allowed=tuple(allowed),
        config_platform=config_platform,
    )


# --- reading images from a registry ---------------------------------------------------------
@dataclass(frozen=True)
class ImageFiles:
    """The ELF files of one platform manifest's final filesystem, and the platform its config names."""

    config_platform: Platform | None
    files: dict[str, Machine]


class _Blob(io.RawIOBase):
    """A blob's bytes (from a registry's answer or a layout's file) as a raw stream, its size and
    digest checked when it ends; ``release`` ends the read."""

    def __init__(self, chunks: Iterable[Any], release: Callable[[], None], desc: Descriptor, what: str) -> None:
        self._release = release
        self._chunks: Iterator[Any] = iter(chunks)
        self._desc = desc
        self._what = what
        self._hash = hashlib.new(desc.digest.algorithm)
        self._size = 0
        self._rest = memoryview(b"")
        self._ended = False

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if not self._rest:
            if self._ended:
                return 0
            self._rest = self._next()
            if not self._rest:
                return 0
        n = min(len(b), len(self._rest))
        b[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n

    def _next(self) -> memoryview:
        from ..oci.client import DigestMismatch, RequestFailed

        try:  # the client's reader: a reset, a deadline or more bytes than the size are its errors already
            chunk = next(self._chunks, None)
        except OSError as e:  # temporary (a layout's file: an error all the same)
            raise RequestFailed(f"reading {self._what}: {e.__class__.__name__}", temporary=True) from None
        if chunk is None:
            self._ended = True
            actual = f"{self._desc.digest.algorithm}:{self._hash.hexdigest()}"
            if self._size != self._desc.size or actual != self._desc.digest.value:
                raise DigestMismatch(
                    f"{self._what}: {self._size} bytes came with digest {actual}, expected {self._desc.size} bytes",
                    expected=self._desc.digest,
                    actual=actual,
                )
            return memoryview(b"")
        self._hash.update(chunk)
        self._size += len(chunk)
        if self._size > self._desc.size:
            raise DigestMismatch(
                f"{self._what}: more than the {self._desc.size} bytes the manifest says came",
                expected=self._desc.digest,
                actual="",
            )
        # No copy: a chunk stays valid until the next-but-one is read, and this one is used up first.
        return chunk if isinstance(chunk, memoryview) else memoryview(chunk)

    def close(self) -> None:
        if not self.closed:
            self._release()
        super().close()


class _Images(Protocol):
    """Where the check reads a platform image from: a registry repository, or the OCI layout the bake
    wrote (``authoritative``: a failure to read there is the image's; a layout's is only the layout's)."""

    where: str
    authoritative: bool

    def manifest(self, digest: Digest) -> Manifest: ...
    def config(self, desc: Descriptor) -> bytes: ...
    def layer(self, desc: Descriptor, what: str) -> _Blob: ...


class _Registry:
    def __init__(self, client: RegistryClient, repo: ImageRef) -> None:
        self.client, self.repo = client, repo
        self.where = repo.name
        self.authoritative = True

    def manifest(self, digest: Digest) -> Manifest:
        return self.client.get_manifest(self.repo.with_digest(digest))  # verified against the digest

    def config(self, desc: Descriptor) -> bytes:
        return self.client.get_blob(self.repo, desc.digest)

    def layer(self, desc: Descriptor, what: str) -> _Blob:
        reader = self.client.open_blob(self.repo, desc)
        return _Blob(reader.chunks(), reader.release, desc, what)


class _Layout:
    """The OCI layout a build wrote and pushed by digest: the same bytes as the registry's, read
    from the disk (and verified all the same)."""

    def __init__(self, root: Path, repo: ImageRef) -> None:
        from ..oci.layout import Layout

        self.layout = Layout(root)
        self.where = repo.name
        self.authoritative = False

    def manifest(self, digest: Digest) -> Manifest:
        return self.layout.manifest(digest)  # verified against the digest

    def config(self, desc: Descriptor) -> bytes:
        return self.layout.read(desc.digest)

    def layer(self, desc: Descriptor, what: str) -> _Blob:
        f = self.layout.blob_path(desc.digest).open("rb")
        return _Blob(iter(functools.partial(f.read, 1 << 20), b""), f.close, desc, what)


T = TypeVar("T")


def default_cache() -> Path:
    from ..steps.sources import cache_root

    return cache_root() / "binaries"


class Checker:
    """Checks images in registries; one per run, shared by threads. Each layer is read at most once
    (the first thread reads it, the others wait for its findings), and each platform manifest's ELF
    files are kept in ``cache`` (a directory; None: nowhere) by manifest digest. The build hands it
    each OCI layout as soon as it is pushed (``layout_pushed``): its images are checked from the
    disk then, while the bake builds the others, and the gate finds them done."""

    def __init__(self, client: RegistryClient, *, cache: Path | None = None, workers: int = 4) -> None:
        self.client = client
        self.cache = cache
        self._lock = threading.Lock()
        self._layers: dict[Digest, Future[LayerScan]] = {}
        self._images: dict[Digest, Future[ImageFiles]] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="binaries")
        self.layers_read = 0

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Checker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _once(
        self, table: dict[Digest, Future[T]], key: Digest, compute: Callable[[], T], *, keep_failure: bool = True
    ) -> T:
        """``compute()`` once per ``key``; the other threads that ask meanwhile wait for it. A failure
        is kept (asked again, it fails the same) unless ``keep_failure`` is false: then the next one
        to ask computes it again (from the registry)."""
        with self._lock:
            future = table.get(key)
            owner = future is None
            if future is None:
                future = table[key] = Future()
        if owner:
            try:
                future.set_result(compute())
            except BaseException as e:
                if not keep_failure:
                    with self._lock:
                        table.pop(key, None)
                future.set_exception(e)
        return future.result()

    # --- one platform's image -------------------------------------------------
    def check(
        self, repo: ImageRef, digest: Digest, platform: Platform, allow: Sequence[str] = (), *, listed: bool = True
    ) -> PlatformBinaries:
        """Judge the image manifest ``repo@digest``, which the index lists as ``platform`` (``listed``;
        else the platform comes from its own config and there is nothing to compare it with)."""
        found = self.files(repo, digest)
        config = ""
        if listed and found.config_platform is not None and not same_platform(found.config_platform, platform):
            config = str(found.config_platform)
        return judge(f"{repo.name}@{digest}", platform, found.files, allow, config)

    def check_image(self, ref: ImageRef, allow: Sequence[str] = ()) -> tuple[PlatformBinaries, ...]:
        """Every platform of ``ref`` (an index: each listed platform; an image manifest: the platform
        its config names). Attestation manifests are not images and are left out."""
        top = self.client.get_manifest(ref)
        repo = ImageRef(ref.registry, ref.repository)
        if top.is_index:
            return tuple(
                self.check(repo, d.digest, d.platform, allow)
                for d in top.descriptors()
                if d.platform is not None and not d.is_attestation
            )
        found = self.files(repo, top.digest)
        if found.config_platform is None:
            return ()  # an artifact, not a runnable image
        return (self.check(repo, top.digest, found.config_platform, allow, listed=False),)

    def files(self, repo: ImageRef, digest: Digest) -> ImageFiles:
        """The ELF files of the final filesystem of ``repo@digest`` (an image manifest)."""
        return self._files(_Registry(self.client, repo), digest)

    def layout_pushed(self, root: Path, digest: Digest, repo: ImageRef) -> int:
        """For the build, as soon as it has pushed ``digest`` (an index or an image manifest) from the
        OCI layout ``root`` to ``repo`` by digest: find the ELF files of each of its platform images,
        reading the layout (the bytes that were pushed) instead of the registry. The gate then judges
        them with nothing left to read. Best effort: what fails here is read again from the registry
        when the gate asks for it (and fails there, when the image itself is at fault). Returns how many
        platform images were read."""
        source = _Layout(root, repo)
        errors = (ArchliftError, OSError, ValueError, KeyError, TypeError)
        try:
            top = source.manifest(digest)
        except errors as e:
            log.debug("%s@%s: not checked from its layout (%s); the gate reads the registry", repo.name, digest, e)
            return 0
        images = [digest]
        if top.is_index:
            images = [d.digest for d in top.descriptors() if d.platform is not None and not d.is_attestation]
        read = 0
        for image in images:
            try:
                self._files(source, image)
                read += 1
            except errors as e:
                log.debug("%s@%s: not checked from its layout (%s); the gate reads the registry", repo.name, image, e)
        return read

    def _files(self, source: _Images, digest: Digest) -> ImageFiles:
        return self._once(
            self._images, digest, lambda: self._read_files(source, digest), keep_failure=source.authoritative
        )

    def _read_files(self, source: _Images, digest: Digest) -> ImageFiles:
        cached = self._cached(digest)
        if cached is not None:
            return cached
        manifest = source.manifest(digest)
        if manifest.is_index:
            raise RegistryError(f"{source.where}@{digest} is an index where an image manifest was expected")
        config_platform = None
        config = manifest.config
        if config is not None:
            try:
                doc = json.loads(source.config(config))
            except ValueError:
                doc = None
            if isinstance(doc, dict) and doc.get("os") and doc.get("architecture"):
                config_platform = Platform(str(doc["os"]), str(doc["architecture"]), str(doc.get("variant") or ""))
        layers = [d for d in manifest.descriptors() if config is None or d.digest != config.digest]
        scans = list(self._pool.map(lambda d: self.layer(source, d), layers))
        found = ImageFiles(config_platform, final_files(scans))
        self._remember(digest, found)
        return found

    def layer(self, source: _Images, desc: Descriptor) -> LayerScan:
        return self._once(
            self._layers, desc.digest, lambda: self._read_layer(source, desc), keep_failure=source.authoritative
        )

    def _read_layer(self, source: _Images, desc: Descriptor) -> LayerScan:
        from ..oci.client import RequestFailed

        what = f"layer {desc.digest.short()} of {source.where}"
        if desc.media_type not in LAYER_TYPES:
            if "encrypted" in desc.media_type:
                raise RegistryError(f"{what} is encrypted ({desc.media_type}): its files cannot be checked")
            raise RegistryError(f"{what} has media type '{desc.media_type}', which is not a filesystem layer")
        with self._lock:
            self.layers_read += 1
        for attempt in range(3):
            blob = source.layer(desc, what)
            try:
                return scan_layer(blob, what)
            except RequestFailed as e:
                if not e.temporary or attempt == 2 or not source.authoritative:
                    raise
            finally:
                blob.close()
        raise AssertionError("unreachable")

    # --- the cache of findings --------------------------------------------------
    def _cache_path(self, digest: Digest) -> Path | None:
        return self.cache / f"{digest.algorithm}-{digest.hex}.json" if self.cache else None

    def _cached(self, digest: Digest) -> ImageFiles | None:
        path = self._cache_path(digest)
        if path is None or not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text())
            if doc.get("version") != SCAN_VERSION:
                return None
            plat = doc.get("config_platform")
            return ImageFiles(
                platform_of(plat) if plat else None,
                {str(p): Machine(int(c), int(b), bool(le)) for p, (c, b, le) in doc["files"].items()},
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # read again

    def _remember(self, digest: Digest, found: ImageFiles) -> None:
        path = self._cache_path(digest)
        if path is None:
            return
        doc = {
            "version": SCAN_VERSION,
            "config_platform": str(found.config_platform) if found.config_platform else None,
            "files": {p: [m.code, m.bits, m.little] for p, m in sorted(found.files.items())},
        }
        with contextlib.suppress(OSError):  # a cache: without it the next run reads the layers again
            write_atomic(path, json.dumps(doc, sort_keys=True))


# --- a bundle (checks/bundle.py): read from the archive, judged against the lock -----------
class _Chunks(io.RawIOBase):
    """An iterator of byte chunks (a store's blob opener) as a raw stream."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._rest = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._rest = memoryview(chunk)
        n = min(len(b), len(self._rest))
        b[:n] = self._rest[:n]
        self._rest = self._rest[n:]
        return n


def check_bundled(
    image: str,
    platform: str,
    manifest: Manifest,
    read_blob: Callable[[Descriptor], Opener],
    recorded: BinariesRecord,
) -> list[str]:
    """The problems of one platform manifest a bundle carries (its blobs, verified when the archive
    was opened, read through ``read_blob``): its image config must name the platform, and the ELF
    files of its final filesystem must be what the release lock ``recorded`` for that platform when
    the build checked it: the same count and machines (paths allowed on purpose at build time stay
    allowed; a binary swapped since is found). One sentence per problem."""
    plat = platform_of(platform)
    config = manifest.config
    config_platform: Platform | None = None
    if config is not None:
        chunks, close = read_blob(config)()
        try:
            doc = json.loads(b"".join(chunks))
        except ValueError:
            doc = None
        finally:
            close()
        if isinstance(doc, dict) and doc.get("os") and doc.get("architecture"):
            config_platform = Platform(str(doc["os"]), str(doc["architecture"]), str(doc.get("variant") or ""))
    scans = []
    for desc in manifest.descriptors():
        if config is not None and desc.digest == config.digest:
            continue
        what = f"layer {desc.digest.short()} of {image}"
        if desc.media_type not in LAYER_TYPES:
            return [f"{what} has media type '{desc.media_type}', which is not a filesystem layer"]
        chunks, close = read_blob(desc)()
        try:
            scans.append(scan_layer(_Chunks(chunks), what))
        finally:
            close()
    found = judge(image, plat, final_files(scans))
    problems = []
    if config_platform is not None and not same_platform(config_platform, plat):
        problems.append(f"its image config says {config_platform}, the index {plat}")
    if (found.elf_files, found.machines) != (recorded.elf_files, dict(recorded.machines)):
        shown = "; ".join(f"{m.path}: {m.machine}" for m in found.mismatches[:SHOWN])
        problems.append(
            f"it holds {found.elf_files} ELF file(s) ({_machines(found.machines)}) where the release lock "
            f"records {recorded.elf_files} ({_machines(recorded.machines)})"
            + (f"; not {found.expected}: {shown}" if shown else "")
        )
    return problems


def _machines(machines: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {m}" for m, n in sorted(machines.items())) or "none"


# --- the build's gate -----------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentBinaries:
    """The check of one component's release entry: its platforms, and what it means for the release."""

    name: str
    platforms: tuple[PlatformBinaries, ...]
    error: BinaryMismatch | None = None  # fails the component
    warnings: tuple[str, ...] = ()


class BinaryMismatch(BuildError):
    """An image holds executables of another machine than its platform (or cannot be checked)."""


HINT = (
    "build them for the target platform (e.g. FROM --platform=$BUILDPLATFORM, then cross-compile for "
    '$TARGETARCH), or allow the paths on purpose in images.yaml: binaries: {allow: [PATTERN...], reason: "..."}'
)
MIRROR_HINT = "set binaries: {check: fail} to refuse such an image, or allow the paths with a reason"


def check_release(checker: Checker, policy: BinariesPolicy, release: ComponentRelease) -> ComponentBinaries:
    """Every platform of one component's release entry, judged under the component's ``policy``."""
    repo = ImageRef.parse(release.repository)
    results, failures = [], []
    for text, digest in sorted(release.platforms.items()):
        try:
            results.append(checker.check(repo, digest, platform_of(text), policy.allow))
        except (ArchliftError, ValueError, KeyError, TypeError) as e:
            message = e.message if isinstance(e, ArchliftError) else f"unexpected manifest content: {e}"
            failures.append(f"the binaries of {repo.name}@{digest} ({text}) cannot be checked: {message}")
    problems = failures + [r.problem() for r in results if not r.ok]
    notes = [f"{repo.name} {r.platform}: binaries not checked (no ELF machine known)" for r in results if not r.checked]
    name = release.name
    if not problems:
        return ComponentBinaries(name, tuple(results), warnings=tuple(notes))
    if release.kind == "mirrored" and policy.check == "warn":
        warned = [f"{p}\n{MIRROR_HINT}" for p in problems]
        return ComponentBinaries(name, tuple(results), warnings=tuple(notes + warned))
    return ComponentBinaries(name, tuple(results), error=BinaryMismatch(f"{name}: " + "\n".join(problems), hint=HINT))


def check_as_pushed(checker: Checker, report: Reporter) -> Callable[[str, Path, Digest, ImageRef], None]:
    """The build's ``pushed`` hook (``archlift.steps.build.Pushed``): each component's layout read by
    ``checker`` as soon as it is pushed, in the thread that pushed it (the bake goes on meanwhile)."""

    def pushed(name: str, root: Path, digest: Digest, repo: ImageRef) -> None:
        report(name, "", "reading the binaries of its OCI layout")
        read = checker.layout_pushed(root, digest, repo)
        report(name, "", f"binaries read from its layout: {read} platform image(s)")

    return pushed


def gate(checker: Checker, config: Config, results: Sequence[BuildResult], report: Reporter) -> tuple[BuildResult, ...]:
    """The build's step between "pushed by digest" and "move tags": every platform of every component
    with a release entry (built, skipped, copied or present) is checked. A mismatch fails its
    component (a mirrored one's is a warning unless it sets ``binaries: {check: fail}``); the entries
    of the others get what was found, which the lock records. (What ``checker`` found already in
    the layouts the build pushed, ``Checker.layout_pushed``, is judged without reading anything.)"""
    todo = [r for r in results if r.release is not None and r.name in config.components]
    with ThreadPoolExecutor(max_workers=4) as pool:

        def one(result: BuildResult) -> ComponentBinaries:
            assert result.release is not None
            report(result.name, "", "checking that the binaries match their platforms")
            verdict = check_release(checker, config.components[result.name].binaries, result.release)
            report(result.name, "", "binaries: " + ("mismatch" if verdict.error else "ok"))
            return verdict

        verdicts = {v.name: v for v in pool.map(one, todo)}
    out = []
    for result in results:
        verdict = verdicts.get(result.name)
        if verdict is None or result.release is None:
            out.append(result)
        elif verdict.error:
            out.append(dataclasses.replace(result, status="failed", release=None, error=verdict.error))
        else:
            records = {r.platform: r.record() for r in verdict.platforms if r.checked}
            release = dataclasses.replace(result.release, binaries=records)
            warnings = result.warnings + verdict.warnings
            out.append(dataclasses.replace(result, release=release, warnings=warnings))
    return tuple(out)
