"""Real parts for the tests and the demo: a local registry, seeded base images, git upstreams.

Nothing here is faked. ``LocalRegistry`` runs the CNCF distribution server
(``docker-registry serve``) on loopback, optionally with TLS (its own CA, made
with the openssl CLI) and htpasswd basic auth. ``seed_busybox`` and
``seed_toolchain`` build two small images from Debian's busybox-static packages
with the real ``docker buildx`` and push them there (no public registry is
reachable on a build host). ``make_git_repo`` turns a directory into a git
repository with deterministic commits, to stand in for an upstream.
"""

from __future__ import annotations

import atexit
import base64
import ctypes
import json
import os
import platform
import re
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
from typing import IO

import yaml

from .errors import BuildError, RegistryError, SourceError, ToolMissing
from .oci.http import TLS, Response, Transport, TransportError
from .proc import run, tail, which
from .refs import Digest, ImageRef

SETUP_HINT = "run scripts/setup-host.sh to set up the build host"
BUSYBOX_DEB_DIR = Path("/var/cache/archlift/busybox-static")
ARCHES = ("amd64", "arm64")
ARCHES_PLATFORMS = ("linux/amd64", "linux/arm64")

_MANIFEST_ACCEPT = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
# 127.0.0.1 - - [21/Nov/2026:05:10:45 +0000] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"
_ACCESS_RE = re.compile(
    r'^\S+ \S+ (?P<user>\S+) \[[^\]]*\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" (?P<status>\d{3}) '
)


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


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as the registry's access log records it."""

    method: str
    path: str
    status: int
    user: str  # "-" when no credentials were sent


_LIVE: set[LocalRegistry] = set()


@atexit.register
def _stop_all() -> None:
    for reg in list(_LIVE):
        reg.stop()


class LocalRegistry:
    """The real distribution registry on ``127.0.0.1:<free port>``, in a temporary directory.

    ``with LocalRegistry(tls=True, auth=True) as reg: ...`` or ``start()``/``stop()``.
    The access log (one line per request) is ``access_log_path``; the server's
    own log is ``log_path``. Docker trusts plain HTTP on 127.0.0.0/8, so buildx
    can push to a registry without TLS; oras needs ``--plain-http`` for it.
    """

    def __init__(
        self,
        *,
        tls: bool = False,
        auth: bool = False,
        username: str = "archlift",
        password: str | None = None,
        log_level: str = "info",
        startup_timeout: float = 15.0,
        workdir: Path | None = None,
        port: int = 0,
        tls_hosts: Sequence[str] = (),
    ) -> None:
        self.tls = tls
        self.tls_hosts = tuple(tls_hosts)  # more names for its certificate (a test that reaches it through a proxy)
        self.preferred_port = port  # tried first when free (the demo keeps its port across runs)
        self.auth = auth
        self.username = username if auth else None
        self.password = (password or secrets.token_urlsafe(12)) if auth else None
        self.log_level = log_level
        self.startup_timeout = startup_timeout
        self._own_workdir = workdir is None
        # Owned work directories are made by start() and removed by stop().
        self.workdir = Path(workdir or Path(tempfile.gettempdir()) / f"archlift-registry-{secrets.token_hex(6)}")
        self.storage_dir = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.access_log_path = self.workdir / "access.log"
        self.ca_file: Path | None = None
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []
        self._transport: Transport | None = None

    # --- addresses -----------------------------------------------------
    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``: the registry part of an image reference."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs (the benchmarks read its CPU time)."""
        return self._proc.pid if self._proc is not None else None

    def ref(self, repository: str, tag: str | None = None) -> ImageRef:
        return ImageRef.parse(f"{self.host}/{repository}" + (f":{tag}" if tag else ""))

    # --- life cycle ----------------------------------------------------
    def start(self) -> LocalRegistry:
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
        extra: dict[str, object] = {}
        if self.tls:
            self.ca_file, cert, key = make_tls_files(self.workdir / "tls", ("127.0.0.1", "localhost", *self.tls_hosts))
            extra["tls"] = {"certificate": str(cert), "key": str(key)}
        auth_conf: dict[str, object] = {}
        if self.auth:
            assert self.username is not None and self.password is not None
            line = run(
                ["htpasswd", "-Bbn", self.username, self.password], error=RegistryError, context="htpasswd"
            ).stdout
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(line.strip() + "\n")
            auth_conf = {"auth": {"htpasswd": {"realm": "archlift-local", "path": str(htpasswd)}}}
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
                "http": {"addr": self.host, "secret": secrets.token_hex(16), **extra},
                **auth_conf,
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
                    status = probe.send("GET", f"{self.url}/v2/", {}, tls=self._tls()).load().status
                except TransportError:
                    status = 0
                if status in (200, 401):
                    return True
                time.sleep(0.05)
            return False
        finally:
            probe.close()

    def _tls(self) -> TLS | None:
        return TLS(ca_files=(str(self.ca_file),)) if self.ca_file else None

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
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        _LIVE.discard(self)
        if remove:
            self._remove_workdir()

    def _remove_workdir(self) -> None:
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> LocalRegistry:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- talking to it -------------------------------------------------
    def auth_header(self) -> dict[str, str]:
        """``Authorization: Basic ...`` for this registry's user (empty without auth)."""
        if not self.auth:
            return {}
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        credentials: bool = True,
    ) -> Response:
        """One HTTP request to ``url + path`` (or to ``path`` when it is a full URL, such as an upload's
        Location), trusting this registry's CA, through archlift's own HTTP layer; credentials are sent
        unless told not. The answer's body is read whole (``data``)."""
        if self._transport is None:
            self._transport = Transport(timeout=30.0)
        all_headers = {**(self.auth_header() if credentials else {}), **(headers or {})}
        url = path if path.startswith(("http://", "https://")) else self.url + path
        tls = self._tls() if url.startswith("https://") else None
        return self._transport.send(method, url, all_headers, body, tls=tls).load(256 << 20)

    def manifest_digest(self, repository: str, reference: str) -> Digest | None:
        """The digest ``repository:reference`` resolves to here, or None when it does not exist."""
        resp = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": _MANIFEST_ACCEPT})
        return _digest_from_head(resp, f"{self.host}/{repository}:{reference}")

    def access_log(self) -> list[AccessLogEntry]:
        """Every request the registry has answered so far, oldest first."""
        if not self.access_log_path.exists():
            return []
        entries = []
        for line in self.access_log_path.read_text(errors="replace").splitlines():
            m = _ACCESS_RE.match(line)
            if m:
                entries.append(AccessLogEntry(m["method"], m["path"], int(m["status"]), m["user"]))
        return entries

    def count(self, method: str = "", path_pattern: str = "", status: int | None = None) -> int:
        """How many logged requests have this method ("" = any), a path matching the regex, and this status."""
        rx = re.compile(path_pattern)
        return sum(
            1
            for e in self.access_log()
            if method in ("", e.method) and rx.search(e.path) and status in (None, e.status)
        )

    def blob_uploads(self) -> int:
        """Completed blob uploads (the final ``PUT .../blobs/uploads/...`` answered 201)."""
        return self.count("PUT", r"/blobs/uploads/", 201)

    def __repr__(self) -> str:
        return f"LocalRegistry({self.url}, tls={self.tls}, auth={self.auth}, running={self.running})"


def _digest_from_head(resp: Response, what: str) -> Digest | None:
    if resp.status == 404:
        return None
    if resp.status != 200:
        raise RegistryError(f"HEAD {what}: the registry answered {resp.status}")
    header = resp.headers.get("Docker-Content-Digest", "")
    try:
        return Digest.parse(header)
    except ValueError:
        raise RegistryError(f"HEAD {what}: no usable Docker-Content-Digest header ({header!r})") from None


def make_tls_files(directory: Path, hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> tuple[Path, Path, Path]:
    """A fresh CA and a server certificate signed by it for ``hosts``: returns (ca.crt, server.crt, server.key).

    Made with the openssl CLI (ECDSA P-256, valid two days), with the key usages a
    strict verifier wants (CA: basicConstraints + keyCertSign; server: SAN + serverAuth).
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "server.ext"
    san = ",".join(("IP:" if re.fullmatch(r"[\d.]+|[0-9a-fA-F:]+", h) else "DNS:") + h for h in hosts)
    ext.write_text(
        f"subjectAltName={san}\n"
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def openssl(*args: str) -> None:
        run(["openssl", *args], error=RegistryError, context="making the test TLS certificates")

    openssl(
        "req", "-x509", *newkey, "-keyout", str(ca_key), "-out", str(ca_crt), "-days", "2",
        "-subj", "/CN=archlift local test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    openssl("req", "-new", *newkey, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={hosts[0]}")
    openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_crt), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(crt), "-days", "2", "-extfile", str(ext),
    )  # fmt: skip
    return ca_crt, crt, key


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


def _busybox_context(context: Path) -> None:
    """Lay out ``<arch>/bin/busybox`` for both architectures in a build context."""
    for arch, deb in find_debs().items():
        unpacked = context / f".deb-{arch}"
        run(["dpkg-deb", "-x", str(deb), str(unpacked)], error=BuildError, context=f"unpacking {deb.name}")
        (context / arch / "bin").mkdir(parents=True)
        shutil.move(unpacked / "bin" / "busybox", context / arch / "bin" / "busybox")
        shutil.rmtree(unpacked)
    (context / ".dockerignore").write_text(".deb-*\n")


def _existing(ref: ImageRef) -> ImageRef | None:
    """``ref`` pinned to its digest when a plain-HTTP registry already has it, else None."""
    transport = Transport(timeout=10.0)
    try:
        resp = transport.send(
            "HEAD",
            f"http://{ref.registry}/v2/{ref.repository}/manifests/{ref.reference}",
            {"Accept": _MANIFEST_ACCEPT},
        )
    except TransportError as e:
        raise RegistryError(f"checking {ref}: {e}", hint="is the registry running?") from e
    finally:
        transport.close()
    digest = _digest_from_head(resp, str(ref))
    return ImageRef(ref.registry, ref.repository, ref.tag, digest) if digest else None


def _build_and_push(
    context: Path,
    dockerfile: str,
    ref: ImageRef,
    platforms: Sequence[str],
    what: str,
    args: Mapping[str, str] | None = None,
    output: str = "",
) -> ImageRef:
    """Build to an OCI layout (timestamps rewritten to the epoch: the same digests on every host), push it
    by digest with archlift's own client, then tag it. buildx's own push is not used: the registry can
    answer its HEAD of the tag with a passing 500 when several pushes share blobs. ``output``: more
    options of the OCI exporter (``compression=zstd,force-compression=true``)."""
    from .oci import RegistryClient
    from .oci.layout import push_image

    (context / "Dockerfile").write_text(dockerfile)
    build_args = [f"--build-arg={k}={v}" for k, v in sorted((args or {}).items())]
    metadata = context.parent / "metadata.json"
    layout = context.parent / "layout"
    run(
        [
            "docker", "buildx", "build",
            "--platform", ",".join(platforms),
            "--provenance=false", "--sbom=false",
            "--build-arg", "SOURCE_DATE_EPOCH=0", *build_args,
            "--output", f"type=oci,dest={layout},tar=false,rewrite-timestamp=true" + (f",{output}" if output else ""),
            "--metadata-file", str(metadata),
            str(context),
        ],
        error=BuildError,
        context=f"seeding {what} into {ref}",
        timeout=600,
    )  # fmt: skip
    try:
        digest = Digest.parse(json.loads(metadata.read_text())["containerimage.digest"])
    except (OSError, KeyError, ValueError) as e:
        raise BuildError(f"seeding {what}: no image digest in the buildx metadata file ({e})") from e
    with RegistryClient() as client:
        push_image(client, layout, digest, ref, (ref.tag or "latest",))
    return ImageRef(ref.registry, ref.repository, ref.tag, digest)


def _seed(
    registry_host: str,
    repository: str,
    tag: str,
    what: str,
    dockerfile: str,
    platforms: Sequence[str],
    output: str = "",
) -> ImageRef:
    ref = ImageRef.parse(f"{registry_host}/{repository}:{tag}")
    existing = _existing(ref)
    if existing:
        return existing
    with tempfile.TemporaryDirectory(prefix="archlift-seed-") as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        _busybox_context(context)
        return _build_and_push(context, dockerfile, ref, platforms, what, output=output)


def seed_image(
    registry_host: str,
    repository: str,
    tag: str,
    dockerfile: str,
    platforms: Sequence[str] = ARCHES_PLATFORMS,
    *,
    output: str = "",
) -> ImageRef:
    """An image built from ``dockerfile`` over a context that holds ``amd64/bin/busybox`` and
    ``arm64/bin/busybox`` (Debian's busybox-static of each), pushed to a plain-HTTP loopback registry:
    images right or wrong on purpose (an arm64 entry that holds the amd64 binary). ``output``: more
    options of buildx's OCI exporter (``compression=zstd,force-compression=true``). Idempotent like
    ``seed_busybox``; returns ``host/repository:tag@digest``."""
    return _seed(registry_host, repository, tag, f"the image {repository}", dockerfile, platforms, output)


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
    """Build a two-platform (linux/amd64, linux/arm64) busybox image and push it to a plain-HTTP
    loopback registry; returns ``host/repository:tag@digest`` (the OCI index).

    Idempotent: when the tag already exists there, its digest is returned without building.
    """
    return _seed(registry_host, repository, tag, "busybox", BUSYBOX_DOCKERFILE, ("linux/amd64", "linux/arm64"))


def build_platform() -> str:
    """The platform of this machine, as buildx names it (``linux/amd64`` or ``linux/arm64``)."""
    machine = platform.machine().lower()
    return "linux/arm64" if machine in ("aarch64", "arm64") else "linux/amd64"


def seed_toolchain(registry_host: str, repository: str = "base/toolchain", tag: str = "1") -> ImageRef:
    """Build a one-platform "cross toolchain" image for the build platform and push it (plain HTTP).

    It holds busybox (``/bin/sh`` etc.) plus ``/toolchain/amd64/busybox`` and
    ``/toolchain/arm64/busybox``: a "compiler" for TARGETARCH copies the one for
    that architecture. Returns ``host/repository:tag@digest`` (an image manifest).
    Idempotent like ``seed_busybox``.
    """
    return _seed(registry_host, repository, tag, "the toolchain", TOOLCHAIN_DOCKERFILE, (build_platform(),))


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


SBOM_SCANNER_DIR = Path(__file__).resolve().parent / "data" / "sbom-scanner"


def seed_sbom_scanner(registry_host: str, repository: str = "base/sbom-scanner", tag: str = "1") -> ImageRef:
    """Build archlift's own BuildKit SBOM generator (archlift/data/sbom-scanner) on the seeded busybox
    base and push it; returns ``host/repository:tag@digest``. Idempotent like ``seed_busybox``."""
    ref = ImageRef.parse(f"{registry_host}/{repository}:{tag}")
    existing = _existing(ref)
    if existing:
        return existing
    base = seed_busybox(registry_host)
    source = SBOM_SCANNER_DIR
    if not (source / "Dockerfile").is_file():
        raise ToolMissing(f"{source}: the SBOM scanner's Dockerfile is missing from the installed package")
    with tempfile.TemporaryDirectory(prefix="archlift-seed-") as tmp:
        context = Path(tmp) / "context"
        shutil.copytree(source, context)
        dockerfile = (source / "Dockerfile").read_text()
        platforms = ("linux/amd64", "linux/arm64")
        return _build_and_push(context, dockerfile, ref, platforms, "the SBOM scanner", args={"BASE": str(base)})
