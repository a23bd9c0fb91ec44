"""The HTTP/1.1 transport against a raw socket server on loopback that answers
with scripted bytes: body framings (length, chunked, until close), interim
answers, keep-alive reuse and stale connections, malformed answers, and
requests that must not be sent."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from archlift.oci.transport import Broken, ConnectFailed, Transport, Unsendable

Script = Callable[[socket.socket, bytes], bool]  # (connection, request head) -> keep the connection open


class RawServer:
    """Accepts connections; for each request head read, ``answer`` writes raw bytes."""

    def __init__(self, answer: Script) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as rfile:
            while True:
                head = b""
                while not head.endswith(b"\r\n\r\n"):
                    line = rfile.readline()
                    if not line:
                        return
                    head += line
                length = next(
                    (int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")), 0
                )
                self.requests.append(head + rfile.read(length))
                if not self.answer(conn, head):
                    return

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def transport() -> Iterator[Transport]:
    t = Transport(timeout=5, connect_timeout=2)
    yield t
    t.close()


def serve(*answers: bytes, keep: bool = True) -> RawServer:
    """Answer the n-th request with the n-th bytes (the last repeats)."""
    count = [0]

    def answer(conn: socket.socket, head: bytes) -> bool:
        conn.sendall(answers[min(count[0], len(answers) - 1)])
        count[0] += 1
        return keep

    return RawServer(answer)


def test_content_length_body_and_keep_alive(transport: Transport) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nDocker-Content-Digest: d\r\n\r\nhello")
    for _ in range(3):
        resp = transport.send("GET", f"{server.url}/v2/", {"Accept": "x"})
        assert (resp.status, resp.data, resp.headers.get("docker-content-digest")) == (200, b"hello", "d")
    assert server.connections == 1  # one connection, kept alive
    assert server.requests[0].startswith(b"GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1:")
    server.close()


def test_chunked_body_with_extensions_and_trailers(transport: Transport) -> None:
    body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nT: 1\r\n\r\n"
    server = serve(body)
    assert transport.send("GET", f"{server.url}/a", {}).data == b"hello world"
    chunks = [bytes(c) for c in transport.send("GET", f"{server.url}/a", {}).chunks(4)]
    assert b"".join(chunks) == b"hello world" and max(map(len, chunks)) <= 4
    assert server.connections == 1
    server.close()


def test_body_until_close_and_http_1_0(transport: Transport) -> None:
    server = serve(b"HTTP/1.0 200 OK\r\n\r\nall of it", keep=False)
    assert transport.send("GET", f"{server.url}/a", {}).data == b"all of it"
    assert transport.send("GET", f"{server.url}/a", {}).data == b"all of it"
    assert server.connections == 2  # the body ended with the connection: not reused
    server.close()


def test_interim_answer_head_and_no_content(transport: Transport) -> None:
    server = serve(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",  # a HEAD answer: no body follows
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    assert transport.send("PUT", f"{server.url}/a", {}, b"data").data == b"ok"
    head = transport.send("HEAD", f"{server.url}/a", {})
    assert head.status == 200 and head.headers.get("Content-Length") == "1234" and head.data == b""
    assert transport.send("DELETE", f"{server.url}/a", {}).status == 204
    assert server.connections == 1
    assert server.requests[0].endswith(b"Content-Length: 4\r\n\r\ndata")
    server.close()


def test_streamed_body_is_sent_as_given(transport: Transport) -> None:
    server = serve(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    chunks = [b"ab", memoryview(b"cde"), bytearray(b"f")]
    assert transport.send("PUT", f"{server.url}/u", {"Content-Length": "6"}, iter(chunks)).status == 201
    assert server.requests[0].endswith(b"\r\n\r\nabcdef")
    server.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",  # not HTTP
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # then the server closes
        b"",  # closed without a word
    ],
)
def test_malformed_or_cut_answers_are_broken(transport: Transport, answer: bytes) -> None:
    server = serve(answer, keep=False)
    with pytest.raises(Broken):
        transport.send("GET", f"{server.url}/a", {}).data  # noqa: B018
    server.close()


def test_short_stream_ends_early_and_drops_the_connection(transport: Transport) -> None:
    server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", keep=False)
    resp = transport.send("GET", f"{server.url}/a", {})
    assert b"".join(bytes(c) for c in resp.chunks()) == b"short"  # the caller counts 5 of 10 and retries
    server.close()


def test_stale_kept_connection_is_replaced(transport: Transport) -> None:
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    server = serve(ok, keep=False)  # answers with keep-alive, then closes the connection anyway
    assert transport.send("GET", f"{server.url}/a", {}).data == b"ok"
    time.sleep(0.1)  # the close reaches us while the connection is idle in the pool
    assert transport.send("GET", f"{server.url}/a", {}).data == b"ok"
    assert server.connections == 2
    server.close()


def test_requests_that_must_not_be_sent(transport: Transport) -> None:
    with pytest.raises(Unsendable):
        transport.send("GET", "http://127.0.0.1:9/a b", {})
    with pytest.raises(Unsendable):
        transport.send("GET", "http://127.0.0.1:9/a", {"X": "1\r\nInjected: yes"})


def test_nothing_listening(transport: Transport) -> None:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ConnectFailed, match="refused"):
        transport.send("GET", f"http://127.0.0.1:{port}/v2/", {})
    with pytest.raises(ConnectFailed, match="no such host"):
        transport.send("GET", "http://no-such-host.invalid/v2/", {})
