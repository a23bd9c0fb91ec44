"""Real registries for the tests: archlift's ``LocalRegistry`` (the distribution server on loopback)
with what only tests need: TLS with a CA of its own (made with the openssl CLI), htpasswd basic
auth, raw requests through archlift's own HTTP layer, and the access log read back (every request
the server answered), to count what a tool sent."""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from archlift import localenv
from archlift.errors import RegistryError
from archlift.oci.http import TLS, Response, Transport
from archlift.proc import run
from archlift.refs import Digest, ImageRef

MANIFEST_ACCEPT = ", ".join(
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


@dataclass(frozen=True)
class AccessLogEntry:
    """One request as the registry's access log records it."""

    method: str
    path: str
    status: int
    user: str  # "-" when no credentials were sent


class LocalRegistry(localenv.LocalRegistry):
    """``archlift.localenv.LocalRegistry`` with TLS (``tls=True``: its CA is ``ca_file``), basic auth
    (``auth=True``: ``username``/``password``), raw requests and the access log."""

    def __init__(
        self,
        *,
        tls: bool = False,
        auth: bool = False,
        username: str = "archlift",
        password: str | None = None,
        tls_hosts: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.tls_on = tls
        self.tls_hosts = tuple(tls_hosts)  # more names for its certificate (a test that reaches it through a proxy)
        self.auth = auth
        self.username = username if auth else None
        self.password = (password or secrets.token_urlsafe(12)) if auth else None
        self.ca_file: Path | None = None
        self._transport: Transport | None = None

    @property
    def scheme(self) -> str:  # type: ignore[override]
        return "https" if self.tls_on else "http"

    def server_config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.tls_on:
            self.ca_file, cert, key = make_tls_files(self.workdir / "tls", ("127.0.0.1", "localhost", *self.tls_hosts))
            extra["http"] = {"tls": {"certificate": str(cert), "key": str(key)}}
        if self.auth:
            assert self.username is not None and self.password is not None
            line = run(
                ["htpasswd", "-Bbn", self.username, self.password], error=RegistryError, context="htpasswd"
            ).stdout
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text(line.strip() + "\n")
            extra["auth"] = {"htpasswd": {"realm": "archlift-local", "path": str(htpasswd)}}
        return extra

    def tls(self) -> TLS | None:
        return TLS(ca_files=(str(self.ca_file),)) if self.ca_file else None

    def stop(self, *, remove: bool = True) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        super().stop(remove=remove)

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
        tls = self.tls() if url.startswith("https://") else None
        return self._transport.send(method, url, all_headers, body, tls=tls).load(256 << 20)

    def manifest_digest(self, repository: str, reference: str) -> Digest | None:
        """The digest ``repository:reference`` resolves to here, or None when it does not exist."""
        resp = self.request("HEAD", f"/v2/{repository}/manifests/{reference}", headers={"Accept": MANIFEST_ACCEPT})
        what = f"{self.host}/{repository}:{reference}"
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise RegistryError(f"HEAD {what}: the registry answered {resp.status}")
        header = resp.headers.get("Docker-Content-Digest", "")
        try:
            return Digest.parse(header)
        except ValueError:
            raise RegistryError(f"HEAD {what}: no usable Docker-Content-Digest header ({header!r})") from None

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
        return f"LocalRegistry({self.url}, tls={self.tls_on}, auth={self.auth}, running={self.running})"


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


def seed_image(
    registry_host: str,
    repository: str,
    tag: str,
    dockerfile: str,
    platforms: Sequence[str] = localenv.ARCHES_PLATFORMS,
    *,
    output: str = "",
) -> ImageRef:
    """An image built from ``dockerfile`` over a context that holds ``amd64/bin/busybox`` and
    ``arm64/bin/busybox``, pushed to a plain-HTTP loopback registry: images right or wrong on
    purpose (an arm64 entry that holds the amd64 binary). ``output``: more options of buildx's OCI
    exporter (``compression=zstd,force-compression=true``). Idempotent; ``host/repository:tag@digest``."""
    return localenv.seed(registry_host, repository, tag, dockerfile, platforms, exporter=output)
