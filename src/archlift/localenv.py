"""What ``archlift demo`` runs on: a local registry, seeded base images, git upstreams.

Nothing here is faked. ``LocalRegistry`` runs the CNCF distribution server
(``docker-registry serve``) on loopback, in plain HTTP (the tests add TLS, basic
auth and access-log counting on top of it: tests/support/registry.py).
``seed_busybox``, ``seed_toolchain`` and ``seed_sbom_scanner`` build small images
from Debian's busybox-static packages (no public registry is reachable on a build
host) with archlift's own build engine: the bake target of
``archlift.steps.engine``, the one definition a release build uses, then push
them by digest with the one copy. ``make_git_repo`` turns a directory into a git
repository with deterministic commits, to stand in for an upstream.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import platform
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import yaml

from .errors import BuildError, RegistryError, SourceError, ToolMissing
from .oci.http import TLS, Transport, TransportError
from .proc import run, tail, which
from .refs import ImageRef

SETUP_HINT = "run scripts/setup-host.sh to set up the build host"
BUSYBOX_DEB_DIR = Path("/var/cache/archlift/busybox-static")
ARCHES = ("amd64", "arm64")
ARCHES_PLATFORMS = ("linux/amd64", "linux/arm64")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_prctl: Callable[..., int] | None
try:  # resolved here, not in the forked child (dlopen there could deadlock with other threads)
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def port_is_free(port: int) -> bool:
    if not port:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the registry's listener does
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the parent dies, even by SIGKILL (Linux)."""
    if _prctl is not None:
        _prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_LIVE: set[LocalRegistry] = set()


@atexit.register
def _stop_all() -> None:
    for reg in list(_LIVE):
        reg.stop()


class LocalRegistry:
    """The real distribution registry on ``127.0.0.1:<free port>``, in a temporary directory (or
    ``workdir``, kept: the demo reuses its storage and port across runs).

    ``with LocalRegistry() as reg: ...`` or ``start()``/``stop()``. The server writes one
    access-log line per request to ``access_log_path`` and its own log to ``log_path``.
    Docker trusts plain HTTP on 127.0.0.0/8, so buildx can push to it without TLS.
    Subclasses add to the server's configuration with ``server_config``.
    """

    scheme = "http"

    def __init__(
        self,
        *,
        log_level: str = "info",
        startup_timeout: float = 15.0,
        workdir: Path | None = None,
        port: int = 0,
    ) -> None:
        self.preferred_port = port  # tried first when free (the demo keeps its port across runs)
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        # Owned work directories are made by start() and removed by stop().
        self.workdir = Path(workdir or Path(tempfile.gettempdir()) / f"archlift-registry-{secrets.token_hex(6)}")
        self.storage_dir = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.access_log_path = self.workdir / "access.log"
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    # --- addresses -----------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def ref(self, repository: str, tag: str | None = None) -> ImageRef:
        return ImageRef.parse(f"{self.host}/{repository}" + (f":{tag}" if tag else ""))

    # --- what subclasses add ---------------------------------------------
    def server_config(self) -> dict[str, Any]:
        """More of the server's configuration: ``{"http": {...}, "auth": {...}}`` (merged)."""
        return {}

    def tls(self) -> TLS | None:
        """How to trust the server (None: plain HTTP)."""
        return None

    # --- life cycle ----------------------------------------------------
    def start(self) -> Self:
        if self._proc is not None:
            return self
        binary = which("docker-registry")
        self.workdir.mkdir(mode=0o700, parents=True, exist_ok=not self._own_workdir)
        try:
            self._start(binary)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, binary: str) -> None:
        self.storage_dir.mkdir(exist_ok=True)
        extra = self.server_config()
        exited: int | None = None
        for attempt in range(3):  # a free port can be taken between probing and binding
            self.port = self.preferred_port if attempt == 0 and port_is_free(self.preferred_port) else free_port()
            config = {
                "version": 0.1,
                "log": {"level": self.log_level, "formatter": "text", "accesslog": {"disabled": False}},
                "storage": {
                    "filesystem": {"rootdirectory": str(self.storage_dir)},
                    "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}},
                },
                **{k: v for k, v in extra.items() if k != "http"},
                "http": {"addr": self.host, "secret": secrets.token_hex(16), **extra.get("http", {})},
            }
            config_path = self.workdir / "config.yml"
            config_path.write_text(yaml.safe_dump(config, sort_keys=False))
            access = self.access_log_path.open("ab")  # stdout: the access log
            errlog = self.log_path.open("ab")  # stderr: the server's log
            self._files = [access, errlog]
            self._proc = subprocess.Popen(
                [binary, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=access,
                stderr=errlog,
                preexec_fn=_die_with_parent,
            )
            _LIVE.add(self)
            if self._wait_until_up():
                return
            exited = self._proc.poll()
            self.stop(remove=False)
            if "address already in use" not in self.log_path.read_text(errors="replace"):
                break
        what = (
            f"exited with status {exited}"
            if exited is not None
            else f"did not answer within {self.startup_timeout:g} s"
        )
        raise RegistryError(
            f"the local registry (docker-registry serve) on {self.url} {what}\n"
            + tail(self.log_path.read_text(errors="replace")),
            hint=SETUP_HINT,
        )

    def _wait_until_up(self) -> bool:
        deadline = time.monotonic() + self.startup_timeout
        probe = Transport(timeout=1.0)
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    return False
                try:
                    status = probe.send("GET", f"{self.url}/v2/", {}, tls=self.tls()).load().status
                except TransportError:
                    status = 0
                if status in (200, 401):
                    return True
                time.sleep(0.05)
            return False
        finally:
            probe.close()

    def stop(self, *, remove: bool = True) -> None:
        """Kill the server and wait for it; then remove the temporary directory (unless given one)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for f in self._files:
            f.close()
        self._files = []
        _LIVE.discard(self)
        if remove and self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url}, running={self.running})"


# --- seeded images ----------------------------------------------------------
def find_debs(directory: Path | None = None) -> dict[str, Path]:
    """Debian's busybox-static .deb for each of amd64 and arm64: ``{"amd64": path, "arm64": path}``.

    Looks in ``directory``, else ``$ARCHLIFT_BUSYBOX_DEBS``, else /var/cache/archlift/busybox-static.
    """
    where = directory or Path(os.environ.get("ARCHLIFT_BUSYBOX_DEBS") or BUSYBOX_DEB_DIR)
    found: dict[str, Path] = {}
    for arch in ARCHES:
        debs = sorted(where.glob(f"busybox-static_*_{arch}.deb"))
        if not debs:
            raise ToolMissing(f"no busybox-static .deb for {arch} in {where}", hint=SETUP_HINT)
        found[arch] = debs[-1]
    return found


def busybox_context(context: Path) -> None:
    """Lay out ``<arch>/bin/busybox`` for both architectures in a build context."""
    for arch, deb in find_debs().items():
        unpacked = context / f".deb-{arch}"
        run(["dpkg-deb", "-x", str(deb), str(unpacked)], error=BuildError, context=f"unpacking {deb.name}")
        (context / arch / "bin").mkdir(parents=True)
        shutil.move(unpacked / "bin" / "busybox", context / arch / "bin" / "busybox")
        shutil.rmtree(unpacked)
    (context / ".dockerignore").write_text(".deb-*\n")


def _bake_and_push(
    context: Path,
    ref: ImageRef,
    platforms: Sequence[str],
    what: str,
    args: Mapping[str, str],
    exporter: str,
) -> ImageRef:
    """Build ``context/Dockerfile`` with the engine's own bake target (a component of a small
    images.yaml whose source is the context: SOURCE_DATE_EPOCH 0 and rewritten timestamps, so the
    same digests on every host; no attestations, no cache), then push it by digest and tag it."""
    from .config.model import load_config
    from .oci import RegistryClient
    from .oci.layout import push_image
    from .steps.engine import BuildJob, bake
    from .steps.inputs import Inputs
    from .steps.patches import PatchedTree
    from .steps.sources import resolve
    from .ui import quiet

    work = context.parent
    definition = {
        "archlift": 1,
        "registry": ref.registry,
        "platforms": list(platforms),
        "attestations": {"provenance": False, "sbom": False},
        "cache": {"type": "none"},
        "reproducible": True,
        "components": {"seed": {"image": ref.name, "source": {"path": "context"}, "build": {"args": dict(args)}}},
    }
    (work / "images.yaml").write_text(yaml.safe_dump(definition, sort_keys=False))
    config = load_config(work / "images.yaml")
    comp = config.components["seed"]
    assert comp.source is not None and comp.build is not None
    tree = PatchedTree(context, resolve(comp.source), ())
    job = BuildJob(comp, Inputs("seed", {}, dict(comp.build.args)), tree, work / "layout", exporter)
    built = bake([job], config, work, quiet)[comp.name]
    if isinstance(built, BuildError):
        raise BuildError(f"seeding {what} into {ref}: {built.message}", hint=SETUP_HINT)
    with RegistryClient() as client:
        push_image(client, job.layout, built, ref, (ref.tag or "latest",))
    return ImageRef(ref.registry, ref.repository, ref.tag, built)


def seed(
    registry_host: str,
    repository: str,
    tag: str,
    dockerfile: str,
    platforms: Sequence[str] = ARCHES_PLATFORMS,
    *,
    what: str = "",
    args: Mapping[str, str] | None = None,
    exporter: str = "",
    context_from: Path | None = None,
) -> ImageRef:
    """An image built from ``dockerfile`` and pushed to a plain-HTTP loopback registry, unless its
    tag is there already; returns ``host/repository:tag@digest``. The build context holds
    ``amd64/bin/busybox`` and ``arm64/bin/busybox`` (Debian's busybox-static of each), or is a
    copy of ``context_from``. ``exporter``: more options of the OCI exporter."""
    from .oci import RegistryClient

    ref = ImageRef.parse(f"{registry_host}/{repository}:{tag}")
    with RegistryClient() as client:
        found = client.head_manifest(ref)
    if found is not None:
        return ImageRef(ref.registry, ref.repository, ref.tag, found.digest)
    with tempfile.TemporaryDirectory(prefix="archlift-seed-") as tmp:
        context = Path(tmp) / "context"
        if context_from is not None:
            shutil.copytree(context_from, context)
        else:
            context.mkdir()
            busybox_context(context)
        (context / "Dockerfile").write_text(dockerfile)
        return _bake_and_push(context, ref, platforms, what or f"the image {repository}", args or {}, exporter)


BUSYBOX_DOCKERFILE = """\
FROM scratch
ARG TARGETARCH
COPY ${TARGETARCH}/bin/busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
"""

TOOLCHAIN_DOCKERFILE = """\
FROM scratch
ARG TARGETARCH
COPY ${TARGETARCH}/bin/busybox /bin/busybox
RUN ["/bin/busybox","--install","-s","/bin"]
COPY amd64/bin/busybox /toolchain/amd64/busybox
COPY arm64/bin/busybox /toolchain/arm64/busybox
"""


def seed_busybox(registry_host: str, repository: str = "base/busybox", tag: str = "1.35") -> ImageRef:
    """A two-platform (linux/amd64, linux/arm64) busybox image in a plain-HTTP loopback registry;
    returns ``host/repository:tag@digest`` (the OCI index). Idempotent: a tag that exists is
    returned without building."""
    return seed(registry_host, repository, tag, BUSYBOX_DOCKERFILE, ARCHES_PLATFORMS, what="busybox")


def build_platform() -> str:
    """The platform of this machine, as buildx names it (``linux/amd64`` or ``linux/arm64``)."""
    machine = platform.machine().lower()
    return "linux/arm64" if machine in ("aarch64", "arm64") else "linux/amd64"


def seed_toolchain(registry_host: str, repository: str = "base/toolchain", tag: str = "1") -> ImageRef:
    """A one-platform "cross toolchain" image for the build platform (plain HTTP).

    It holds busybox (``/bin/sh`` etc.) plus ``/toolchain/amd64/busybox`` and
    ``/toolchain/arm64/busybox``: a "compiler" for TARGETARCH copies the one for
    that architecture. Returns ``host/repository:tag@digest`` (an image manifest).
    Idempotent like ``seed_busybox``.
    """
    return seed(registry_host, repository, tag, TOOLCHAIN_DOCKERFILE, (build_platform(),), what="the toolchain")


SBOM_SCANNER_DIR = Path(__file__).resolve().parent / "data" / "sbom-scanner"


def seed_sbom_scanner(registry_host: str, repository: str = "base/sbom-scanner", tag: str = "1") -> ImageRef:
    """archlift's own BuildKit SBOM generator (archlift/data/sbom-scanner) on the seeded busybox
    base; returns ``host/repository:tag@digest``. Idempotent like ``seed_busybox``."""
    if not (SBOM_SCANNER_DIR / "Dockerfile").is_file():
        raise ToolMissing(f"{SBOM_SCANNER_DIR}: the SBOM scanner's Dockerfile is missing from the installed package")
    base = seed_busybox(registry_host)
    dockerfile = (SBOM_SCANNER_DIR / "Dockerfile").read_text()
    return seed(
        registry_host,
        repository,
        tag,
        dockerfile,
        ARCHES_PLATFORMS,
        what="the SBOM scanner",
        args={"BASE": str(base)},
        context_from=SBOM_SCANNER_DIR,
    )


# --- git upstreams ----------------------------------------------------------
GIT_NAME = "archlift test"
GIT_EMAIL = "test@archlift.invalid"
GIT_EPOCH = 1704067200  # 2024-01-01T00:00:00Z
_MADE_HERE = "archlift-made"  # a file in .git: make_git_repo may replace this repository


@dataclass(frozen=True)
class GitRepo:
    path: Path
    commit: str  # the commit the tags point at (the first one)
    head: str  # the last commit on the branch (== commit without extra commits)
    tags: tuple[str, ...]
    branch: str = "main"

    @property
    def url(self) -> str:
        return str(self.path)


def make_git_repo(
    src_dir: Path,
    dest_dir: Path,
    tags: Sequence[str] = ("v1.0.0",),
    extra_commits: Sequence[Mapping[str, str | bytes | None]] = (),
    *,
    branch: str = "main",
    message: str = "Import",
) -> GitRepo:
    """Copy ``src_dir`` to ``dest_dir`` and make it a git repository: one commit of every file,
    annotated ``tags`` on it, then one commit per ``extra_commits`` entry (a mapping of
    relative path to new content; None deletes the file).

    Names, e-mails and dates are fixed and git's user/system config is ignored, so the
    same input gives the same commit ids on every machine. A ``dest_dir`` made by an
    earlier call (marked in its .git) is replaced; any other non-empty one is an error.
    """
    src_dir, dest_dir = Path(src_dir), Path(dest_dir)
    marker = dest_dir / ".git" / _MADE_HERE
    if not src_dir.is_dir():
        raise SourceError(f"{src_dir}: not a directory, cannot make a git repository of it")
    if dest_dir.exists():
        if marker.is_file():
            shutil.rmtree(dest_dir)
        elif any(dest_dir.iterdir()):
            raise SourceError(f"{dest_dir}: exists and is not empty (and not a git repository made by archlift)")
    shutil.copytree(src_dir, dest_dir, symlinks=True, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".git"))
    git_dir = dest_dir / ".git"
    # Explicit GIT_* variables override any inherited from a git hook or the caller's checkout.
    base_env = {
        "GIT_DIR": str(git_dir),
        "GIT_WORK_TREE": str(dest_dir),
        "GIT_INDEX_FILE": str(git_dir / "index"),
        "GIT_OBJECT_DIRECTORY": str(git_dir / "objects"),
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": GIT_NAME,
        "GIT_AUTHOR_EMAIL": GIT_EMAIL,
        "GIT_COMMITTER_NAME": GIT_NAME,
        "GIT_COMMITTER_EMAIL": GIT_EMAIL,
    }

    def git(*args: str, n: int = 0) -> str:
        date = f"{GIT_EPOCH + 60 * n} +0000"  # commit n is dated n minutes after GIT_EPOCH
        env = {**base_env, "GIT_AUTHOR_DATE": date, "GIT_COMMITTER_DATE": date}
        return run(["git", *args], cwd=dest_dir, env=env, error=SourceError, context=f"git in {dest_dir}").stdout

    git("init", "--quiet", f"--initial-branch={branch}")
    marker.write_text("made by archlift.localenv.make_git_repo; replaced when it runs again\n")
    git("add", "--all")
    git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", message)
    commit = git("rev-parse", "HEAD").strip()
    for tag in tags:
        git("tag", "--annotate", "-m", tag, tag, commit)
    for n, change in enumerate(extra_commits, start=1):
        write_files(dest_dir, change)
        git("add", "--all", n=n)
        git("commit", "--quiet", "--allow-empty", "--no-verify", "-m", f"Change {n}", n=n)
    head = git("rev-parse", "HEAD").strip()
    return GitRepo(dest_dir, commit, head, tuple(tags), branch)


def write_files(root: Path, files: Mapping[str, str | bytes | None]) -> Path:
    """Write each relative path's content under ``root`` (text or bytes; None deletes the file); returns root."""
    for rel, content in files.items():
        target = root / rel
        if content is None:
            target.unlink()
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return root
