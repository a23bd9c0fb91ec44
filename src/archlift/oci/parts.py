"""A bundle split for removable media: numbered parts, written atomically, read as one file.

``archlift export --max-size 4G`` writes ``bundle.tar.part-001-of-003`` and so on.
Each part is a 512-byte header and a slice of the archive's bytes (the
payload); the payloads, in order, are the archive. The header says which
bundle the part belongs to (its name and an id derived from its content), the
part's number, how many parts there are, its payload's size and sha256::

    archlift-bundle-part 1
    {"bundle": "bundle.tar", "id": "...", "part": 2, "parts": 3, "size": 4294966784, "sha256": "..."}

Writing (``PartWriter``): every part goes to a temporary name in the export's
work directory and is synced there; only once the last byte is written are
the headers completed (the count is known only then), the parts of an earlier
export of the same name removed, and the parts renamed into place, the last
part last: an export killed on the way leaves no file under a part's name,
and a set is complete only once its last part is there.

Reading (``open_bundle_file``): one file, or the parts of one bundle in any
order. The parts are checked (one bundle, every number once, none missing,
each of the size its header says) and read through ``PartsView``, a seekable
view over their payloads: nothing is concatenated, memory stays bounded.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError, UsageError

HEADER_SIZE = 512
MAGIC = b"archlift-bundle-part 1\n"
MIN_PART = 64 << 10  # --max-size below this is refused
MAX_PARTS = 99_999  # a header naming more parts is refused
CHUNK = 1 << 20
_SUFFIX = re.compile(r"\.part-(\d+)-of-(\d+)$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str, option: str = "--max-size") -> int:
    """``4G``, ``500M``, ``1.5g``, ``64KiB``, ``1048576``: bytes, with binary K/M/G/T suffixes as
    docker's and oras's size options read them. Anything else, or less than 64K, is refused."""
    m = _SIZE.match(text)
    if not m:
        raise UsageError(
            f"{option} {text!r}: not a size; give a number with an optional K, M, G or T suffix (4G, 700M, 1.5G)"
        )
    size = int(float(m.group(1)) * _UNITS[m.group(2).lower()])
    if size < MIN_PART:
        raise UsageError(f"{option} {text}: a part must hold at least 64K ({size} bytes given)")
    return size


def human(n: float) -> str:
    """Bytes in binary units, as --max-size takes them (``4.0G``, ``1.5M``, ``312K``)."""
    for unit in ("", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if not unit else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def part_name(output: Path, number: int, count: int) -> Path:
    width = max(3, len(str(count)))
    return output.with_name(f"{output.name}.part-{number:0{width}d}-of-{count:0{width}d}")


def bundle_name(path: Path) -> Path:
    """``bundle.tar`` for ``bundle.tar.part-002-of-003`` (and the path itself for any other name)."""
    m = _SUFFIX.search(path.name)
    return path.with_name(path.name[: m.start()]) if m else path


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------- writing
@dataclass
class _Written:
    path: Path
    size: int = 0
    sha256: Any = None


class PartWriter(io.RawIOBase):
    """The archive's bytes into parts of at most ``max_size`` bytes each (header included),
    kept under temporary names in ``work`` until ``finish``."""

    def __init__(self, work: Path, output: Path, max_size: int, bundle_id: str) -> None:
        super().__init__()
        self.work = work
        self.output = output
        self.payload = max_size - HEADER_SIZE
        self.bundle_id = bundle_id
        self._parts: list[_Written] = []
        self._file: IO[bytes] | None = None
        self._total = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._total

    def _next(self) -> _Written:
        self._close_part()
        part = _Written(self.work / f"part-{len(self._parts) + 1:05d}.tmp", 0, hashlib.sha256())
        self._file = part.path.open("xb")
        self._file.write(b"\0" * HEADER_SIZE)  # completed by finish(), once the count is known
        self._parts.append(part)
        return part

    def _close_part(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        done = 0
        while done < len(view):
            part = self._parts[-1] if self._parts and self._file is not None else None
            if part is None or part.size >= self.payload:
                part = self._next()
            n = min(len(view) - done, self.payload - part.size)
            chunk = view[done : done + n]
            assert self._file is not None
            self._file.write(chunk)
            part.sha256.update(chunk)
            part.size += n
            done += n
        self._total += done
        return done

    def close(self) -> None:
        if self._file is not None:  # synced with its header by finish()
            self._file.close()
            self._file = None
        super().close()

    def finish(self) -> list[Path]:
        """Complete every header, remove the parts of an earlier export of this name, rename
        the parts into place (the last one last) and return their final paths."""
        self._close_part()
        if not self._parts:
            raise ValueError("no archive was written")
        count = len(self._parts)
        for n, part in enumerate(self._parts, start=1):
            header = {
                "bundle": self.output.name,
                "id": self.bundle_id,
                "part": n,
                "parts": count,
                "size": part.size,
                "sha256": part.sha256.hexdigest(),
            }
            text = MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n"
            assert len(text) <= HEADER_SIZE
            with part.path.open("r+b") as f:
                f.write(text.ljust(HEADER_SIZE, b" "))
                f.flush()
                os.fsync(f.fileno())
        for old in self.output.parent.glob(f"{glob_escape(self.output.name)}.part-*-of-*"):
            if _SUFFIX.search(old.name):
                old.unlink()
        final = [part_name(self.output, n, count) for n in range(1, count + 1)]
        for part, path in zip(self._parts, final, strict=True):
            os.replace(part.path, path)  # the last part last: only then is the set complete
            _sync_dir(path.parent)
        return final


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def write_single(tmp: Path, output: Path) -> None:
    """Sync a whole archive written at ``tmp`` and rename it to ``output``."""
    with tmp.open("rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, output)
    _sync_dir(output.parent)


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Part:
    path: Path
    bundle: str
    id: str
    number: int
    count: int
    size: int
    sha256: str

    @property
    def label(self) -> str:
        return f"{self.path} (part {self.number} of {self.count})"


def read_header(path: Path) -> Part | None:
    """The part header of ``path``; None when the file is not a part; a damaged header is refused."""
    with path.open("rb") as f:
        head = f.read(HEADER_SIZE)
    if not head.startswith(MAGIC):
        return None
    try:
        doc = json.loads(head[len(MAGIC) :].decode("ascii").strip())
        part = Part(
            path,
            str(doc["bundle"]),
            str(doc["id"]),
            int(doc["part"]),
            int(doc["parts"]),
            int(doc["size"]),
            str(doc["sha256"]),
        )
        if not (1 <= part.number <= part.count <= MAX_PARTS) or part.size < 0:
            raise ValueError(f"part {part.number} of {part.count}, {part.size} bytes: out of range")
        if not re.fullmatch(r"[0-9a-f]{64}", part.sha256) or not re.fullmatch(r"[0-9a-f]{32}", part.id):
            raise ValueError("its sha256 or bundle id is not lower-case hex")
        name = part.bundle
        if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or len(name) > 200:
            raise ValueError(f"the bundle name {name!r} is not a file name")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"refusing {path}: its part header is damaged ({e})", hint="copy that part from the export again"
        ) from None
    return part


class PartsView(io.RawIOBase):
    """The parts' payloads as one read-only, seekable file (one part file open at a time)."""

    def __init__(self, parts: Sequence[Part]) -> None:
        super().__init__()
        self.parts = tuple(parts)
        self.starts: list[int] = []
        total = 0
        for p in self.parts:
            self.starts.append(total)
            total += p.size
        self.size = total
        self._pos = 0
        self._open: tuple[int, io.BufferedReader] | None = None

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def part_at(self, offset: int) -> int:
        """The index of the part holding byte ``offset`` of the archive (the last one that starts
        at or before it: an empty part holds nothing)."""
        return max(0, bisect.bisect_right(self.starts, offset) - 1)

    def readinto(self, buffer: Any) -> int:
        if self._pos >= self.size:
            return 0
        i = self.part_at(self._pos)
        while self.parts[i].size == 0 and i + 1 < len(self.parts):
            i += 1
        if self._open is None or self._open[0] != i:
            self._close_file()
            self._open = (i, self.parts[i].path.open("rb"))
        f = self._open[1]
        within = self._pos - self.starts[i]
        f.seek(HEADER_SIZE + within)
        view = memoryview(buffer).cast("B")
        want = min(len(view), self.parts[i].size - within)
        n = f.readinto(view[:want])
        self._pos += n or 0
        return n or 0

    def _close_file(self) -> None:
        if self._open is not None:
            self._open[1].close()
            self._open = None

    def close(self) -> None:
        self._close_file()
        super().close()


@dataclass(frozen=True)
class BundleFile:
    """Where an archive's bytes are: one file, or the parts of a split bundle."""

    path: Path  # for messages: the file, or the bundle's name beside its parts
    parts: tuple[Part, ...] = ()

    def open(self) -> IO[bytes]:
        if not self.parts:
            return self.path.open("rb")
        return io.BufferedReader(PartsView(self.parts), buffer_size=CHUNK)

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts) if self.parts else self.path.stat().st_size

    def where(self, offset: int) -> str:
        """Which file holds byte ``offset`` of the archive (for messages)."""
        if not self.parts:
            return ""
        return self.parts[PartsView(self.parts).part_at(offset)].label

    def check_parts(self, progress: Callable[[int], None] | None = None) -> None:
        """Every part's payload against the sha256 its header records: a damaged part is named."""
        for part in self.parts:
            h = hashlib.sha256()
            with part.path.open("rb") as f:
                f.seek(HEADER_SIZE)
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    if progress:
                        progress(len(chunk))
            if h.hexdigest() != part.sha256:
                raise ConfigError(
                    f"refusing {part.label}: it is damaged (its content does not match the sha256 in its header)",
                    hint="copy that part from the export again",
                )


def open_bundle_file(paths: Sequence[Path]) -> BundleFile:
    """A bundle file, or the parts of one bundle given in any order: one bundle only, every part
    there once, each of the size its header says (a missing, foreign, truncated part is named)."""
    if not paths:
        raise UsageError("no bundle given")
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"{path}: no such bundle file")
    headers = [(p, read_header(p)) for p in paths]
    if len(paths) == 1 and headers[0][1] is None:
        return BundleFile(paths[0])
    for path, header in headers:
        if header is None:
            raise ConfigError(
                f"refusing {path}: it is not a part of a split bundle (no part header), but it was given "
                f"with {len(paths) - 1} other file(s); give one bundle file, or every part of one bundle"
            )
    parts = [h for _, h in headers if h is not None]
    first = parts[0]
    for other in parts[1:]:
        if (other.id, other.count) != (first.id, first.count):
            raise ConfigError(
                f"refusing {other.path}: it is part {other.number} of {other.count} of another bundle "
                f"('{other.bundle}', id {other.id[:12]}) than {first.path} ('{first.bundle}', id {first.id[:12]}, "
                f"{first.count} parts); give the parts of one bundle only"
            )
    by_number: dict[int, Part] = {}
    for part in parts:
        if part.number in by_number:
            also = by_number[part.number].path
            raise ConfigError(f"refusing {part.path}: part {part.number} is given twice (also as {also})")
        by_number[part.number] = part
    name = bundle_name(first.path).with_name(first.bundle)
    missing = [n for n in range(1, first.count + 1) if n not in by_number]
    if missing:
        listed = ", ".join(f"{n} ({part_name(name, n, first.count).name})" for n in missing[:10])
        listed += f" and {len(missing) - 10} more" if len(missing) > 10 else ""
        raise ConfigError(
            f"refusing {name}: part(s) {listed} of {first.count} are missing",
            hint="give every part of the bundle (archlift import bundle.tar.part-*)",
        )
    ordered = [by_number[n] for n in range(1, first.count + 1)]
    for part in ordered:
        actual = part.path.stat().st_size - HEADER_SIZE
        if actual != part.size:
            state = "truncated" if actual < part.size else "longer than its header says"
            raise ConfigError(
                f"refusing {part.label}: it is {state} ({max(actual, 0)} bytes after its header; it should have "
                f"{part.size})",
                hint="copy that part from the export again",
            )
    return BundleFile(name, tuple(ordered))
