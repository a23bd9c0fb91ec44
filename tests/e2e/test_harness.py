"""The real-parts harness itself: the registry server, the seeded images, the git upstreams."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import urllib3
from support.registry import LocalRegistry

from archlift.errors import RegistryError, SourceError
from archlift.localenv import GitRepo, make_git_repo
from archlift.proc import run
from archlift.refs import Digest, ImageRef, Platform

EM_X86_64, EM_AARCH64 = 62, 183
INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = {"Accept": f"{INDEX}, application/vnd.oci.image.manifest.v1+json"}


def _get_json(reg: LocalRegistry, path: str) -> Any:
    resp = reg.request("GET", path, headers=ACCEPT)
    assert resp.status == 200, f"GET {path}: {resp.status} {resp.data[:200]!r}"
    return json.loads(resp.data)


def _files_in_image(reg: LocalRegistry, repository: str, manifest_digest: str) -> dict[str, bytes]:
    """Every regular file of an image (all layers, later layers win), read from the registry's blobs."""
    manifest = _get_json(reg, f"/v2/{repository}/manifests/{manifest_digest}")
    files: dict[str, bytes] = {}
    for layer in manifest["layers"]:
        blob = reg.request("GET", f"/v2/{repository}/blobs/{layer['digest']}")
        assert blob.status == 200
        assert Digest.of(blob.data) == Digest(layer["digest"])
        with tarfile.open(fileobj=io.BytesIO(blob.data)) as tar:
            for member in tar.getmembers():
                f = tar.extractfile(member) if member.isfile() else None
                if f is not None:
                    files[member.name.lstrip("./")] = f.read()
    return files


def _elf_machine(data: bytes) -> int:
    assert data[:4] == b"\x7fELF", "not an ELF file"
    assert data[5] == 1, "not little-endian"
    return int(struct.unpack_from("<H", data, 18)[0])


# --- the registry -------------------------------------------------------------
def test_plain_registry_answers_v2(registry: LocalRegistry) -> None:
    resp = registry.request("GET", "/v2/")
    assert resp.status == 200
    assert resp.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
    assert registry.url == f"http://{registry.host}" and registry.host.startswith("127.0.0.1:")
    assert registry.count("GET", r"^/v2/$", 200) >= 1


def test_registry_stops_without_leftovers() -> None:
    reg = LocalRegistry().start()
    pid = reg._proc.pid if reg._proc else 0
    workdir = reg.workdir
    assert reg.running and workdir.is_dir()
    reg.stop()
    assert not reg.running and not workdir.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(urllib3.exceptions.HTTPError):
        urllib3.PoolManager(retries=False).request("GET", f"{reg.url}/v2/", timeout=2)


def test_registry_that_cannot_start_reports_its_log() -> None:
    reg = LocalRegistry(log_level="nonsense")
    with pytest.raises(RegistryError, match="exited with status") as err, reg:
        pass
    assert "nonsense" in err.value.message  # the server's own complaint, from the tail of its log
    assert not reg.running and not reg.workdir.exists()


# --- the seeded images ----------------------------------------------------------
def test_seeded_busybox_is_an_index_of_exactly_amd64_and_arm64(seeded_base: ImageRef, registry: LocalRegistry) -> None:
    assert seeded_base.registry == registry.host and seeded_base.digest is not None
    raw = run(["docker", "buildx", "imagetools", "inspect", "--raw", str(seeded_base)]).stdout
    index = json.loads(raw)
    assert index["mediaType"] == INDEX
    assert sorted(str(Platform.from_oci(m["platform"])) for m in index["manifests"]) == ["linux/amd64", "linux/arm64"]

    fetched = run(["oras", "manifest", "fetch", "--plain-http", str(seeded_base)]).stdout
    assert Digest.of(fetched.encode()) == seeded_base.digest
    assert json.loads(fetched) == index
    assert registry.manifest_digest(seeded_base.repository, seeded_base.tag or "") == seeded_base.digest


@pytest.mark.parametrize(("arch", "machine"), [("amd64", EM_X86_64), ("arm64", EM_AARCH64)])
def test_seeded_busybox_binary_matches_its_platform(
    seeded_base: ImageRef, registry: LocalRegistry, arch: str, machine: int
) -> None:
    index = _get_json(registry, f"/v2/{seeded_base.repository}/manifests/{seeded_base.digest}")
    (digest,) = [m["digest"] for m in index["manifests"] if m["platform"]["architecture"] == arch]
    files = _files_in_image(registry, seeded_base.repository, digest)
    assert _elf_machine(files["bin/busybox"]) == machine


def test_seeding_is_idempotent(seeded_base: ImageRef, registry: LocalRegistry) -> None:
    from archlift.localenv import seed_busybox

    uploads = registry.blob_uploads()
    assert seed_busybox(registry.host) == seeded_base
    assert registry.blob_uploads() == uploads


def test_toolchain_holds_both_arch_binaries(toolchain: ImageRef, registry: LocalRegistry) -> None:
    assert toolchain.digest is not None
    files = _files_in_image(registry, toolchain.repository, str(toolchain.digest))
    assert _elf_machine(files["toolchain/amd64/busybox"]) == EM_X86_64
    assert _elf_machine(files["toolchain/arm64/busybox"]) == EM_AARCH64
    assert "bin/busybox" in files


# --- TLS and basic auth -----------------------------------------------------------
def _upload_blob(reg: LocalRegistry, repository: str, data: bytes, *, credentials: bool) -> int:
    """POST + monolithic PUT; returns the first status that is not a success (or 201 at the end)."""
    start = reg.request("POST", f"/v2/{repository}/blobs/uploads/", credentials=credentials)
    if start.status != 202:
        return start.status
    location = start.headers["Location"]
    sep = "&" if "?" in location else "?"
    put = reg.request(
        "PUT",
        f"{location}{sep}digest={Digest.of(data)}",
        body=data,
        headers={"Content-Type": "application/octet-stream"},
        credentials=credentials,
    )
    return put.status


def test_access_log_counts_uploads(fresh_registry: LocalRegistry) -> None:
    assert fresh_registry.blob_uploads() == 0
    assert _upload_blob(fresh_registry, "harness/counted", b"one", credentials=True) == 201
    assert _upload_blob(fresh_registry, "harness/counted", b"two", credentials=True) == 201
    assert fresh_registry.blob_uploads() == 2
    assert fresh_registry.count("POST", r"^/v2/harness/counted/blobs/uploads/$", 202) == 2


def test_blob_push_and_pull_with_credentials(auth_registry: LocalRegistry) -> None:
    data = os.urandom(4096)
    assert _upload_blob(auth_registry, "harness/blob", data, credentials=True) == 201
    got = auth_registry.request("GET", f"/v2/harness/blob/blobs/{Digest.of(data)}")
    assert got.status == 200 and got.data == data


def test_blob_push_and_pull_without_credentials_is_refused(auth_registry: LocalRegistry) -> None:
    data = os.urandom(1024)
    assert _upload_blob(auth_registry, "harness/anon", data, credentials=False) == 401
    assert _upload_blob(auth_registry, "harness/anon", data, credentials=True) == 201
    resp = auth_registry.request("GET", f"/v2/harness/anon/blobs/{Digest.of(data)}", credentials=False)
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Basic ")


def test_oras_push_and_pull_over_tls_with_basic_auth(auth_registry: LocalRegistry, tmp_path: Path) -> None:
    assert auth_registry.ca_file is not None and auth_registry.password is not None
    (tmp_path / "hello.txt").write_text("hello from archlift\n")
    ref = f"{auth_registry.host}/harness/artifact:v1"
    empty_config = tmp_path / "no-credentials.json"
    empty_config.write_text("{}")
    common = ["--ca-file", str(auth_registry.ca_file), "--registry-config", str(empty_config)]
    login = ["-u", auth_registry.username or "", "--password-stdin"]

    run(["oras", "push", *common, *login, ref, "hello.txt"], cwd=tmp_path, input=auth_registry.password)
    run(["oras", "pull", *common, *login, "-o", str(tmp_path / "out"), ref], input=auth_registry.password)
    assert (tmp_path / "out" / "hello.txt").read_text() == "hello from archlift\n"

    refused_before = auth_registry.count("", r"^/v2/harness/artifact/manifests/v1$", 401)
    anonymous = run(["oras", "pull", *common, "-o", str(tmp_path / "anon"), ref], check=False)
    assert anonymous.returncode != 0 and "credential" in anonymous.stderr
    assert auth_registry.count("", r"^/v2/harness/artifact/manifests/v1$", 401) > refused_before


def test_https_without_the_ca_fails_verification(auth_registry: LocalRegistry, tmp_path: Path) -> None:
    with pytest.raises(urllib3.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        urllib3.PoolManager(retries=False).request("GET", f"{auth_registry.url}/v2/", timeout=5)
    empty_config = tmp_path / "no-credentials.json"
    empty_config.write_text("{}")
    oras = run(
        ["oras", "repo", "ls", "--registry-config", str(empty_config), auth_registry.host],
        check=False,
    )
    assert oras.returncode != 0 and "certificate" in oras.stderr


# --- git upstreams ------------------------------------------------------------------
HELLO = {"README.md": "hello\n", "src/main.sh": "#!/bin/sh\necho hello\n"}


def _git(repo: GitRepo, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo.path), *args], check=True, capture_output=True, text=True).stdout


def test_git_repo_has_the_tag_at_the_commit(git_repo_factory: Callable[..., GitRepo]) -> None:
    repo = git_repo_factory(HELLO, tags=("v1.0.0", "v1.0"), extra_commits=[{"README.md": "hello again\n"}])
    assert _git(repo, "rev-parse", "v1.0.0^{commit}").strip() == repo.commit
    assert _git(repo, "rev-parse", "v1.0^{commit}").strip() == repo.commit
    assert _git(repo, "rev-parse", "main").strip() == repo.head != repo.commit
    assert _git(repo, "describe", "--match", "v1.0.0").strip() == f"v1.0.0-1-g{repo.head[:7]}"
    assert _git(repo, "status", "--porcelain") == ""
    assert _git(repo, "show", "v1.0.0:src/main.sh") == HELLO["src/main.sh"]


def test_git_repo_is_deterministic(git_repo_factory: Callable[..., GitRepo], tmp_path: Path) -> None:
    first = git_repo_factory(HELLO, name="one", extra_commits=[{"README.md": None, "NEW": b"\x00\x01"}])
    second = make_git_repo(
        first.path.parent / "one-src", tmp_path / "two", extra_commits=[{"README.md": None, "NEW": b"\x00\x01"}]
    )
    assert (first.commit, first.head) == (second.commit, second.head)
    # Fixed names, e-mails and dates: the same ids on any machine, with any git config.
    assert first.commit == "087424e83f9fdd034d5951f4c3bb54cacd0cb1a1"
    again = make_git_repo(first.path.parent / "one-src", tmp_path / "two")  # replaces what it made
    assert again.commit == first.commit and again.head == again.commit


def test_git_repo_never_replaces_a_repository_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "theirs" / ".git").mkdir(parents=True)
    with pytest.raises(SourceError, match="not a git repository made by archlift"):
        make_git_repo(tmp_path / "src", tmp_path / "theirs")
    assert (tmp_path / "theirs" / ".git").is_dir()


# --- saved real outputs (tests/fixtures/) ----------------------------------------------
def test_saved_fixtures_are_consistent() -> None:
    fixtures = Path(__file__).resolve().parents[1] / "fixtures"
    metadata = json.loads((fixtures / "buildx-metadata.busybox-two-platform.json").read_text())
    index_bytes = (fixtures / "imagetools-raw.busybox-index.json").read_bytes()
    assert str(Digest.of(index_bytes)) == metadata["containerimage.digest"]
    for entry in json.loads(index_bytes)["manifests"]:
        arch = entry["platform"]["architecture"]
        manifest = (fixtures / f"imagetools-raw.busybox-{arch}-manifest.json").read_bytes()
        assert (str(Digest.of(manifest)), len(manifest)) == (entry["digest"], entry["size"])


# --- the seeds in use -----------------------------------------------------------------
@pytest.mark.slow
def test_cross_build_from_the_seeds_runs_each_platform(
    seeded_base: ImageRef, toolchain: ImageRef, tmp_path: Path
) -> None:
    """The demo's pattern: "compile" on the build platform with the toolchain, run on the target (QEMU for arm64)."""
    (tmp_path / "Dockerfile").write_text(
        f"FROM --platform=$BUILDPLATFORM {toolchain} AS build\n"
        "ARG TARGETARCH\n"
        "RUN mkdir /out && cp /toolchain/$TARGETARCH/busybox /out/busybox-cross\n"
        f"FROM {seeded_base}\n"
        "COPY --from=build /out/busybox-cross /usr/bin/busybox-cross\n"
        'RUN ["/usr/bin/busybox-cross", "sh", "-c", "uname -m > /arch.txt"]\n'
    )
    out = tmp_path / "out"
    platforms = "linux/amd64,linux/arm64"
    run(["docker", "buildx", "build", "--platform", platforms, "--output", f"type=local,dest={out}", str(tmp_path)])
    assert (out / "linux_amd64" / "arch.txt").read_text().strip() == "x86_64"
    assert (out / "linux_arm64" / "arch.txt").read_text().strip() == "aarch64"
    assert _elf_machine((out / "linux_arm64" / "usr/bin/busybox-cross").read_bytes()) == EM_AARCH64
