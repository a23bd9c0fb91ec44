"""The tests' pytest plugin (pyproject.toml: ``-p support.plugin``): fixtures over real parts
(archlift.localenv and support.registry): registry servers, seeded images, git upstreams; the
isolation every test gets (its own cache directory and docker config); and ``run_archlift``.

Nothing is skipped when Docker or a tool is missing: the build host is set up by
scripts/setup-host.sh (CI runs it), so a missing part fails with that hint.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from archlift.errors import ArchliftError
from archlift.localenv import GitRepo, make_git_repo, seed_busybox, seed_toolchain, write_files
from archlift.proc import run, tail
from archlift.refs import ImageRef
from support import cli
from support.registry import LocalRegistry

SETUP = "run scripts/setup-host.sh (as root) to set up the build host"


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test has a cache directory (clone cache, build records, work trees) and a docker config
    of its own, empty: nothing leaks between tests, nothing of the user's is read or written. A test
    may set its own on top."""
    home = tmp_path_factory.mktemp("isolated")
    (home / "docker").mkdir()
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(home / "archlift-cache"))
    monkeypatch.setenv("DOCKER_CONFIG", str(home / "docker"))


@pytest.fixture
def run_archlift() -> Callable[..., subprocess.CompletedProcess[str]]:
    """The CLI as a user runs it: ``run_archlift("mirror", "--to", host, cwd=..., env=..., check=True)``
    (see ``support.cli.run_archlift``)."""
    return cli.run_archlift


GitRepoFactory = Callable[..., GitRepo]


def _failure(what: str, err: ArchliftError) -> BaseException:
    """A test failure (not a skip) that names the missing part and how to set the host up."""
    hint = "" if err.hint else f"\n  {SETUP}"
    return pytest.fail.Exception(f"{what}: {err.render()}{hint}", pytrace=False)


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Fails (never skips) unless the engine answers and buildx can build linux/arm64."""
    try:
        info = run(["docker", "info", "--format", "{{.ServerVersion}}"], check=False, timeout=30)
        if info.returncode != 0:
            pytest.fail(
                f"Docker is unreachable ('docker info' failed):\n{tail(info.stderr, 5)}\n{SETUP}", pytrace=False
            )
        builders = run(["docker", "buildx", "ls"], timeout=30).stdout
    except ArchliftError as e:
        raise _failure("Docker is unusable", e) from None
    if "linux/arm64" not in builders:
        pytest.fail(
            f"the current buildx builder cannot build linux/arm64 (QEMU binfmt missing?)\n{SETUP}", pytrace=False
        )


def _start(*, tls: bool = False, auth: bool = False) -> LocalRegistry:
    try:
        return LocalRegistry(tls=tls, auth=auth).start()
    except ArchliftError as e:
        raise _failure("cannot start the local registry", e) from None


@pytest.fixture(scope="session")
def registry() -> Iterator[LocalRegistry]:
    """The real distribution registry, plain HTTP on 127.0.0.1 (shared by the session: use your own repositories)."""
    reg = _start()
    yield reg
    reg.stop()


@pytest.fixture()
def fresh_registry() -> Iterator[LocalRegistry]:
    """A plain-HTTP registry of the test's own, for counting requests in its access log."""
    reg = _start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[LocalRegistry]:
    """The real registry over TLS (its own CA: ``ca_file``) with htpasswd basic auth (``username``/``password``)."""
    reg = _start(tls=True, auth=True)
    yield reg
    reg.stop()


def _seeded(seed: Callable[[str], ImageRef], registry: LocalRegistry, what: str) -> ImageRef:
    try:
        return seed(registry.host)
    except ArchliftError as e:
        raise _failure(f"cannot seed {what}", e) from None


@pytest.fixture(scope="session")
def seeded_base(docker_ready: None, registry: LocalRegistry) -> ImageRef:
    """busybox for linux/amd64 + linux/arm64 in ``registry``: ``127.0.0.1:PORT/base/busybox:1.35@sha256:...``."""
    return _seeded(seed_busybox, registry, "the busybox base image")


@pytest.fixture(scope="session")
def toolchain(docker_ready: None, registry: LocalRegistry) -> ImageRef:
    """The build-platform "cross toolchain" in ``registry`` (/toolchain/{amd64,arm64}/busybox)."""
    return _seeded(seed_toolchain, registry, "the toolchain image")


@pytest.fixture()
def git_repo_factory(tmp_path: Path) -> GitRepoFactory:
    """``factory(files, name="upstream", tags=("v1.0.0",), extra_commits=())`` -> GitRepo under tmp_path.

    ``files`` is a directory to copy, or a mapping of relative path to content.
    """

    def factory(
        files: Path | Mapping[str, str | bytes],
        name: str = "upstream",
        tags: Sequence[str] = ("v1.0.0",),
        extra_commits: Sequence[Mapping[str, str | bytes | None]] = (),
    ) -> GitRepo:
        src = files if isinstance(files, Path) else write_files(tmp_path / f"{name}-src", files)
        return make_git_repo(src, tmp_path / name, tags=tags, extra_commits=extra_commits)

    return factory
