"""A hostile registry of our own, and a CONNECT proxy, on loopback (free ports).

``HostileServer`` reads HTTP/1.1 requests (keep-alive) and lets each test say, per
path prefix, what to answer: a well-formed reply (``Request.reply``) or any raw
bytes (``Request.send``): wrong lengths, endless or dripping bodies, malformed
framing, redirects, challenges. It can speak TLS with a certificate for any names.

``ConnectProxy`` is an HTTP proxy: ``CONNECT host:port`` tunnels (https) and
absolute-form requests (plain http), to names it resolves itself (``hosts``:
``"registry.test:443" -> "127.0.0.1:PORT"``), as a corporate proxy resolves
names the client cannot. It records every tunnel and forwarded request.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from support.registry import make_tls_files

CLOSE = object()  # a handler's answer: close the connection afterwards


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    conn: socket.socket
    server: HostileServer

    def send(self, data: bytes) -> None:
        """Raw bytes to the client."""
        self.conn.sendall(data)
        self.server.sent += len(data)

    def reply(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> None:
        head = f"HTTP/1.1 {status} X\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        self.send(head.encode("latin-1") + (b"" if self.method == "HEAD" else body))

    def json(self, status: int, doc: Any, headers: Mapping[str, str] | None = None) -> None:
        self.reply(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})


Handler = Callable[[Request], object]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]

    @property
    def authorization(self) -> str:
        return self.headers.get("authorization", "")


class HostileServer:
    """Answers each request with the handler of the longest matching path prefix in ``routes``
    (``GET /v2/`` answers 200 unless a test routes it; anything else unrouted: 404)."""

    def __init__(self, *, tls: ssl.SSLContext | None = None) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[Seen] = []  # every request, in order
        self.connections = 0
        self.sent = 0  # bytes written to clients
        self._tls = tls
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.host = f"127.0.0.1:{self.port}"
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        accept_forever(self._sock, self._serve, self._count)

    def _count(self) -> None:
        with self._lock:
            self.connections += 1

    @property
    def url(self) -> str:
        return f"{'https' if self._tls else 'http'}://{self.host}"

    def api(self) -> list[Seen]:
        """The requests but the client's first ``GET /v2/`` probes."""
        return [s for s in self.seen if (s.method, s.path) != ("GET", "/v2/")]

    def close(self) -> None:
        self._sock.close()
        with self._lock:
            conns = list(self._open)
        for c in conns:
            with contextlib.suppress(OSError):
                c.close()

    def __enter__(self) -> HostileServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self, raw: socket.socket) -> None:
        conn = raw
        with self._lock:
            self._open.add(raw)
        try:
            if self._tls is not None:
                conn = self._tls.wrap_socket(raw, server_side=True)
            rfile = conn.makefile("rb")
            while True:
                line = rfile.readline(65537)
                if not line:
                    return
                method, target, _ = line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (h := rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                    name, _, value = h.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = rfile.read(int(headers.get("content-length") or 0))
                self.seen.append(Seen(method, target, headers))
                req = Request(method, target, headers, body, conn, self)
                handler = next(
                    (self.routes[p] for p in sorted(self.routes, key=len, reverse=True) if target.startswith(p)), None
                )
                if handler is None:
                    if (method, target) == ("GET", "/v2/"):
                        req.json(200, {})
                    else:
                        req.json(404, {"errors": [{"code": "NOT_FOUND", "message": "nothing here"}]})
                    continue
                if handler(req) is CLOSE:
                    return
        except (OSError, ValueError, ssl.SSLError):
            return
        finally:
            with self._lock:
                self._open.discard(raw)
            with contextlib.suppress(OSError):
                conn.close()


def accept_forever(
    sock: socket.socket, serve: Callable[[socket.socket], None], accepted: Callable[[], None] = lambda: None
) -> None:
    """Serve each connection ``sock`` accepts in a thread of its own, until ``sock`` is closed."""

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            accepted()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def sequence(*steps: Handler) -> Handler:
    """Answer the n-th request with the n-th step (the last one repeats)."""
    calls = [0]

    def handle(req: Request) -> object:
        i = min(calls[0], len(steps) - 1)
        calls[0] += 1
        return steps[i](req)

    return handle


def tls_context(directory: Path, hosts: tuple[str, ...]) -> tuple[ssl.SSLContext, Path]:
    """A server context with a certificate for ``hosts`` from a CA of its own; and the CA's file."""
    ca, cert, key = make_tls_files(directory, hosts)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx, ca


def drip(req: Request, data: bytes, every: float, stop: threading.Event | None = None) -> object:
    """Send ``data`` one byte at a time, ``every`` seconds apart (until the client goes away)."""
    for i in range(len(data)):
        if stop is not None and stop.is_set():
            break
        req.send(data[i : i + 1])
        time.sleep(every)
    return CLOSE


@dataclass
class Tunnel:
    target: str  # host:port asked for
    headers: dict[str, str] = field(default_factory=dict)


class ConnectProxy:
    """An HTTP proxy on loopback that resolves ``hosts`` itself (see the module's docstring)."""

    def __init__(self, hosts: Mapping[str, str]) -> None:
        self.hosts = dict(hosts)
        self.tunnels: list[Tunnel] = []  # CONNECT requests
        self.forwarded: list[Tunnel] = []  # plain-http requests, by absolute URL
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        accept_forever(self._sock, self._serve)

    def close(self) -> None:
        self._sock.close()

    def _serve(self, conn: socket.socket) -> None:
        try:
            rfile = conn.makefile("rb")
            line = rfile.readline(65537).decode("latin-1")
            method, target, _ = line.split(" ", 2)
            headers: dict[str, str] = {}
            raw_headers: list[bytes] = []
            while (h := rfile.readline(65537)) not in (b"\r\n", b"\n", b""):
                raw_headers.append(h)
                name, _, value = h.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if method == "CONNECT":
                self.tunnels.append(Tunnel(target, headers))
                upstream = self._connect(target)
                if upstream is None:
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    return
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                _pipe(conn, upstream, rfile)
                return
            # absolute form: GET http://host:port/path HTTP/1.1 (one request, then the connection closes)
            self.forwarded.append(Tunnel(target, headers))
            rest = target.split("://", 1)[1]
            netloc, _, path = rest.partition("/")
            upstream = self._connect(netloc if ":" in netloc else netloc + ":80")
            if upstream is None:
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                body = rfile.read(int(headers.get("content-length") or 0))
                kept = [h for h in raw_headers if not h.lower().startswith((b"connection:", b"proxy-"))]
                upstream.sendall(
                    f"{method} /{path} HTTP/1.1\r\n".encode() + b"".join(kept) + b"Connection: close\r\n\r\n" + body
                )
                while data := upstream.recv(65536):
                    conn.sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def _connect(self, target: str) -> socket.socket | None:
        where = self.hosts.get(target)
        if where is None:
            return None
        host, port = where.rsplit(":", 1)
        try:
            return socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            return None


def _pipe(client: socket.socket, upstream: socket.socket, rfile: Any) -> None:
    """Bytes both ways until either side closes (``rfile``: the client's side, with what it buffered)."""

    def up() -> None:
        try:
            while data := rfile.read1(65536):
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream.shutdown(socket.SHUT_WR)

    t = threading.Thread(target=up, daemon=True)
    t.start()
    try:
        while data := upstream.recv(65536):
            client.sendall(data)
    except OSError:
        pass
    finally:
        t.join(timeout=5)
        upstream.close()
