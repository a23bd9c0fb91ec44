"""The HTTP layer (``archlift.oci.http``, on urllib3) and the registry client's reads against a
hostile server of our own on loopback: keep-alive and streaming, the User-Agent, malformed
framing, bytes left over after an answer, oversized and endless bodies, slow answers and the
deadline, bounded retries. Every failure must be one clear error that names the host."""

from __future__ import annotations

import ast
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.hostile import CLOSE, HostileServer, Request, drip, sequence

import archlift
from archlift.oci import Descriptor, DigestMismatch, InvalidAnswer, RegistryClient, RequestFailed
from archlift.oci.http import (
    MAX_INTERIM,
    USER_AGENT,
    Broken,
    Malformed,
    TimedOut,
    TooLarge,
    Transport,
    TransportError,
)
from archlift.refs import Digest, ImageRef

MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(b"{}")), "size": 2},
        "layers": [],
    }
).encode()


@pytest.fixture
def server() -> Iterator[HostileServer]:
    with HostileServer() as s:
        yield s


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(timeout=5)
    yield t
    t.close()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryClient]:
    for name in ("ARCHLIFT_REGISTRY_HOST", "ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    c = RegistryClient(docker_config=str(tmp_path), backoff=0.01, retries=2, timeout=2)
    yield c
    c.close()


def raw(data: bytes, close: bool = False) -> object:
    def handle(req: Request) -> object:
        req.send(data)
        return CLOSE if close else None

    return handle


# ---------------------------------------------------------------------- one stack, urllib3
def test_one_http_stack_in_the_product() -> None:
    """Only archlift.oci.http talks HTTP (publish, localenv and every other caller go through it;
    localenv's socket only asks the kernel for a free port); the hand-written HTTP/1.1 client is gone,
    and so is oras-py."""
    src = Path(archlift.__file__).parent
    assert not (src / "oci" / "transport.py").exists()
    allowed = {src / "oci" / "http.py"}
    for path in src.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                level = getattr(node, "level", 0)
                if (
                    level == 0
                    and name.split(".")[0] in ("urllib3", "http", "requests", "httpx", "socket", "oras")
                    and (path not in allowed)
                ):
                    assert path.name == "localenv.py" and name == "socket", f"{path}: imports {name}"


def test_keep_alive_user_agent_and_streamed_bodies(server: HostileServer, transport: Transport) -> None:
    """Requests to one host share a kept-alive connection; every request says who it is; an upload
    streams from an iterator and a download comes in chunks before the server has sent it all."""
    release = threading.Event()

    def download(req: Request) -> None:
        req.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        release.wait(10)
        req.send(b"-half")

    got: list[bytes] = []
    server.routes["/up"] = lambda req: (got.append(req.body), req.reply(201))[-1]
    server.routes["/down"] = download
    for _ in range(3):
        assert transport.send("GET", f"{server.url}/v2/", {}).load().status == 200
    body = iter([b"stream", b"ed ", b"upload"])
    assert transport.send("PUT", f"{server.url}/up", {"Content-Length": "15"}, body).load().status == 201
    chunks = transport.send("GET", f"{server.url}/down", {}).chunks()
    assert next(chunks) == b"first"  # while the server still holds the rest
    release.set()
    assert b"".join(chunks) == b"-half"
    assert got == [b"streamed upload"]
    assert server.connections == 1
    assert {s.headers["user-agent"] for s in server.seen} == {f"archlift/{archlift.__version__}"} == {USER_AGENT}


# ---------------------------------------------------------------------- framing
@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5_0\r\n\r\nhello", "malformed Content-Length"),
        ("HTTP/1.1 200 OK\r\nContent-Length: \u0665\r\n\r\nhello".encode(), "malformed Content-Length"),  # Arabic 5
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\nhello", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello", "two different Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", "both"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding other than chunked"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5_0\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "malformed chunk size"),
        (b"HTTP/1.1 100 Continue\r\n\r\n" * (MAX_INTERIM + 1) + b"HTTP/1.1 200 OK\r\n\r\n", "interim (1xx)"),
        (b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n", "interim answer (HTTP 103)"),
        (b"HTTP/1.1 2_00 OK\r\nContent-Length: 0\r\n\r\n", "malformed status line"),
        (b"SSH-2.0-OpenSSH_9.2\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n", "too many header lines"),
        (b"HTTP/1.1 200 OK\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "malformed answer"),
    ],
)
def test_malformed_framing_is_a_clean_error_naming_the_host(
    server: HostileServer, transport: Transport, client: RegistryClient, answer: bytes, why: str
) -> None:
    server.routes["/v2/a/"] = raw(answer, close=True)
    with pytest.raises(Malformed, match=re.escape(why)) as e:
        transport.send("GET", f"{server.url}/v2/a/manifests/v1", {}).read()
    assert server.host in str(e.value)
    # through the client: one paragraph, named image and host, exit status 2 (hostile input), no retry
    with pytest.raises(InvalidAnswer) as c:
        client.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    text = c.value.render()
    assert f'"{server.host}/a:v1"' in text and why in text and "Traceback" not in text
    assert c.value.exit_code == 2 and not c.value.temporary


def test_a_long_run_of_interim_answers_is_fine_up_to_the_limit(server: HostileServer, transport: Transport) -> None:
    server.routes["/v2/a"] = raw(
        b"HTTP/1.1 100 Continue\r\n\r\n" * MAX_INTERIM + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    )
    assert transport.send("GET", f"{server.url}/v2/a", {}).read() == b"ok"


@pytest.mark.parametrize(("extra", "delay"), [(1, 0.0), (200_000, 0.0), (1, 0.3)])
def test_bytes_left_over_after_an_answer_never_become_the_next_answer(
    server: HostileServer, transport: Transport, extra: int, delay: float
) -> None:
    """An answer followed by more bytes than it announced (here a forged second answer, padded):
    the next request on the pool must get the server's real answer. Checked on urllib3's own pool:
    a leftover that came with the answer goes with the buffer http.client read it into; one still
    in the socket (a long one, or one that came later) makes the pooled connection readable, and
    urllib3 opens a new connection instead of reading it."""
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED" + b"x" * (extra - 1)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"

    def first(req: Request) -> None:
        if delay:
            req.send(answer)
            threading.Timer(delay, lambda: req.send(forged)).start()
        else:
            req.send(answer + forged)  # one write: it arrives with the answer

    server.routes["/v2/a"] = sequence(first, lambda req: req.reply(200, b"real"))
    assert transport.send("GET", f"{server.url}/v2/a", {}).read() == b"hello"
    if delay:
        threading.Event().wait(delay + 0.3)  # the client's next request comes after the leftover
    assert transport.send("GET", f"{server.url}/v2/a", {}).read() == b"real"
    assert server.connections == (1 if extra == 1 and not delay else 2)


def test_a_body_not_read_to_its_end_closes_its_connection(server: HostileServer, transport: Transport) -> None:
    big = b"y" * 300_000
    server.routes["/v2/big"] = lambda req: req.reply(200, big)
    server.routes["/v2/small"] = lambda req: req.reply(200, b"ok")
    transport.send("GET", f"{server.url}/v2/big", {}).release()  # unread: 300 kB is too much to drain
    assert transport.send("GET", f"{server.url}/v2/small", {}).read() == b"ok"
    assert server.connections == 2


# ---------------------------------------------------------------------- bounded bodies
def endless_chunked(req: Request) -> object:
    req.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n")
    req.send(b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b"10000\r\n" + b"[" * 0x10000 + b"\r\n"
    while True:
        req.send(piece)


def test_a_manifest_over_4_mib_is_refused_before_it_is_read(server: HostileServer, client: RegistryClient) -> None:
    def announced(req: Request) -> object:
        req.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n")
        req.send(f"Content-Length: {5 << 20}\r\n\r\n".encode())
        threading.Event().wait(5)  # and never sends it
        return CLOSE

    server.routes["/v2/a/manifests/"] = announced
    with pytest.raises(
        InvalidAnswer, match=r"announced a manifest of 5242880 bytes; archlift reads at most 4 MiB"
    ) as e:
        client.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert '"127.0.0.1' in str(e.value)


def test_an_endless_manifest_is_cut_at_4_mib(server: HostileServer, client: RegistryClient) -> None:
    server.routes["/v2/a/manifests/"] = endless_chunked
    with pytest.raises(InvalidAnswer, match=r"sent a manifest of more than 4 MiB"):
        client.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert server.sent < (4 << 20) + (8 << 20)  # what the socket buffers held besides: bounded, not endless


def test_error_bodies_are_read_up_to_a_small_bound(server: HostileServer, client: RegistryClient) -> None:
    def endless_error(req: Request) -> object:
        req.send(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n")  # no length: "until the connection closes"
        while True:
            req.send(b"E" * 65536)

    server.routes["/v2/a/manifests/"] = endless_error
    with pytest.raises(RequestFailed, match="HTTP 500") as e:
        client.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert len(e.value.message) < 500
    assert server.sent < 3 * (16 << 20)


def blob_route(data: bytes, *, declared: int | None, chunked: bool = False) -> object:
    def handle(req: Request) -> object:
        head = b"HTTP/1.1 200 OK\r\n"
        if chunked:
            req.send(head + b"Transfer-Encoding: chunked\r\n\r\n")
            for i in range(0, len(data), 4096):
                part = data[i : i + 4096]
                req.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            req.send(b"0\r\n\r\n")
            return None
        req.send(head + f"Content-Length: {declared}\r\n\r\n".encode() + data)
        return None

    return handle


def test_a_blob_stops_at_its_descriptor_size(server: HostileServer, client: RegistryClient, tmp_path: Path) -> None:
    """More bytes than the descriptor says: refused before reading when the length says so, and
    stopped at the size when it does not (chunked); export (the copy into a layout) writes no more
    than the size."""
    from archlift.oci.layout import LayoutStore
    from archlift.oci.store import RegistryStore

    good = b"z" * 100_000
    desc = Descriptor("application/octet-stream", Digest.of(good), len(good))
    repo = ImageRef.parse(f"{server.host}/a")
    server.routes["/v2/a/blobs/"] = blob_route(good + b"more", declared=len(good) + 4)
    with pytest.raises(DigestMismatch, match="has 100004 bytes for it, the manifest says 100000"):
        client.open_blob(repo, desc)
    server.routes["/v2/a/blobs/"] = blob_route(good + b"x" * 1_000_000, declared=None, chunked=True)
    with pytest.raises(DigestMismatch, match="sent more than 100000 bytes"):
        b"".join(client.open_blob(repo, desc).chunks())
    layout = LayoutStore(tmp_path / "layout")
    with pytest.raises(DigestMismatch, match="sent more than 100000 bytes"):
        layout.put_blob(repo, desc, RegistryStore(client).blob(repo, desc), origin=str(repo), attempts=1)
    written = [f for f in (tmp_path / "layout").rglob("*") if f.is_file() and f.name != "oci-layout"]
    assert all(f.stat().st_size <= len(good) for f in written)
    assert not (tmp_path / "layout" / "blobs" / "sha256" / desc.digest.hex).exists()
    with pytest.raises(ValueError, match="needs the blob's size"):
        client.open_blob(repo, desc.digest)
    server.routes["/v2/a/blobs/"] = blob_route(good, declared=None, chunked=True)
    assert client.get_blob(repo, desc) == good


# ---------------------------------------------------------------------- deadlines and retries
def test_headers_that_drip_meet_the_deadline(server: HostileServer, transport: Transport) -> None:
    stop = threading.Event()
    server.routes["/v2/a"] = lambda req: drip(req, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 1000, 0.05, stop)
    t = Transport(timeout=1)
    try:
        with pytest.raises(TimedOut, match=rf"{server.host}: no progress waiting for the answer within 1 s"):
            t.send("GET", f"{server.url}/v2/a", {})
    finally:
        stop.set()
        t.close()


def test_a_body_slower_than_the_minimum_rate_meets_the_deadline(server: HostileServer) -> None:
    stop = threading.Event()

    def slow(req: Request) -> object:
        req.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        return drip(req, b"b" * 100_000, 0.02, stop)  # 50 bytes/s: every read returns in time

    server.routes["/v2/a"] = slow
    t = Transport(timeout=1, min_rate=16 << 10)
    try:
        resp = t.send("GET", f"{server.url}/v2/a", {})
        with pytest.raises(TimedOut, match="the body came slower than 16 KiB/s over 1 s"):
            resp.read()
    finally:
        stop.set()
        t.close()


def test_a_silent_server_meets_the_deadline_and_retries_are_bounded_in_time(
    server: HostileServer, tmp_path: Path
) -> None:
    server.routes["/v2/a/"] = lambda req: (threading.Event().wait(30), CLOSE)[1]
    c = RegistryClient(docker_config=str(tmp_path), timeout=0.5, retries=1000, backoff=0.01, retry_time=1.5)
    with pytest.raises(RequestFailed, match=r"within 0.5 s \(--timeout\)") as e:
        c.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert e.value.temporary
    assert 1 < len(server.api()) < 10  # bounded by retry_time, not by the 1000 retries
    server.routes["/v2/a/"] = lambda req: req.reply(503)
    with pytest.raises(RequestFailed, match="HTTP 503"):
        c.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert len(server.api()) < 200


def test_connect_failures_are_clean(transport: Transport) -> None:
    import socket

    with socket.socket() as held:  # bound, not listening: the port is ours, and refuses connections
        held.bind(("127.0.0.1", 0))
        with pytest.raises(TransportError, match="refused"):
            transport.send("GET", f"http://127.0.0.1:{held.getsockname()[1]}/v2/", {})
    with pytest.raises(TransportError, match="no such host"):
        transport.send("GET", "http://no-such-host.invalid/v2/", {})


def test_requests_that_must_not_be_sent(transport: Transport) -> None:
    from archlift.oci.http import Unsendable

    with pytest.raises(Unsendable):
        transport.send("GET", "http://127.0.0.1:9/a", {"X": "1\r\nInjected: yes"})
    with pytest.raises(Unsendable):
        transport.send("GET", "ftp://127.0.0.1:9/a", {})


def test_a_reset_or_short_answer_is_broken_and_retried(server: HostileServer, client: RegistryClient) -> None:
    server.routes["/v2/a/manifests/"] = sequence(
        raw(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n{", close=True),
        raw(b"", close=True),
        lambda req: req.reply(200, MANIFEST, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}),
    )
    assert client.get_manifest(ImageRef.parse(f"{server.host}/a:v1")).raw == MANIFEST
    t = Transport(timeout=2)
    server.routes["/v2/b"] = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n{", close=True)
    with pytest.raises(Broken, match="closed before the end"):
        t.send("GET", f"{server.url}/v2/b", {}).read()
    with pytest.raises(TooLarge):
        server.routes["/v2/c"] = lambda req: req.reply(200, b"c" * 100)
        t.send("GET", f"{server.url}/v2/c", {}).read(10)
    t.close()


def test_a_head_answer_gives_the_length_of_what_it_is_about(server: HostileServer, client: RegistryClient) -> None:
    """A HEAD's Content-Length is the blob's (here 24 MiB), not a body to bound: no error, and the
    connection stays usable."""
    server.routes["/v2/a/blobs/"] = lambda req: req.send(b"HTTP/1.1 200 OK\r\nContent-Length: 25165824\r\n\r\n")
    repo = ImageRef.parse(f"{server.host}/a")
    assert client.blob_exists(repo, Digest.of(b"x")) and client.blob_exists(repo, Digest.of(b"y"))
    assert server.connections == 1


def test_the_deadline_holds_over_tls_too(tmp_path: Path) -> None:
    from support.hostile import tls_context

    from archlift.oci.http import TLS

    ctx, ca = tls_context(tmp_path / "tls", ("127.0.0.1",))
    stop = threading.Event()
    with HostileServer(tls=ctx) as s:
        s.routes["/v2/a"] = lambda req: drip(req, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"s" * 1000, 0.05, stop)
        t = Transport(timeout=1)
        try:
            with pytest.raises(TimedOut, match="no progress waiting for the answer within 1 s"):
                t.send("GET", f"{s.url}/v2/a", {}, tls=TLS(ca_files=(str(ca),)))
        finally:
            stop.set()
            t.close()
