"""HTTP/1.1 for the registry client: keep-alive connections in a small
thread-safe pool, one per host and TLS setting.

Why its own: the registry API needs a narrow slice of HTTP/1.1 (requests with
a known length, answers framed by Content-Length, chunked or the connection's
end, keep-alive), and a blob copy wants nothing but a socket to read into and
write from. urllib3 or http.client cost more to import (they pull in email,
and urllib3 importlib.metadata and zipfile) than a whole re-mirror of an
up-to-date target takes, and parse every answer's headers with the email
package. ``ssl`` is imported only for an HTTPS host.

What the client sees: ``Transport.send`` returns a ``Response`` (status,
headers, the body read whole, or read in chunks straight into two reused
buffers), and raises only ``TransportError``: ``ConnectFailed`` (nothing
listens, no such host), ``TLSFailed`` (a handshake that failed; ``verify``
says the certificate did not verify), ``Broken`` (a reset, a timeout, a
malformed answer: temporary) or ``Unsendable`` (a request that must not go
out, such as a header with a line break from a registry's answer). Retries,
redirects, auth and scheme choice are the client's business.
"""

from __future__ import annotations

import select
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, overload
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import ssl

CHUNK = 1 << 20
DRAIN_LIMIT = 1 << 16  # an unread rest up to this size is read to keep the connection; more closes it
MAX_LINE = 1 << 16  # a status or header line
MAX_HEADERS = 200
SMALL_BODY = 1 << 16  # sent in one write with the request head


class TransportError(Exception):
    """A request that got no HTTP answer."""


class ConnectFailed(TransportError):
    """No connection: refused, unreachable, no such host, or a connect timeout."""


class TLSFailed(TransportError):
    """The TLS handshake failed; ``verify``: the peer's certificate did not verify."""

    def __init__(self, message: str, *, verify: bool) -> None:
        super().__init__(message)
        self.verify = verify


class Broken(TransportError):
    """The connection broke or timed out mid-request, or the answer was not HTTP (temporary)."""


class Unsendable(TransportError):
    """A request that must not be sent (a line break or space where it would split the request)."""


@dataclass(frozen=True)
class TLS:
    """How to check a host's certificate (``insecure``: not at all, as docker's insecure registries)."""

    insecure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


_Key = tuple[str, str, TLS | None]  # scheme, host:port, TLS settings


class Headers:
    """Answer headers by name, case ignored (the first of repeated ones)."""

    def __init__(self) -> None:
        self._by_name: dict[str, str] = {}

    def add(self, name: str, value: str) -> None:
        self._by_name.setdefault(name.lower(), value)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        return self._by_name.get(name.lower(), default)


class Connection:
    """One socket to a host, kept open between requests."""

    def __init__(self, sock: socket.socket, netloc: str) -> None:
        self.sock = sock
        self.netloc = netloc
        self.rfile: IO[bytes] = sock.makefile("rb")

    def alive(self) -> bool:
        """Idle and not closed by the server (nothing to read on it)."""
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        self.rfile.close()
        self.sock.close()


class Response:
    """One answer. Read it (``data``, ``read``, ``chunks``) or ``release`` it; either way the
    connection goes back to the pool when the body was read to its end."""

    def __init__(self, conn: Connection, pool: Transport, key: _Key, method: str) -> None:
        self._conn: Connection | None = conn
        self._pool = pool
        self._key = key
        self._data: bytes | None = None
        version, self.status, self.headers = _read_head(conn.rfile)
        while 100 <= self.status < 200:  # an interim answer: the real one follows
            version, self.status, self.headers = _read_head(conn.rfile)
        connection = self.headers.get("connection", "").lower()
        self._close = "close" in connection or (version == "HTTP/1.0" and "keep-alive" not in connection)
        self._chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        self._left: int | None = 0  # bytes of the body (or of the current chunk) still to read
        if method != "HEAD" and self.status not in (204, 304):
            self._left = None if self._chunked else _content_length(self.headers)
        if self._left is None and not self._chunked:
            self._close = True  # the body ends when the server closes the connection
        self._done = self._left == 0

    @property
    def data(self) -> bytes:
        """The whole body (read once, then kept)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def read(self) -> bytes:
        """The rest of the body; then the connection is released."""
        if self._left is not None and not self._chunked:
            buf = memoryview(bytearray(self._left))
            n = 0
            while n < len(buf):
                got = self.readinto(buf[n:])
                if not got:
                    self.close()
                    raise Broken(f"the connection closed after {n} of {len(buf)} bytes of the answer")
                n += got
            data = bytes(buf)
        else:
            data = b"".join(bytes(c) for c in self.chunks(1 << 16))
        self.release()
        return data

    def readinto(self, buf: memoryview) -> int:
        """Read body bytes into ``buf``; 0 at the end of the body, or when the connection
        ended early (then fewer bytes came than announced). Raises ``Broken``."""
        if self._done or self._conn is None:
            return 0
        try:
            if self._chunked:
                return self._read_chunked(buf)
            want = len(buf) if self._left is None else min(len(buf), self._left)
            n = self._conn.rfile.readinto(buf[:want])  # type: ignore[attr-defined]
        except Broken:
            self.close()
            raise
        except (OSError, ValueError) as e:
            self.close()
            raise Broken(f"{e.__class__.__name__} reading the answer") from None
        if not n:
            self._done = True
            if self._left:  # ended early: this connection cannot be used again
                self._close = True
            return 0
        if self._left is not None:
            self._left -= n
            self._done = self._left == 0
        return int(n)

    def _read_chunked(self, buf: memoryview) -> int:
        assert self._conn is not None
        rfile = self._conn.rfile
        if not self._left:
            line = rfile.readline(MAX_LINE)
            try:
                self._left = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise Broken("a malformed chunk size in the answer") from None
            if self._left == 0:
                while rfile.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):  # trailers
                    pass
                self._done = True
                return 0
        n = rfile.readinto(buf[: min(len(buf), self._left)])  # type: ignore[attr-defined]
        if not n:
            self._done, self._close = True, True
            return 0
        self._left -= n
        if self._left == 0:
            rfile.readline(MAX_LINE)  # the CRLF after the chunk
        return int(n)

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body in chunks of up to ``size`` bytes, read straight into two alternating
        buffers (no copies): a chunk stays valid until the next-but-one is read."""
        buffers = (memoryview(bytearray(size)), memoryview(bytearray(size)))
        i = 0
        while True:
            n = self.readinto(buffers[i])
            if not n:
                self.release()
                return
            yield buffers[i][:n]  # type: ignore[misc]  # a memoryview: bytes-like for hashing and sending
            i ^= 1

    def release(self) -> None:
        """Done with this answer: its connection is kept for the next request when the
        body was read to the end (a short unread rest is read first), else closed."""
        if self._conn is None:
            return
        if not self._done and not self._chunked and self._left is not None and self._left <= DRAIN_LIMIT:
            try:
                self.readinto(memoryview(bytearray(self._left)))
            except Broken:
                return
        conn, self._conn = self._conn, None
        if self._done and not self._close:
            self._pool.put(self._key, conn)
        else:
            conn.close()

    def close(self) -> None:
        """Drop the connection (after a broken read, or an answer not read to its end)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


class Transport:
    """Keep-alive connections per host; safe for use by many threads at once."""

    def __init__(self, *, timeout: float = 60.0, connect_timeout: float = 15.0, max_idle: int = 16) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle  # idle connections kept per host
        self._lock = threading.Lock()
        self._idle: dict[_Key, list[Connection]] = {}
        self._contexts: dict[TLS, ssl.SSLContext] = {}

    # --- the pool -------------------------------------------------------
    def put(self, key: _Key, conn: Connection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if len(idle) < self.max_idle:
                idle.append(conn)
                return
        conn.close()

    def _get(self, key: _Key) -> Connection | None:
        while True:
            with self._lock:
                idle = self._idle.get(key)
                conn = idle.pop() if idle else None
            if conn is None or conn.alive():
                return conn
            conn.close()  # the server closed it while it was idle

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                conn.close()

    # --- connections ----------------------------------------------------
    def _context(self, tls: TLS) -> ssl.SSLContext:
        import ssl

        with self._lock:
            ctx = self._contexts.get(tls)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context(cafile=tls.ca_file)
        if tls.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        with self._lock:
            return self._contexts.setdefault(tls, ctx)

    def _connect(self, key: _Key) -> Connection:
        scheme, netloc, tls = key
        parts = urlsplit(f"//{netloc}")
        host = parts.hostname or ""
        try:
            port = parts.port or (443 if scheme == "https" else 80)
            sock = socket.create_connection((host, port), timeout=self.connect_timeout)
        except (OSError, ValueError) as e:
            raise _connect_error(e, host) from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if scheme == "https":
                sock = self._context(tls or TLS()).wrap_socket(sock, server_hostname=host)
            sock.settimeout(self.timeout)
        except OSError as e:
            sock.close()
            raise _tls_error(e) if _is_tls_error(e) else _connect_error(e, host) from None
        return Connection(sock, netloc)

    # --- requests -------------------------------------------------------
    def send(
        self, method: str, url: str, headers: dict[str, str], body: Any = None, *, tls: TLS | None = None
    ) -> Response:
        """Send one request and read the status and headers of its answer. ``body``: None,
        bytes, or an iterable of bytes-like chunks (then give ``Content-Length``)."""
        parts = urlsplit(url)
        key: _Key = (parts.scheme, parts.netloc, tls if parts.scheme == "https" else None)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = _request_head(method, target, parts.netloc, headers, body)
        conn = self._get(key) or self._connect(key)
        try:
            _send_request(conn.sock, head, body)
            return Response(conn, self, key, method)
        except OSError as e:
            conn.close()
            raise _tls_error(e) if _is_tls_error(e) else Broken(e.__class__.__name__) from None
        except BaseException:  # broken, or a body iterator that raised (its source failed), or Ctrl-C
            conn.close()
            raise


def _request_head(method: str, target: str, netloc: str, headers: dict[str, str], body: Any) -> bytes:
    if any(c in target for c in " \r\n\0"):
        raise Unsendable(f"the request target {target[:80]!r} holds a space or a line break")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {netloc}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None and not any(name.lower() == "content-length" for name in headers):
        lines.append(f"Content-Length: {len(body)}")
    if any(c in line for line in lines for c in "\r\n\0"):
        raise Unsendable("a request header holds a line break")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _send_request(sock: socket.socket, head: bytes, body: Any) -> None:
    if body is None or isinstance(body, (bytes, bytearray, memoryview)):
        if body is not None and len(body) > SMALL_BODY:
            sock.sendall(head)
            sock.sendall(body)
        else:
            sock.sendall(head + bytes(body or b""))
        return
    sock.sendall(head)
    chunks: Iterable[bytes] = body
    for chunk in chunks:
        sock.sendall(chunk)


def _read_head(rfile: IO[bytes]) -> tuple[str, int, Headers]:
    """The status line and headers of an answer."""
    line = rfile.readline(MAX_LINE)
    if not line:
        raise Broken("RemoteDisconnected")
    version, _, rest = line.decode("latin-1").rstrip("\r\n").partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit() or rest[3:4] not in ("", " "):
        raise Broken("BadStatusLine")
    headers = Headers()
    for _ in range(MAX_HEADERS):
        raw = rfile.readline(MAX_LINE)
        if raw in (b"\r\n", b"\n"):
            return version, int(code), headers
        if not raw:
            raise Broken("RemoteDisconnected")
        name, sep, value = raw.decode("latin-1").partition(":")
        if not sep:
            raise Broken("a malformed header line in the answer")
        headers.add(name.strip(), value.strip())
    raise Broken("too many header lines in the answer")


def _content_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    if value is None:
        return None
    if not value.strip().isdigit():
        raise Broken(f"a malformed Content-Length ({value[:40]!r})")
    return int(value)


def _is_tls_error(e: OSError) -> bool:
    ssl = sys.modules.get("ssl")  # not imported: no TLS was ever set up, so it is no TLS error
    return ssl is not None and isinstance(e, ssl.SSLError)


def _tls_error(e: OSError) -> TLSFailed:
    import ssl

    verify = isinstance(e, ssl.SSLCertVerificationError)
    reason = getattr(e, "verify_message", "") or getattr(e, "reason", "") or e.__class__.__name__
    return TLSFailed(str(reason), verify=verify)


def _connect_error(e: Exception, host: str) -> TransportError:
    if isinstance(e, socket.gaierror):
        return ConnectFailed(f"no such host ({host})")
    if isinstance(e, TimeoutError):
        return ConnectFailed("connection timed out")
    if isinstance(e, ValueError):
        return ConnectFailed(f"not a valid address ({e})")
    reason = (e.strerror if isinstance(e, OSError) else None) or e.__class__.__name__
    return ConnectFailed(reason[:1].lower() + reason[1:])
