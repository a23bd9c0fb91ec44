"""The binaries check without a registry: real ELF headers (Debian's busybox-static for seven
architectures), tar layers built here (gzip, zstd, uncompressed; whiteouts, opaque directories,
hard links), the final filesystem, the judgement and its message, hostile layers, the lock."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from archlift.checks.binaries import (
    PLATFORM_MACHINES,
    SHOWN,
    LayerScan,
    Machine,
    elf_machine,
    expected_machine,
    final_files,
    judge,
    path_allowed,
    platform_of,
    same_platform,
    scan_layer,
)
from archlift.errors import RegistryError
from archlift.localenv import find_debs
from archlift.lock import BinariesRecord, ComponentRelease, ReleaseLock
from archlift.refs import Digest, Platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "elf"
# Debian architecture -> the platform its binaries are for
DEBIAN = {
    "amd64": "linux/amd64",
    "arm64": "linux/arm64",
    "armhf": "linux/arm/v7",
    "i386": "linux/386",
    "ppc64el": "linux/ppc64le",
    "s390x": "linux/s390x",
    "riscv64": "linux/riscv64",
}
NAMES = {
    "amd64": "x86-64",
    "arm64": "aarch64",
    "armhf": "ARM",
    "i386": "i386",
    "ppc64el": "PowerPC64 little-endian",
    "s390x": "S390x",
    "riscv64": "RISC-V 64-bit",
}


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """The whole busybox binary of amd64 and arm64, unpacked from Debian's busybox-static .debs."""
    out = {}
    for arch, deb in find_debs().items():
        where = tmp_path_factory.mktemp(f"busybox-{arch}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(where)], check=True)
        out[arch] = (where / "bin" / "busybox").read_bytes()
    return out


@pytest.fixture(scope="module")
def heads(busybox: dict[str, bytes]) -> dict[str, bytes]:
    """The first 64 bytes of busybox for every architecture (see tests/fixtures/elf/README.md)."""
    out = {arch: data[:64] for arch, data in busybox.items()}
    for path in sorted(FIXTURES.glob("busybox-static.*.head")):
        out[path.name.split(".")[1]] = path.read_bytes()
    assert set(out) == set(DEBIAN)
    return out


# --- ELF headers ------------------------------------------------------------------------------
def test_real_headers_give_their_machine(heads: dict[str, bytes]) -> None:
    for arch, head in heads.items():
        machine = elf_machine(head)
        assert machine is not None, arch
        assert machine.name == NAMES[arch], arch
        assert machine == expected_machine(Platform.parse(DEBIAN[arch])), arch
    assert elf_machine(heads["s390x"]) == Machine(22, 64, False)  # e_machine read big-endian
    assert elf_machine(heads["armhf"]) == Machine(40, 32, True)
    assert elf_machine(heads["riscv64"]) == Machine(243, 64, True)


def test_every_header_is_judged_against_every_platform(heads: dict[str, bytes]) -> None:
    for platform_arch, platform in DEBIAN.items():
        for arch, head in heads.items():
            machine = elf_machine(head)
            assert machine is not None
            result = judge("img@sha256:0", Platform.parse(platform), {"/bin/busybox": machine})
            assert result.ok == (arch == platform_arch), (platform, arch)
            assert result.elf_files == 1 and result.machines == {NAMES[arch]: 1}
            if arch != platform_arch:
                assert result.mismatches[0].machine == NAMES[arch]
                assert result.expected == NAMES[platform_arch]


def test_the_platform_table_is_the_issue_s() -> None:
    assert {p: (m.code, m.bits, m.little) for p, m in PLATFORM_MACHINES.items()} == {
        "linux/amd64": (62, 64, True),
        "linux/arm64": (183, 64, True),
        "linux/arm": (40, 32, True),
        "linux/386": (3, 32, True),
        "linux/ppc64le": (21, 64, True),
        "linux/s390x": (22, 64, False),
        "linux/riscv64": (243, 64, True),
    }
    assert expected_machine(Platform.parse("linux/arm/v6")) == Machine(40, 32, True)
    assert expected_machine(Platform.parse("linux/mips64le")) is None
    assert expected_machine(Platform.parse("windows/amd64")) is None


def test_byte_order_and_class_matter(heads: dict[str, bytes]) -> None:
    ppc = bytearray(heads["ppc64el"])
    ppc[5] = 2  # big-endian: the same machine number written the other way round
    ppc[18:20] = (21).to_bytes(2, "big")
    big = elf_machine(bytes(ppc))
    assert big == Machine(21, 64, False) and big.name == "PowerPC64 big-endian"
    assert not judge("i", Platform.parse("linux/ppc64le"), {"/bin/x": big}).ok
    x32 = bytearray(heads["amd64"])
    x32[4] = 1  # ELFCLASS32 with EM_X86_64: the x32 ABI, not amd64
    machine = elf_machine(bytes(x32))
    assert machine == Machine(62, 32, True) and machine.name == "x86-64 (32-bit little-endian)"
    assert not judge("i", Platform.parse("linux/amd64"), {"/bin/x": machine}).ok


def test_scripts_text_and_odd_headers_are_not_elf(heads: dict[str, bytes]) -> None:
    assert elf_machine(b"#!/bin/sh\necho hello from a script of any platform\n") is None
    assert elf_machine(b"\x7fELF") is None  # the magic alone
    assert elf_machine(b"\x7fELF\x03\x01" + heads["amd64"][6:]) is None  # no such class
    assert elf_machine(b"\x7fELF\x02\x00" + heads["amd64"][6:]) is None  # no byte order
    assert elf_machine(b"\x00" * 64) is None


# --- layers -------------------------------------------------------------------------------------
Entry = tuple[str, object]  # (name, bytes | None (dir) | ("->", target) symlink | ("=>", target) hard link)


def tar_bytes(entries: list[Entry]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, what in entries:
            info = tarfile.TarInfo(name)
            data = b""
            if what is None:
                info.type = tarfile.DIRTYPE
            elif isinstance(what, tuple):
                info.type = tarfile.SYMTYPE if what[0] == "->" else tarfile.LNKTYPE
                info.linkname = str(what[1])
            else:
                assert isinstance(what, bytes)
                data = what
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


def compress(data: bytes, how: str) -> bytes:
    if how == "gzip":
        return gzip.compress(data)
    if how == "gzip-members":  # several gzip members, as estargz writes them
        half = len(data) // 2
        return gzip.compress(data[:half]) + gzip.compress(data[half:])
    if how == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if how == "zstd-frames":  # several frames, as zstd:chunked writes them
        half = len(data) // 2
        c = zstandard.ZstdCompressor()
        return c.compress(data[:half]) + c.compress(data[half:])
    assert how == "none"
    return data


COMPRESSIONS = ["none", "gzip", "gzip-members", "zstd", "zstd-frames"]


def scan(entries: list[Entry], how: str = "gzip") -> LayerScan:
    return scan_layer(io.BytesIO(compress(tar_bytes(entries), how)), "test layer")


@pytest.mark.parametrize("how", COMPRESSIONS)
def test_a_layer_is_read_whatever_its_compression(busybox: dict[str, bytes], how: str) -> None:
    layer = scan_layer(
        io.BytesIO(
            compress(
                tar_bytes(
                    [
                        ("bin", None),
                        ("bin/busybox", busybox["amd64"]),
                        ("./opt/arm/busybox", busybox["arm64"]),
                        ("bin/sh", ("->", "busybox")),
                        ("bin/hard", ("=>", "bin/busybox")),
                        ("etc/motd", b"hello\n"),
                        ("usr/local/bin/tool", b"#!/bin/sh\necho tool\n"),
                    ]
                ),
                how,
            )
        )
    )
    assert layer.elves == {"/bin/busybox": Machine(62, 64, True), "/opt/arm/busybox": Machine(183, 64, True)}
    assert layer.links == {"/bin/hard": "/bin/busybox"}
    assert layer.dirs == {"/bin"}
    assert layer.others == {"/bin/sh", "/etc/motd", "/usr/local/bin/tool"}
    files = final_files([layer])
    assert files["/bin/hard"] == Machine(62, 64, True)  # a hard link to an ELF file is one too
    result = judge("img@sha256:0", Platform.parse("linux/amd64"), files)
    assert [m.path for m in result.mismatches] == ["/opt/arm/busybox"]
    assert result.machines == {"x86-64": 2, "aarch64": 1}


def test_whiteouts_and_opaque_directories_decide_the_final_filesystem(busybox: dict[str, bytes]) -> None:
    amd = busybox["amd64"][:4096]  # the header is what counts; a little of the file is enough here
    lower = scan(
        [
            ("opt/x/busybox", amd),
            ("opt/y/busybox", amd),
            ("opt/y/keep", amd),
            ("opt/z/deep/busybox", amd),
            ("usr/bin/tool", amd),
            ("usr/lib/thing", amd),
            ("srv/data/busybox", amd),
            ("keep/busybox", amd),
        ]
    )
    upper = scan(
        [
            ("opt/x/.wh.busybox", b""),  # deleted
            ("opt/y/.wh..wh..opq", b""),  # opaque: the lower content of /opt/y is hidden...
            ("opt/y/new", amd),  # ...but not this layer's own
            ("opt/.wh.z", b""),  # a deleted directory takes what is under it
            ("usr/bin/tool", b"#!/bin/sh\n"),  # replaced by a script
            ("usr/lib/thing", None),  # replaced by a directory
            ("srv/data", b"now a file\n"),  # a file where a directory was
        ],
        "zstd",
    )
    assert upper.whiteouts == {"/opt/x/busybox", "/opt/z"} and upper.opaques == {"/opt/y"}
    files = final_files([lower, upper])
    assert sorted(files) == ["/keep/busybox", "/opt/y/new"]
    # the order of the layers is what counts: the other way round, nothing hides the ELF files
    lower_paths = ["/opt/x/busybox", "/opt/y/busybox", "/opt/y/keep", "/opt/z/deep/busybox", "/usr/bin/tool"]
    lower_paths += ["/usr/lib/thing", "/srv/data/busybox", "/keep/busybox"]
    assert sorted(final_files([upper, lower])) == sorted([*lower_paths, "/opt/y/new"])


def test_an_opaque_root_hides_every_lower_layer(busybox: dict[str, bytes]) -> None:
    lower = scan([("bin/busybox", busybox["amd64"][:4096])])
    upper = scan([(".wh..wh..opq", b""), ("bin/sh", b"#!/x\n")], "none")
    assert final_files([lower, upper]) == {}


def test_a_hard_link_to_a_lower_layer_file(busybox: dict[str, bytes]) -> None:
    lower = scan([("bin/busybox", busybox["arm64"][:4096])])
    upper = scan([("usr/bin/env", ("=>", "/bin/busybox"))])
    arm = Machine(183, 64, True)
    assert final_files([lower, upper]) == {"/bin/busybox": arm, "/usr/bin/env": arm}


def test_a_big_layer_is_streamed_in_bounded_memory(busybox: dict[str, bytes]) -> None:
    """A 160 MiB layer (an ELF file, then a big data file) made on the fly and never held whole:
    the scan's peak allocation stays a few MiB."""
    size = 160 << 20

    def chunks() -> Iterator[bytes]:
        elf = tarfile.TarInfo("bin/busybox")
        elf.size = len(busybox["amd64"])
        yield elf.tobuf(format=tarfile.PAX_FORMAT)
        yield busybox["amd64"] + b"\0" * (-elf.size % 512)
        info = tarfile.TarInfo("data/big.bin")
        info.size = size
        yield info.tobuf(format=tarfile.PAX_FORMAT)
        block = b"\0" * (1 << 20)
        for _ in range(size >> 20):
            yield block
        yield b"\0" * 1024

    class Stream(io.RawIOBase):
        def __init__(self) -> None:
            self.it, self.rest, self.total = chunks(), b"", 0

        def readable(self) -> bool:
            return True

        def readinto(self, b: object) -> int:
            assert isinstance(b, memoryview)
            while not self.rest:
                nxt = next(self.it, None)
                if nxt is None:
                    return 0
                self.rest = nxt
            n = min(len(b), len(self.rest))
            b[:n] = self.rest[:n]
            self.rest = self.rest[n:]
            self.total += n
            return n

    stream = Stream()
    tracemalloc.start()
    try:
        layer = scan_layer(stream, "big layer")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert stream.total > size  # read to its end
    assert layer.elves == {"/bin/busybox": Machine(62, 64, True)} and layer.others == {"/data/big.bin"}
    assert peak < 24 << 20, f"peak {peak >> 20} MiB"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"this is not a layer at all" * 100, "not a valid tar archive"),
        (gzip.compress(b"x" * 10000)[:-30], "cannot be decompressed"),
        (b"\x28\xb5\x2f\xfd" + b"\xff" * 100, "cannot be decompressed"),
    ],
    ids=["not-tar", "truncated-gzip", "bad-zstd"],
)
def test_a_stream_that_is_not_a_layer_is_a_clear_error(data: bytes, needle: str) -> None:
    with pytest.raises(RegistryError, match=needle):
        scan_layer(io.BytesIO(data), "layer sha256:abc")


def test_a_huge_tar_header_is_refused_not_held() -> None:
    info = tarfile.TarInfo("x")
    info.pax_headers = {"comment": "y" * (9 << 20)}  # a 9 MiB PAX record
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b""))
    with pytest.raises(RegistryError, match="a tar header of more than 8 MiB"):
        scan_layer(io.BytesIO(gzip.compress(buf.getvalue())), "layer sha256:abc")


# --- judging ------------------------------------------------------------------------------------
def test_allowed_paths_and_patterns() -> None:
    assert path_allowed("/usr/bin/qemu-aarch64-static", "/usr/bin/qemu-*")
    assert not path_allowed("/usr/bin/sub/qemu-x", "/usr/bin/qemu-*")  # '*' stays in its directory
    assert path_allowed("/opt/cross/lib/gcc/x/crt1.o", "/opt/cross/**")
    assert path_allowed("/opt/cross", "/opt/cross/**")
    assert path_allowed("/a/b/c/tool", "/a/**/tool")
    assert not path_allowed("/a/b/c/tool2", "/a/**/tool")
    amd = Machine(62, 64, True)
    files = {"/usr/bin/qemu-x86_64-static": amd, "/opt/hello/bin/busybox": amd}
    result = judge("img", Platform.parse("linux/arm64"), files, ["/usr/bin/qemu-*"])
    assert [m.path for m in result.allowed] == ["/usr/bin/qemu-x86_64-static"]
    assert [m.path for m in result.mismatches] == ["/opt/hello/bin/busybox"]


def test_the_message_names_image_platform_paths_and_machine_then_a_count() -> None:
    amd = Machine(62, 64, True)
    files = {f"/usr/bin/tool{i:02}": amd for i in range(SHOWN + 3)} | {"/bin/ok": Machine(183, 64, True)}
    result = judge("reg.example/x@sha256:abc", Platform.parse("linux/arm64"), files)
    text = result.problem()
    assert text.splitlines()[0] == (
        f"reg.example/x@sha256:abc (linux/arm64) holds {SHOWN + 3} ELF file(s) for another machine (expected aarch64):"
    )
    assert "  /usr/bin/tool00: x86-64" in text and f"  /usr/bin/tool{SHOWN - 1:02}: x86-64" in text
    assert f"/usr/bin/tool{SHOWN:02}" not in text
    assert text.endswith("  ... and 3 more")
    assert result.record() == BinariesRecord(SHOWN + 4, {"x86-64": SHOWN + 3, "aarch64": 1})
    assert result.to_json()["mismatches"][SHOWN + 2] == {"path": "/usr/bin/tool07", "machine": "x86-64"}


def test_config_platform_against_the_index() -> None:
    assert same_platform(Platform("linux", "arm64", "v8"), Platform.parse("linux/arm64"))
    assert same_platform(Platform("linux", "arm", ""), Platform.parse("linux/arm/v7"))
    assert not same_platform(Platform("linux", "arm", "v6"), Platform.parse("linux/arm/v7"))
    assert not same_platform(Platform("linux", "amd64"), Platform.parse("linux/arm64"))
    assert platform_of("linux/arm/v7") == Platform("linux", "arm", "v7")
    result = judge("img", Platform.parse("linux/arm64"), {}, config_platform="linux/amd64")
    assert not result.ok and "its image config says linux/amd64" in result.problem()


def test_a_platform_without_a_known_machine_is_not_checked_and_says_so() -> None:
    result = judge("img", Platform.parse("linux/mips64le"), {"/bin/x": Machine(62, 64, True)})
    assert result.ok and not result.checked
    assert "not checked" in result.summary()


# --- the lock -----------------------------------------------------------------------------------
def test_the_lock_records_binaries_and_reads_older_locks(tmp_path: Path) -> None:
    rel = ComponentRelease(
        name="hello",
        kind="built",
        repository="127.0.0.1:5000/demo/hello",
        index_digest=Digest.of(b"index"),
        platforms={"linux/amd64": Digest.of(b"a"), "linux/arm64": Digest.of(b"b")},
        binaries={"linux/amd64": BinariesRecord(3, {"x86-64": 3}), "linux/arm64": BinariesRecord(3, {"aarch64": 3})},
    )
    path = tmp_path / "release.json"
    ReleaseLock({"hello": rel}).write(path)
    text = path.read_text()
    assert '"binaries": {\n        "linux/amd64": {\n          "elf_files": 3,' in text
    assert ReleaseLock.read(path).components["hello"] == rel
    older = text.replace(text[text.index('      "binaries"') : text.index('      "built_at"')], "")
    assert "binaries" not in older
    path.write_text(older)
    assert ReleaseLock.read(path).components["hello"].binaries == {}


def test_every_config_sync_image_fails_its_release_on_a_binary_of_another_machine() -> None:
    """docs/config-sync.md says so: the built images by default, the two mirrors by binaries: {check: fail}."""
    from archlift.config.model import load_config

    config = load_config(Path(__file__).resolve().parents[2] / "images.yaml")
    assert {c.name: c.binaries.check for c in config.components.values() if c.mirror} == {
        "git-sync": "fail",
        "otel-collector": "fail",
    }
    assert all(c.binaries.check == "fail" and not c.binaries.allow for c in config.components.values())


def test_plan_shows_a_binaries_policy_that_is_not_the_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from archlift.cli import main

    config = tmp_path / "images.yaml"
    config.write_text(
        "registry: ghcr.io/acme\ncomponents:\n"
        "  emu:\n    source: {git: https://example.com/emu.git, ref: v1}\n"
        "    binaries: {allow: ['/usr/bin/qemu-*'], reason: ships the emulators}\n"
        "  tool:\n    mirror: ghcr.io/x/tool:1\n    binaries: {check: fail}\n"
        "  plain:\n    mirror: ghcr.io/x/plain:1\n"
    )
    assert main(["plan", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        "  binaries:  a binary of another machine fails the build; allowed: /usr/bin/qemu-* (ships the emulators)"
        in out
    )
    assert out.count("  binaries:") == 2  # plain: the default for a mirror, a warning, is not repeated
    assert main(["plan", str(config), "--json"]) == 0
    data = {c["name"]: c["binaries"] for c in json.loads(capsys.readouterr().out)["components"]}
    assert data == {
        "emu": {"check": "fail", "allow": ["/usr/bin/qemu-*"], "reason": "ships the emulators"},
        "tool": {"check": "fail", "allow": [], "reason": ""},
        "plain": {"check": "warn", "allow": [], "reason": ""},
    }
