"""Split bundles without a registry: sizes as docker and oras read them, parts written and read back
as one seekable file in bounded memory, and every way a set of parts can be wrong."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest

from archlift.errors import ConfigError, UsageError
from archlift.oci.parts import HEADER_SIZE, PartWriter, open_bundle_file, parse_size


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("4G", 4 << 30),
        ("4g", 4 << 30),
        ("4GB", 4 << 30),
        ("4GiB", 4 << 30),
        ("700M", 700 << 20),
        ("1.5G", int(1.5 * (1 << 30))),
        ("64K", 64 << 10),
        ("1048576", 1 << 20),
        (" 2 t ", 2 << 40),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "not a size"), ("4X", "not a size"), ("-1G", "not a size"), ("G", "not a size"), ("1.2.3G", "not a size"),
     ("0", "at least 64K"), ("63K", "at least 64K"), ("4 G B", "not a size")],
)  # fmt: skip
def test_nonsense_sizes_are_refused(text: str, why: str) -> None:
    with pytest.raises(UsageError, match=why) as e:
        parse_size(text)
    assert e.value.exit_code == 2 and "--max-size" in e.value.message


def _split(tmp_path: Path, data: bytes, max_size: int, name: str = "b.tar", ident: str = "id1") -> list[Path]:
    work = tmp_path / f"work-{name}-{ident}"
    work.mkdir()
    with PartWriter(work, tmp_path / name, max_size, hashlib.sha256(ident.encode()).hexdigest()[:32]) as w:
        view = memoryview(data)
        step = 70_001  # writes that straddle part boundaries
        for i in range(0, len(data), step):
            w.write(view[i : i + step])
        return w.finish()


def test_parts_read_back_as_one_seekable_file_in_any_order(tmp_path: Path) -> None:
    data = random.Random(1).randbytes(1_000_000)
    parts = _split(tmp_path, data, 300_000)
    assert [p.name for p in parts] == [f"b.tar.part-00{n}-of-004" for n in range(1, 5)]
    assert all(p.stat().st_size <= 300_000 for p in parts)
    assert not list(tmp_path.glob("work-*/*"))  # nothing left under a temporary name
    f = open_bundle_file(parts[::-1])
    assert f.path == tmp_path / "b.tar" and f.size == len(data) and len(f.parts) == 4
    f.check_parts()
    with f.open() as r:
        assert r.read() == data
        rng = random.Random(2)
        for _ in range(200):  # reads across boundaries, from anywhere
            at, n = rng.randrange(len(data)), rng.randrange(1, 400_000)
            r.seek(at)
            assert r.read(n) == data[at : at + n]
    assert "part 2 of 4" in f.where(300_000 - HEADER_SIZE) and "part 1 of 4" in f.where(0)


def test_a_missing_foreign_repeated_truncated_or_damaged_part_is_named(tmp_path: Path) -> None:
    data = random.Random(3).randbytes(600_000)
    parts = _split(tmp_path, data, 250_000)
    with pytest.raises(ConfigError, match=r"part\(s\) 2 \(b\.tar\.part-002-of-003\) of 3 are missing"):
        open_bundle_file([parts[0], parts[2]])
    other = tmp_path / "other"
    other.mkdir()
    foreign = _split(other, random.Random(4).randbytes(600_000), 250_000, ident="id2")
    with pytest.raises(ConfigError, match=r"part-002-of-003: it is part 2 of 3 of another bundle"):
        open_bundle_file([parts[0], foreign[1], parts[2]])
    with pytest.raises(ConfigError, match="part 1 is given twice"):
        open_bundle_file([parts[0], parts[0], parts[1], parts[2]])
    plain = tmp_path / "plain.tar"
    plain.write_bytes(b"x" * 1000)
    with pytest.raises(ConfigError, match="it is not a part of a split bundle"):
        open_bundle_file([parts[0], plain])
    # damaged: one byte of part 2's payload
    raw = bytearray(parts[1].read_bytes())
    raw[HEADER_SIZE + 1000] ^= 0xFF
    parts[1].write_bytes(bytes(raw))
    f = open_bundle_file(parts)
    with pytest.raises(ConfigError, match=r"b\.tar\.part-002-of-003 \(part 2 of 3\): it is damaged"):
        f.check_parts()
    # truncated
    parts[2].write_bytes(parts[2].read_bytes()[:-5])
    with pytest.raises(ConfigError, match=r"part-003-of-003 \(part 3 of 3\): it is truncated"):
        open_bundle_file(parts)
    # a damaged header
    raw = bytearray(parts[0].read_bytes())
    raw[40:48] = b"\xff" * 8
    parts[0].write_bytes(bytes(raw))
    with pytest.raises(ConfigError, match="its part header is damaged"):
        open_bundle_file(parts)


def test_a_new_set_replaces_the_parts_of_an_earlier_export_of_that_name(tmp_path: Path) -> None:
    _split(tmp_path, os.urandom(900_000), 200_000, ident="first")
    assert len(list(tmp_path.glob("b.tar.part-*"))) == 5
    parts = _split(tmp_path, os.urandom(300_000), 200_000, ident="second")
    assert sorted(tmp_path.glob("b.tar.part-*")) == parts and len(parts) == 2


@pytest.mark.parametrize(
    ("field", "value", "why"),
    [
        ("bundle", "../../etc/passwd", "is not a file name"),
        ("bundle", "", "is not a file name"),
        ("parts", 10**9, "out of range"),
        ("part", 0, "out of range"),
        ("size", -5, "out of range"),
        ("id", "../x", "not lower-case hex"),
    ],
)
def test_a_hostile_part_header_is_refused(tmp_path: Path, field: str, value: object, why: str) -> None:
    import json

    from archlift.oci.parts import MAGIC

    header = {"bundle": "b.tar", "id": "0" * 32, "part": 1, "parts": 1, "size": 3, "sha256": "0" * 64, field: value}
    path = tmp_path / "b.tar.part-001-of-001"
    path.write_bytes((MAGIC + json.dumps(header).encode() + b"\n").ljust(HEADER_SIZE, b" ") + b"abc")
    with pytest.raises(ConfigError, match=f"its part header is damaged.*{why}"):
        open_bundle_file([path])
