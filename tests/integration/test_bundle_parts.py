"""archlift export --max-size: a bundle in numbered parts for removable media, imported and verified
from its parts in any order (a missing, foreign or damaged part named), written so that an
interrupted export leaves no part that looks complete."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.images as h
from support.cli import run_archlift
from support.images import PushedImage, assert_same, make_release, release_lock
from support.registry import LocalRegistry

from archlift.errors import ConfigError
from archlift.oci import RegistryClient, parts
from archlift.steps.airgap import export_bundle

no_docker_config = h.no_docker_config
source = h.source
MAX = "200K"


@pytest.fixture(scope="module")
def release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3)


@pytest.fixture(scope="module")
def split(release: dict[str, PushedImage], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    d = tmp_path_factory.mktemp("split")
    release_lock(release).write(d / "release.json")
    out = run_archlift("export", "-o", "bundle.tar", "--lock", "release.json", "--max-size", MAX, "--json", cwd=d)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    paths = [Path(p) if Path(p).is_absolute() else d / p for p in summary["outputs"]]
    assert summary["parts"] == len(paths) >= 3
    return paths


@pytest.fixture
def target() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def test_parts_are_numbered_bounded_and_reassembled_in_any_order(
    split: list[Path], release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    n = len(split)
    assert [p.name for p in split] == [f"bundle.tar.part-{i:03d}-of-{n:03d}" for i in range(1, n + 1)]
    assert all(p.stat().st_size <= parts.parse_size(MAX) for p in split)
    assert not list(split[0].parent.glob(".archlift-export-*"))  # the work directory is gone
    shuffled = [str(p) for p in split]
    random.Random(7).shuffle(shuffled)
    code = run_archlift("verify-bundle", *shuffled, "--json", cwd=tmp_path)
    assert code.returncode == 0, code.stderr
    report = json.loads(code.stdout)
    assert report["parts"] == n and report["bundle"] == str(split[0].parent / "bundle.tar")
    imp = run_archlift("import", *shuffled, "--to", target.host, cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    assert_same(RegistryClient(), release, target)


def test_a_missing_part_or_a_part_of_another_bundle_is_named_and_nothing_is_pushed(
    split: list[Path], release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    n = len(split)
    without = [str(p) for p in split if p != split[1]]
    before = target.access_log()
    out = run_archlift("import", *without, "--to", target.host, cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"part(s) 2 (bundle.tar.part-002-of-{n:03d}) of {n} are missing" in out.stderr
    vb = run_archlift("verify-bundle", *without, cwd=tmp_path)
    assert vb.returncode == 2 and "part(s) 2" in vb.stderr
    # a part of another bundle (the same release cut for one platform): refused, named
    release_lock(release).write(tmp_path / "release.json")
    other = run_archlift(
        "export", "-o", "bundle.tar", "--lock", "release.json", "--platform", "linux/amd64", "--max-size", MAX,
        "--json", cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode == 0, other.stderr
    foreign = tmp_path / json.loads(other.stdout)["outputs"][1]
    mixed = [str(split[0]), str(foreign), *(str(p) for p in split[2:])]
    out = run_archlift("import", *mixed, "--to", target.host, cwd=tmp_path)
    assert out.returncode == 2 and f"{foreign}: it is part 2 of" in out.stderr and "of another bundle" in out.stderr
    assert target.access_log() == before  # not one request to the target


def test_a_damaged_part_is_named(split: list[Path], tmp_path: Path) -> None:
    copies = []
    for p in split:
        copy = tmp_path / p.name
        copy.write_bytes(p.read_bytes())
        copies.append(copy)
    raw = bytearray(copies[1].read_bytes())
    raw[len(raw) // 2] ^= 0x01
    copies[1].write_bytes(bytes(raw))
    out = run_archlift("verify-bundle", *(str(c) for c in copies), cwd=tmp_path)
    assert out.returncode == 2 and f"{copies[1]} (part 2 of {len(copies)}): it is damaged" in out.stderr
    copies[1].write_bytes(bytes(raw[: len(raw) // 3]))
    out = run_archlift("verify-bundle", *(str(c) for c in copies), cwd=tmp_path)
    assert out.returncode == 2 and "it is truncated" in out.stderr


@pytest.mark.parametrize("size", ["0", "4X", "-1G", "10K", "lots"])
def test_nonsense_max_sizes_are_refused(size: str, split: list[Path], tmp_path: Path) -> None:
    out = run_archlift("export", "-o", "b.tar", "--lock", str(split[0].parent / "release.json"), "--max-size", size,
                  cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2 and "--max-size" in out.stderr and "Traceback" not in out.stderr
    assert not list(tmp_path.iterdir())


def _final_parts(directory: Path) -> list[Path]:
    return [p for p in directory.glob("*") if parts.bundle_name(p) != p]


def test_an_export_that_fails_midway_leaves_no_part(
    release: dict[str, PushedImage], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_docker_config: None
) -> None:
    real_next = parts.PartWriter._next
    started = []

    def failing(self: parts.PartWriter) -> object:
        started.append(1)
        if len(started) == 3:  # the disk fills up while the third part is begun
            raise OSError(28, "No space left on device")
        return real_next(self)

    monkeypatch.setattr(parts.PartWriter, "_next", failing)
    with pytest.raises(OSError, match="No space left"):
        export_bundle(release_lock(release), RegistryClient(), tmp_path / "b.tar", max_size=parts.parse_size(MAX))
    assert len(started) == 3
    assert list(tmp_path.iterdir()) == []  # no part, no temporary file, no work directory


@pytest.fixture(scope="module")
def big_release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=3, size=6 << 20)


def test_a_killed_export_leaves_no_part_that_looks_complete_and_runs_again(
    big_release: dict[str, PushedImage], target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    """SIGKILL while the parts are being written (seen by their temporary files): no file under a
    part's name; the same command then writes the whole set."""
    release_lock(big_release).write(tmp_path / "release.json")
    argv = [sys.executable, "-m", "archlift", "export", "-o", "out/b.tar", "--lock", "release.json", "--max-size", "1M"]
    (tmp_path / "out").mkdir()
    proc = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((tmp_path / "out").glob(".archlift-export-*/part-*.tmp"))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            seen = True
            break
        time.sleep(0.002)
    proc.wait()
    assert proc.stderr is not None
    with proc.stderr:
        assert seen, f"the export ended before it could be killed: {proc.stderr.read()!r}"
    assert _final_parts(tmp_path / "out") == []
    with pytest.raises(ConfigError):
        parts.open_bundle_file(sorted((tmp_path / "out").glob("*")))  # nothing there reads as a bundle
    again = run_archlift(
        "export", "-o", "out/b.tar", "--lock", "release.json", "--max-size", "1M", "--json", cwd=tmp_path
    )
    assert again.returncode == 0, again.stderr
    written = _final_parts(tmp_path / "out")
    assert len(written) == json.loads(again.stdout)["parts"] >= 18
    imp = run_archlift("import", *(str(p) for p in written), "--to", target.host, cwd=tmp_path)
    assert imp.returncode == 0, imp.stderr
    assert_same(RegistryClient(), big_release, target)
