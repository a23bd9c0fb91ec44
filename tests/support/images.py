"""Helpers and fixtures for the registry, mirror and airgap tests.

Images are pushed with archlift's own client: configs and layers of random
bytes (or shared ones), two platforms, optionally a BuildKit-style attestation
manifest, a cosign-style ``.sig`` tag and an OCI referrer (``subject``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import socket
import socketserver
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.refs import Digest, ImageRef
from support.registry import LocalRegistry

LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG = "application/vnd.oci.image.config.v1+json"
INTOTO = "application/vnd.in-toto+json"


def blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


@dataclass
class PushedImage:
    ref: ImageRef  # by tag
    index: Digest
    platforms: dict[str, Digest]
    blobs: set[Digest] = field(default_factory=set)  # configs + layers (+ attestation blobs)
    manifests: set[Digest] = field(default_factory=set)  # platform + attestation + referrer manifests
    attestation: Digest | None = None
    signature_tag: str = ""
    referrer: Digest | None = None

    @property
    def pinned(self) -> ImageRef:
        return self.ref.with_digest(self.index)


def _desc(media_type: str, data: bytes) -> dict[str, object]:
    return {"mediaType": media_type, "digest": str(Digest.of(data)), "size": len(data)}


def _push_manifest(
    client: RegistryClient,
    img: PushedImage,
    config: tuple[str, bytes],
    layers: list[tuple[str, bytes, dict[str, str]]],
    tag: str | None = None,
    **extra: object,
) -> tuple[bytes, Digest]:
    """Push the blobs and an image manifest over them (by digest, or at ``tag``)."""
    for data in [config[1]] + [layer[1] for layer in layers]:
        img.blobs.add(client.put_blob(img.ref, data))
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _desc(*config),
        "layers": [{**_desc(mt, data), **({"annotations": ann} if ann else {})} for mt, data, ann in layers],
        **extra,
    }
    raw = json.dumps(doc).encode()
    target = img.ref.with_tag(tag) if tag else img.ref.with_digest(Digest.of(raw))
    digest = client.put_manifest(target, raw, OCI_MANIFEST)
    img.manifests.add(digest)
    return raw, digest


def push_image(
    client: RegistryClient,
    ref: ImageRef,
    *,
    seed: int,
    layer_size: int = 64 * 1024,
    shared: bytes | None = None,
    attestation: bool = True,
    signature: bool = False,
    referrer: bool = False,
) -> PushedImage:
    """A two-platform OCI index at ``ref`` (a tag)."""
    img = PushedImage(ref, Digest("sha256:" + "0" * 64), {})
    entries: list[dict[str, object]] = []
    for n, arch in enumerate(("amd64", "arm64")):
        layers = ([shared] if shared is not None else []) + [blob(layer_size, seed * 10 + n)]
        config = {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "seed": seed}
        raw, digest = _push_manifest(
            client, img, (CONFIG, json.dumps(config).encode()), [(LAYER, d, {}) for d in layers]
        )
        img.platforms[f"linux/{arch}"] = digest
        entries.append({**_desc(OCI_MANIFEST, raw), "platform": {"os": "linux", "architecture": arch}})
    if attestation:
        statement = json.dumps({"_type": "https://in-toto.io/Statement/v0.1", "seed": seed}).encode()
        raw, img.attestation = _push_manifest(
            client, img, (CONFIG, b"{}"), [(INTOTO, statement, {"in-toto.io/predicate-type": "x"})]
        )
        entries.append(
            {
                **_desc(OCI_MANIFEST, raw),
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": str(img.platforms["linux/amd64"]),
                },
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    img.index = client.put_manifest(ref, index, OCI_INDEX)
    if signature:
        payload = json.dumps({"critical": {"image": {"docker-manifest-digest": str(img.index)}}}).encode()
        img.signature_tag = f"sha256-{img.index.hex}.sig"
        sig_layer = (
            "application/vnd.dev.cosign.simplesigning.v1+json",
            payload,
            {"dev.cosignproject.cosign/signature": f"sig-{seed}"},
        )
        _push_manifest(client, img, (CONFIG, b"{}"), [sig_layer], tag=img.signature_tag)
    if referrer:
        sbom = json.dumps({"spdxVersion": "SPDX-2.3", "seed": seed}).encode()
        art, img.referrer = _push_manifest(
            client,
            img,
            ("application/vnd.oci.empty.v1+json", b"{}"),
            [("application/spdx+json", sbom, {})],
            artifactType="application/spdx+json",
            subject=_desc(OCI_INDEX, index),
        )
        # the referrers tag schema (distribution 2.8 has no referrers API)
        fallback = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [{**_desc(OCI_MANIFEST, art), "artifactType": "application/spdx+json"}],
            }
        ).encode()
        client.put_manifest(ref.with_tag(f"sha256-{img.index.hex}"), fallback, OCI_INDEX)
    return img


@pytest.fixture(scope="module")
def plain_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def source() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def second_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture(scope="module")
def tls_auth_registry() -> Iterator[LocalRegistry]:
    with LocalRegistry(tls=True, auth=True) as reg:
        yield reg


@pytest.fixture
def no_docker_config(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """No credentials from the environment or a docker config on this machine."""
    for name in list(os.environ):
        if name.startswith("ARCHLIFT_AUTH_") or name.startswith("ARCHLIFT_REGISTRY_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))


def release_lock(images: dict[str, PushedImage]) -> ReleaseLock:
    return ReleaseLock(
        components={
            name: ComponentRelease(
                name=name,
                kind="built",
                repository=img.ref.name,
                index_digest=img.index,
                platforms=dict(img.platforms),
                tags=(img.ref.tag or "v1", "latest"),
            )
            for name, img in images.items()
        }
    )


SHARED = blob(300 * 1024, seed=4242)


def make_release(
    client: RegistryClient, reg: LocalRegistry, n: int = 3, size: int = 64 * 1024
) -> dict[str, PushedImage]:
    out = {}
    for i in range(n):
        out[f"c{i}"] = push_image(
            client,
            reg.ref(f"rel/c{i}", "v1"),
            seed=100 + i,
            layer_size=size,
            shared=SHARED,
            signature=(i == 0),
            referrer=(i == 0),
        )
    return out


def assert_same(
    client: RegistryClient, images: dict[str, PushedImage], dst: LocalRegistry | str, prefix: str = ""
) -> None:
    """Every image, tag, manifest, blob, signature tag and referrer of ``images`` is on ``dst``, same digests."""
    host = dst if isinstance(dst, str) else dst.host
    for img in images.values():
        repo = ImageRef(host, (prefix + "/" if prefix else "") + img.ref.repository)
        for tag in (img.ref.tag or "v1", "latest"):  # as release_lock tags it
            head = client.head_manifest(repo.with_tag(tag))
            assert head is not None and head.digest == img.index, (repo, tag)
        assert client.get_manifest(repo.with_digest(img.index)).digest == img.index
        for d in img.manifests:
            assert client.head_manifest(repo.with_digest(d)) is not None, d
        for d in img.blobs:
            assert client.blob_exists(repo, d)
        if img.signature_tag:
            sig = client.head_manifest(repo.with_tag(img.signature_tag))
            src_sig = client.head_manifest(img.ref.with_tag(img.signature_tag))
            assert sig is not None and src_sig is not None and sig.digest == src_sig.digest
        if img.referrer:
            assert [d.digest for d in client.referrers(repo, img.index)] == [img.referrer]


def rewrite_bundle(
    src: Path, dst: Path, change: Callable[[tarfile.TarInfo, bytes], list[tuple[tarfile.TarInfo, bytes]]]
) -> None:
    """Copy a tarball member by member, letting ``change`` replace or add members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info in tin:
            data = tin.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            for new_info, new_data in change(info, data):
                tout.addfile(new_info, io.BytesIO(new_data) if new_info.isfile() else None)


def edited_bundle(src: Path, dst: Path, edits: dict[str, Callable[[bytes], bytes | None]]) -> None:
    """``src`` with members changed (None drops one), and SHA256"SHA256SUMS" made to match: a bundle
    that is consistent, as a hostile one would be, but that does not resolve."""
    members: list[tuple[tarfile.TarInfo, bytes]] = []
    with tarfile.open(src) as tin:
        for info in tin:
            data = tin.extractfile(info).read() if info.isfile() else b""  # type: ignore[union-attr]
            new = edits[info.name](data) if info.name in edits else data
            if new is not None:
                info.size = len(new)
                members.append((info, new))
    sums = "".join(
        f"{hashlib.sha256(data).hexdigest()}  {info.name}\n"
        for info, data in members
        if not info.name.startswith("blobs/") and info.name != "SHA256SUMS"
    ).encode()
    with tarfile.open(dst, "w", format=tarfile.PAX_FORMAT) as tout:
        for info, data in members:
            if info.name == "SHA256SUMS":
                info.size, data = len(sums), sums
            tout.addfile(info, io.BytesIO(data))


# ---------------------------------------------------------------- fault proxy
Rule = Callable[[str, str], "tuple[int, bytes] | None"]  # (method, path with query) -> (status, JSON body)


class FaultProxy:
    """A threaded TCP proxy on loopback that, for every ``every``-th connection
    or request (0: none), resets it, delays it, or answers 500 / 429 (round robin);
    and answers every request that ``rule`` has an answer for itself (``refused``
    counts them), as a registry that refuses something would.

    Works at the HTTP/1.1 request level on plain HTTP: it reads one request
    (headers + Content-Length body), decides, forwards it on a fresh upstream
    connection, and streams the answer back (``Connection: close``).
    """

    def __init__(self, upstream: str, every: int = 3, delay: float = 0.3, rule: Rule | None = None) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        self.every = every
        self.delay = delay
        self.rule = rule
        self.refused: list[tuple[str, str]] = []
        self.count = 0
        self.faults: dict[str, int] = {"reset": 0, "delay": 0, "500": 0, "429": 0}
        self._lock = threading.Lock()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _read_request(self, conn: socket.socket) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk or (not data and chunk[:1] == b"\x16"):  # EOF, or a TLS hello: plain HTTP only
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        # the body is streamed through below; return what we have of it
        return head + b"\r\n\r\n" + body if length >= 0 else None

    def _handle(self, conn: socket.socket) -> None:
        while True:
            request = self._read_request(conn)
            if request is None:
                return
            with self._lock:
                self.count += 1
                n = self.count
            if self.rule is not None and self._answer(conn, request):
                return
            fault = ""
            if self.every and n % self.every == 0:
                fault = ("reset", "500", "delay", "429")[(n // self.every) % 4]
                with self._lock:
                    self.faults[fault] += 1
            if fault == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                return
            if fault in ("500", "429"):
                extra = b"Retry-After: 0\r\n" if fault == "429" else b""
                conn.sendall(
                    b"HTTP/1.1 "
                    + fault.encode()
                    + b" Injected\r\nContent-Length: 0\r\n"
                    + extra
                    + b"Connection: close\r\n\r\n"
                )
                conn.close()
                return
            if fault == "delay":
                time.sleep(self.delay)
            self._forward(conn, request)
            return

    def _answer(self, conn: socket.socket, request: bytes) -> bool:
        """Answer ``request`` as ``rule`` says, after reading its whole body; False to forward it."""
        assert self.rule is not None
        head, _, body = request.partition(b"\r\n\r\n")
        method, path = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
        answer = self.rule(method, path)
        if answer is None:
            return False
        with self._lock:
            self.refused.append((method, path))
        length = next(
            (int(v) for k, _, v in (line.partition(b":") for line in head.split(b"\r\n")[1:])
             if k.strip().lower() == b"content-length"),
            0,
        )  # fmt: skip
        left = length - len(body)
        while left > 0:
            chunk = conn.recv(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        status, data = answer
        conn.sendall(
            f"HTTP/1.1 {status} Refused\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + data
        )
        conn.close()
        return True

    def _forward(self, conn: socket.socket, request: bytes) -> None:
        head, _, body = request.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            low = name.strip().lower()
            if low == b"content-length":
                length = int(value.strip())
            if low in (b"connection", b"host"):
                continue
            kept.append(line)
        kept += [f"Host: {self.host}".encode(), b"Connection: close"]
        up = socket.create_connection((self.upstream_host, self.upstream_port))
        try:
            up.sendall(b"\r\n".join(kept) + b"\r\n\r\n" + body)
            remaining = length - len(body)
            while remaining > 0:
                chunk = conn.recv(min(remaining, 1 << 20))
                if not chunk:
                    return
                up.sendall(chunk)
                remaining -= len(chunk)
            while True:
                chunk = up.recv(1 << 20)
                if not chunk:
                    break
                conn.sendall(chunk)
        except OSError:
            pass
        finally:
            up.close()
            conn.close()
