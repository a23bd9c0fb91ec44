"""HTTP for the registry client and the test infrastructure: urllib3 2.x, with the
rules a registry client needs on top of it.

``Transport.send`` returns a ``Response`` (status, headers; the body read whole
with a bound, or in chunks) and raises only ``TransportError``: ``ConnectFailed``
(nothing listens, no such host, the proxy refused), ``TLSFailed``, ``Broken`` (a
reset or an answer cut short: temporary), ``TimedOut`` (the deadline passed:
temporary), ``Malformed`` (an answer that is not well-formed HTTP/1.1),
``TooLarge`` (more body than allowed) or ``Unsendable`` (a request that must not
go out). Retries, redirects, auth and the choice of scheme are the client's.

What this layer adds to urllib3 (and to the standard library's ``http.client``,
which parses the answers for it):

- Proxies from ``HTTPS_PROXY``, ``HTTP_PROXY``, ``NO_PROXY`` (and their
  lower-case forms, read by ``urllib.request.getproxies_environment`` and
  ``proxy_bypass_environment`` as curl and Go read them), CONNECT tunnels for
  https (``urllib3.ProxyManager``). As in Go's ``net/http`` (docker, skopeo,
  crane, oras), loopback hosts never go through a proxy.
- ``User-Agent: archlift/<version>`` on every request, CONNECT included.
- TLS: the system's trusted roots plus any CA files given (never instead of
  them); ``insecure``: no verification at all.
- A deadline for every request (``Watch``): connecting and sending, then the
  answer's status and headers, must each end within ``timeout`` seconds; then
  the body must bring at least ``min_rate`` bytes per second over every window of
  ``timeout`` seconds. A watchdog thread shuts the socket down when a deadline
  passes, which ends any read that is blocked on it (a per-read socket timeout
  alone lets a server that drips one byte at a time go on forever).
- Strict framing (``_StrictResponse``): at most 5 interim (1xx) answers, a status
  line ``HTTP/1.x NNN``, a Content-Length of ASCII digits (``int()`` accepts
  ``+5``, ``5_0`` and other scripts' digits), no Content-Length beside
  Transfer-Encoding, no Transfer-Encoding but ``chunked``, and chunk sizes of
  hex digits only (``int(line, 16)`` accepts ``-1``, on which http.client reads
  to the end of the connection). A bad answer closes its connection.
- Bounded bodies: ``Response.read`` refuses a declared length above its bound
  before reading and stops as soon as more arrives; ``chunks`` stops at ``limit``.
- Bytes left over after an answer never become the next answer: urllib3 drops a
  pooled connection that has anything to read before it sends a request on it,
  and what http.client had already buffered goes with the answer it read it for.
  (Bytes that arrive only after the next request went out cannot be told from
  its answer, with this or any HTTP/1.1 client.) A body not read to its end
  closes its connection (a short rest is read first).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import re
import socket
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, overload
from urllib.parse import unquote, urlsplit
from urllib.request import proxy_bypass_environment as _bypass  # type: ignore[attr-defined]  # (not in typeshed)

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from .. import __version__

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("archlift.oci")

CHUNK = 1 << 20
MAX_BODY = 4 << 20  # what ``read`` takes by default: manifests, tag lists, tokens
ERROR_BODY = 16 << 10  # what is read of an error answer
DRAIN_LIMIT = 64 << 10  # an unread rest up to this size is read to keep the connection; more closes it
MAX_INTERIM = 5  # interim (1xx) answers before the real one
MIN_RATE = 16 << 10  # bytes per second a body must keep up, over each window of ``timeout`` seconds
USER_AGENT = f"archlift/{__version__}"

_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] [0-9]{3}(?: [^\r\n]*)?\r?\n")
_CHUNK_LINE = re.compile(rb"[0-9A-Fa-f]{1,16}[ \t]*(?:;[^\r\n]*)?\r?\n")
_DIGITS = re.compile(r"[0-9]{1,19}")


class TransportError(Exception):
    """A request that got no usable HTTP answer."""


class ConnectFailed(TransportError):
    """No connection: refused, unreachable, no such host, a connect timeout, or the proxy failed."""


class TLSFailed(TransportError):
    """The TLS handshake failed; ``verify``: the peer's certificate did not verify."""

    def __init__(self, message: str, *, verify: bool) -> None:
        super().__init__(message)
        self.verify = verify


class Broken(TransportError):
    """The connection broke mid-request, or the answer was cut short (temporary)."""


class TimedOut(Broken):
    """The request's deadline passed (temporary)."""


class Malformed(TransportError):
    """An answer that is not well-formed HTTP/1.1 (not temporary)."""


class TooLarge(TransportError):
    """A body larger than allowed (not temporary)."""


class Unsendable(TransportError):
    """A request that must not be sent (a line break in a header, a URL that is not one)."""


@dataclass(frozen=True)
class TLS:
    """How to check a host's certificate: the system's roots plus ``ca_files``; ``insecure``:
    not at all (docker's insecure registries); ``cert_file``/``key_file``: a client certificate."""

    insecure: bool = False
    ca_files: tuple[str, ...] = ()
    cert_file: str | None = None
    key_file: str | None = None


# ---------------------------------------------------------------------- deadlines
class Watch:
    """The deadline of one request. The watchdog shuts its connection's socket down
    when ``deadline`` passes; ``fired`` then says why the request failed."""

    def __init__(self, timeout: float, min_rate: int) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.deadline = time.monotonic() + timeout
        self.phase = "connecting and sending the request"
        self.conn: HTTPConnection | None = None
        self.fired = False
        self._window_bytes = 0

    def restart(self, phase: str) -> None:
        """A new phase: it has ``timeout`` seconds of its own."""
        self.phase = phase
        self._window_bytes = 0
        self.deadline = time.monotonic() + self.timeout

    def progress(self, n: int) -> None:
        """``n`` body bytes moved: a window that brought ``min_rate * timeout`` bytes starts the next one."""
        self._window_bytes += n
        if self._window_bytes >= self.min_rate * self.timeout:
            self._window_bytes = 0
            self.deadline = time.monotonic() + self.timeout

    def expire(self) -> None:
        self.fired = True
        conn = self.conn
        if conn is not None and getattr(conn, "archlift_watch", None) is self:  # still this request's connection
            shutdown = getattr(getattr(conn, "sock", None), "shutdown", None)
            if shutdown is not None:
                with contextlib.suppress(OSError):
                    shutdown(socket.SHUT_RDWR)

    def describe(self) -> str:
        if self.phase == "reading the body":
            return (
                f"the body came slower than {self.min_rate // 1024} KiB/s over {self.timeout:g} s "
                "(raise --timeout for a slow link)"
            )
        return f"no progress {self.phase} within {self.timeout:g} s (--timeout)"


class _Watchdog:
    """One daemon thread for every request's deadline."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._watches: set[Watch] = set()
        self._wake_at = float("inf")
        self._thread: threading.Thread | None = None

    def add(self, w: Watch) -> None:
        with self._cond:
            self._watches.add(w)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="archlift-http-deadlines", daemon=True)
                self._thread.start()
            if w.deadline < self._wake_at:  # (it wakes at least every second: most requests need no wake-up)
                self._cond.notify()

    def remove(self, w: Watch) -> None:
        with self._cond:
            self._watches.discard(w)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [w for w in self._watches if w.deadline <= now]
                for w in due:
                    self._watches.discard(w)
                self._wake_at = min(min((w.deadline for w in self._watches), default=now + 1.0), now + 1.0)
                if not due:
                    self._cond.wait(max(0.005, self._wake_at - now))
            for w in due:
                try:
                    w.expire()
                except Exception:  # never let one odd socket stop every other deadline
                    log.debug("could not end a request past its deadline", exc_info=True)


_WATCHDOG = _Watchdog()
_current = threading.local()  # .watch: the Watch of the request this thread is sending


def _current_watch() -> Watch | None:
    return getattr(_current, "watch", None)


# ---------------------------------------------------------------------- strict framing
class _Guard:
    """The buffered reader http.client reads one answer from, checked as it goes: the
    head (status lines, interim answers) and, in a chunked body, every chunk-size line."""

    def __init__(self, raw: Any, host: str) -> None:
        self._raw = raw
        self.host = host
        self._in_head = True
        self._block_start = True
        self._status_lines = 0
        self.chunked = False
        self._trailers = False

    def readline(self, limit: int = -1) -> bytes:
        line: bytes = self._raw.readline(limit)
        if self._in_head:
            if self._block_start and line:
                self._status_lines += 1
                if not _STATUS_LINE.fullmatch(line):
                    raise Malformed(f"{self.host} sent a malformed status line ({_show(line)})")
                if self._status_lines > MAX_INTERIM + 1:
                    raise Malformed(f"{self.host} sent more than {MAX_INTERIM} interim (1xx) answers")
            self._block_start = line in (b"\r\n", b"\n")
        elif self.chunked and line:
            if self._trailers:
                self._trailers = line not in (b"\r\n", b"\n")
            elif not _CHUNK_LINE.fullmatch(line):
                raise Malformed(f"{self.host} sent a malformed chunk size ({_show(line)})")
            elif int(line.split(b";", 1)[0], 16) == 0:
                self._trailers = True
        return line

    def end_of_head(self, chunked: bool) -> None:
        self._in_head = False
        self.chunked = chunked

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:  # http.client reads "to the end" only for a body without a length
            raise Malformed(f"{self.host}: an answer of unbounded length")  # (never asked for here)
        data: bytes = self._raw.read(n)
        return data

    def read1(self, n: int = -1) -> bytes:
        data: bytes = self._raw.read1(n if n >= 0 else CHUNK)
        return data

    def readinto(self, b: Any) -> int:
        n: int = self._raw.readinto(b)
        return n

    def peek(self, n: int = 0) -> bytes:
        data: bytes = self._raw.peek(n)
        return data

    def close(self) -> None:
        self._raw.close()

    def flush(self) -> None:
        self._raw.flush()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)

    def fileno(self) -> int:
        n: int = self._raw.fileno()
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


def _a(what: str) -> str:
    return ("an " if what[:1] in "aeiou" else "a ") + what


def _size(n: int) -> str:
    if n >= 1 << 20 and n % (1 << 20) == 0:
        return f"{n >> 20} MiB"
    if n >= 1 << 10 and n % (1 << 10) == 0:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def _show(line: bytes) -> str:
    return repr(line[:60].rstrip(b"\r\n").decode("latin-1"))


class _StrictResponse(http.client.HTTPResponse):
    """http.client's answer parser, stricter (see the module's docstring)."""

    def __init__(self, sock: socket.socket, *args: Any, **kwargs: Any) -> None:
        super().__init__(sock, *args, **kwargs)
        host = getattr(_current, "host", "the server")
        self.fp = _Guard(self.fp, host)  # type: ignore[assignment]

    def begin(self) -> None:
        guard = self.fp
        assert isinstance(guard, _Guard)
        watch = _current_watch()
        if watch is not None:
            watch.restart("waiting for the answer")
        super().begin()
        host = guard.host
        if watch is not None and watch.fired:  # the watchdog shut it: the head may look complete, it is not
            raise TimedOut(f"{host}: {watch.describe()}")
        if 100 <= self.status < 200:
            raise Malformed(f"{host} sent an interim answer (HTTP {self.status}) in place of its answer")
        lengths = self.headers.get_all("Content-Length") or []
        encodings = self.headers.get_all("Transfer-Encoding") or []
        for value in lengths:
            if not _DIGITS.fullmatch(value.strip(" \t")):
                raise Malformed(f"{host} sent a malformed Content-Length ({value[:40]!r})")
        if len({v.strip(" \t") for v in lengths}) > 1:
            raise Malformed(f"{host} sent two different Content-Length headers")
        if encodings and [e.strip(" \t").lower() for e in encodings] != ["chunked"]:
            raise Malformed(f"{host} sent a Transfer-Encoding other than chunked ({', '.join(encodings)[:60]!r})")
        if encodings and lengths:
            raise Malformed(f"{host} sent both Content-Length and Transfer-Encoding")
        guard.end_of_head(bool(self.chunked))


class _Connection(HTTPConnection):
    """A connection that answers with ``_StrictResponse`` and lets the request's ``Watch`` (of the
    thread that uses it) reach its socket, while connecting and while the request is under way."""

    response_class = _StrictResponse
    archlift_watch: Watch | None = None

    def connect(self) -> None:
        self._attach()
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._attach()
        super().request(*args, **kwargs)

    def _attach(self) -> None:
        watch = _current_watch()
        if watch is not None:
            watch.conn = self
            self.archlift_watch = watch


class _TLSConnection(_Connection, HTTPSConnection):  # (its connect and request come first, then HTTPS's)
    pass


class _Pool(HTTPConnectionPool):
    ConnectionCls = _Connection


class _TLSPool(HTTPSConnectionPool):
    ConnectionCls = _TLSConnection


# ---------------------------------------------------------------------- answers
class Headers:
    """Answer headers by name, case ignored; ``get`` gives the first of repeated ones."""

    def __init__(self, raw: urllib3.HTTPHeaderDict) -> None:
        self._raw = raw

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        values = self._raw.getlist(name)
        return values[0] if values else default

    def __getitem__(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._raw.getlist(name))


class Response:
    """One answer. Read it (``read``, ``data``, ``chunks``) or ``release`` it."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, watch: Watch, host: str, method: str) -> None:
        self._raw = raw
        self._watch = watch
        self.host = host
        self.method = method
        self.status = raw.status
        self.headers = Headers(raw.headers)
        self.limit: int | None = None  # the most body bytes ``chunks`` lets through
        self._data: bytes | None = None
        self._got = 0
        self._done = method == "HEAD" or self.status in (204, 304)
        if self._done:  # no body: let http.client see the answer's end, then the connection is free
            _WATCHDOG.remove(watch)
            raw.drain_conn()
            raw.release_conn()
        else:
            watch.restart("reading the body")

    @property
    def declared_length(self) -> int | None:
        value = self.headers.get("Content-Length")
        return int(value.strip(" \t")) if value is not None and not self.headers.get("Transfer-Encoding") else None

    @property
    def data(self) -> bytes:
        """The whole body, up to ``MAX_BODY`` (read once, then kept)."""
        if self._data is None:
            self._data = self.read()
        return self._data

    def read(self, limit: int = MAX_BODY, *, what: str = "answer") -> bytes:
        """The whole body; ``TooLarge`` (before reading, when the declared length says so)
        when it is longer than ``limit``. The connection is released."""
        if self.method == "HEAD" or self.status in (204, 304):  # the length is the resource's; there is no body
            return b""
        declared = self.declared_length
        if declared is not None and declared > limit:
            self.close()
            raise TooLarge(
                f"{self.host} announced {_a(what)} of {declared} bytes; archlift reads at most {_size(limit)}"
            )
        parts = []
        total = 0
        for chunk in self._read_chunks(min(limit + 1, CHUNK)):
            total += len(chunk)
            if total > limit:
                self.close()
                raise TooLarge(f"{self.host} sent {_a(what)} of more than {_size(limit)}; stopped there")
            parts.append(chunk)
        return b"".join(parts)

    def load(self, limit: int = MAX_BODY, *, what: str = "answer") -> Response:
        """Read the whole body now (as ``read``); ``data`` then gives it."""
        if self._data is None:
            self._data = self.read(limit, what=what)
        return self

    def text(self, limit: int = ERROR_BODY) -> bytes:
        """At most ``limit`` bytes of the body (an error's explanation), kept as ``data``; never
        raises for its size or a broken read (a longer rest closes the connection)."""
        if self._data is not None:
            return self._data[:limit]
        parts: list[bytes] = []
        total = 0
        try:
            for chunk in self._read_chunks(min(limit, CHUNK)):
                parts.append(chunk)
                total += len(chunk)
                if total >= limit:
                    break
        except TransportError:
            pass
        self.release()
        self._data = b"".join(parts)[:limit]
        return self._data

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        """The body in chunks of up to ``size`` bytes; ``TooLarge`` as soon as more than ``limit``
        bytes arrived (the chunk that crosses it is not given out)."""
        for chunk in self._read_chunks(size):
            self._got += len(chunk)
            if self.limit is not None and self._got > self.limit:
                self.close()
                raise TooLarge(f"{self.host} sent more than {self.limit} bytes")
            yield chunk

    def _read_chunks(self, size: int) -> Iterator[bytes]:
        if self._done:
            return
        while True:
            try:
                data = self._raw.read1(size, decode_content=False)
            except Exception as e:
                self.close()
                raise _mapped(e, self.host, self._watch) from None
            if not data:
                if self._watch.fired:  # the watchdog ended it: not the body's end
                    self.close()
                    raise TimedOut(f"{self.host}: {self._watch.describe()}")
                self._done = True
                self.release()
                return
            self._watch.progress(len(data))
            yield data

    def release(self) -> None:
        """Done with this answer: its connection is kept for the next request when the body
        was read to its end (a short unread rest is read first), else closed."""
        _WATCHDOG.remove(self._watch)
        if not self._done:
            left = self._raw.length_remaining
            if left is None or left > DRAIN_LIMIT:
                self.close()
                return
            try:
                for _ in self._read_chunks(DRAIN_LIMIT):
                    pass
            except TransportError:
                return
        self._raw.release_conn()

    def close(self) -> None:
        """Drop the connection (an answer not read to its end, or a broken one)."""
        _WATCHDOG.remove(self._watch)
        self._done = True
        with contextlib.suppress(Exception):  # closing a broken connection: nothing more to learn
            self._raw.close()
        self._raw.release_conn()  # (a closed connection: the pool opens a new one in its place)


# ---------------------------------------------------------------------- the transport
class Transport:
    """Keep-alive pools per host (and TLS setting, and proxy); safe for many threads at once."""

    def __init__(self, *, timeout: float = 60.0, max_idle: int = 8, min_rate: int = MIN_RATE) -> None:
        self.timeout = timeout
        self.min_rate = min_rate
        self.max_idle = max_idle  # connections kept per host
        self._lock = threading.Lock()
        self._managers: dict[tuple[str | None, TLS], urllib3.PoolManager] = {}
        self._pools: dict[tuple[str, str, str | None, TLS], HTTPConnectionPool] = {}
        self._contexts: dict[TLS, ssl.SSLContext] = {}
        self._proxies = urllib.request.getproxies_environment()
        self._proxy_of: dict[tuple[str, str], str | None] = {}
        self._timeouts = urllib3.Timeout(connect=timeout, read=timeout)
        self.via_proxy = 0  # for tests and reports: requests sent through a proxy

    def close(self) -> None:
        with self._lock:
            managers, self._managers = self._managers, {}
            self._pools = {}
        for m in managers.values():
            m.clear()

    # --- proxies ---------------------------------------------------------
    def proxy_for(self, scheme: str, netloc: str) -> str | None:
        """The proxy URL for a request to ``scheme://netloc``, or None to go direct."""
        key = (scheme, netloc)
        with self._lock:
            if key in self._proxy_of:
                return self._proxy_of[key]
        proxy = self._proxies.get(scheme)
        if proxy and (is_loopback(netloc) or _bypass(netloc, self._proxies)):
            proxy = None
        if proxy and "://" not in proxy:
            proxy = "http://" + proxy  # HTTPS_PROXY=proxy:3128, as curl and Go take it
        with self._lock:
            self._proxy_of[key] = proxy or None
        return proxy or None

    def _manager(self, proxy: str | None, tls: TLS) -> urllib3.PoolManager:
        key = (proxy, tls)
        with self._lock:
            m = self._managers.get(key)
        if m is not None:
            return m
        kw: dict[str, Any] = {
            "maxsize": self.max_idle,
            "block": False,
            "retries": False,
            "headers": {"User-Agent": USER_AGENT},
            "ssl_context": self._context(tls),
        }
        if tls.insecure:  # the user's choice (--insecure): no warning on every request
            kw |= {"cert_reqs": "CERT_NONE", "assert_hostname": False}
            warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
        if proxy is None:
            m = urllib3.PoolManager(num_pools=1024, **kw)  # (pools are kept by host in ``_pools`` too)
        else:
            parts = urlsplit(proxy)
            headers = {"User-Agent": USER_AGENT}
            if parts.username is not None:
                auth = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                headers |= urllib3.make_headers(proxy_basic_auth=auth)
            bare = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            m = urllib3.ProxyManager(bare, num_pools=1024, proxy_headers=headers, **kw)
        m.pool_classes_by_scheme = {"http": _Pool, "https": _TLSPool}
        with self._lock:
            return self._managers.setdefault(key, m)

    def _pool(self, scheme: str, netloc: str, proxy: str | None, tls: TLS) -> HTTPConnectionPool:
        """The keep-alive pool of one host (what ``PoolManager.urlopen`` looks up on every request)."""
        key = (scheme, netloc, proxy, tls)
        with self._lock:
            pool = self._pools.get(key)
        if pool is None:
            parts = urlsplit(f"{scheme}://{netloc}")
            try:
                port = parts.port
            except ValueError:
                raise Unsendable(f"not a valid host: {netloc[:80]!r}") from None
            pool = self._manager(proxy, tls).connection_from_host(parts.hostname, port, scheme)
            with self._lock:
                pool = self._pools.setdefault(key, pool)
        return pool

    def _context(self, tls: TLS) -> ssl.SSLContext:
        import ssl

        with self._lock:
            ctx = self._contexts.get(tls)
        if ctx is not None:
            return ctx
        ctx = ssl.create_default_context()  # the system's trusted roots ...
        for ca in tls.ca_files:  # ... and these, never instead of them
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as e:
                raise TLSFailed(f"cannot read the CA file {ca} ({e.__class__.__name__})", verify=False) from None
        if tls.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if tls.cert_file and tls.key_file:
            ctx.load_cert_chain(tls.cert_file, tls.key_file)
        with self._lock:
            return self._contexts.setdefault(tls, ctx)

    # --- requests --------------------------------------------------------
    def send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any = None,
        *,
        tls: TLS | None = None,
    ) -> Response:
        """Send one request and read the status and headers of its answer. ``body``: None,
        bytes, or an iterable of bytes-like chunks (then give ``Content-Length``)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise Unsendable(f"not an http(s) URL: {url[:80]!r}")
        for name, value in headers.items():
            if any(c in name + value for c in "\r\n\0"):
                raise Unsendable(f"the request header {name} holds a line break")
        netloc = parts.netloc
        proxy = self.proxy_for(parts.scheme, netloc)
        headers = {"User-Agent": USER_AGENT, **headers}
        watch = Watch(self.timeout, self.min_rate)
        if body is not None and not isinstance(body, (bytes, bytearray, memoryview)):
            body = _counted(body, watch)
        _current.watch, _current.host = watch, netloc
        _WATCHDOG.add(watch)
        options: dict[str, Any] = {
            "body": body,
            "headers": headers,
            "redirect": False,
            "retries": False,
            "preload_content": False,
            "decode_content": False,
            "timeout": self._timeouts,
        }
        try:
            if proxy is not None and parts.scheme == "http":  # forwarded by the proxy: the manager sets it up
                raw = self._manager(proxy, tls or TLS()).urlopen(method, url, **options)
            else:  # direct, or through a CONNECT tunnel: straight to the host's pool
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                pool = self._pool(parts.scheme, netloc, proxy, tls or TLS())
                raw = pool.urlopen(method, target, assert_same_host=False, **options)
        except Exception as e:
            _WATCHDOG.remove(watch)
            raise _mapped(e, netloc, watch, proxy) from None
        finally:
            _current.watch = None
        if watch.fired:
            _WATCHDOG.remove(watch)
            raw.close()
            raw.release_conn()
            raise TimedOut(f"{netloc}: {watch.describe()}")
        if proxy is not None:
            with self._lock:
                self.via_proxy += 1
        return Response(raw, watch, netloc, method)


def _counted(chunks: Iterable[bytes], watch: Watch) -> Iterator[bytes]:
    """An upload's body, each chunk counted as progress of its request."""
    for chunk in chunks:
        watch.progress(len(chunk))
        yield chunk


@functools.lru_cache(maxsize=256)
def is_loopback(host: str) -> bool:
    """``host`` (with an optional port) names this machine."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    import ipaddress

    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _mapped(e: Exception, host: str, watch: Watch, proxy: str | None = None) -> TransportError:
    """The transport error for what urllib3 (or http.client beneath it) raised."""
    if isinstance(e, TransportError):
        return e
    if watch.fired:
        return TimedOut(f"{host}: {watch.describe()}")
    from urllib3 import exceptions as x

    cause: BaseException = e
    if isinstance(e, (x.ProtocolError, x.ProxyError)) and len(e.args) > 1 and isinstance(e.args[1], BaseException):
        cause = e.args[1]
    if isinstance(cause, TransportError):
        return cause
    if isinstance(e, x.ProxyError) or isinstance(cause, x.ProxyError):
        where = urlsplit(proxy).hostname if proxy else "the proxy"
        reason = _reason(cause if cause is not e else e)
        return ConnectFailed(f"the proxy {where} did not open a tunnel to {host} ({reason})")
    if isinstance(e, x.SSLError) or _is_ssl_error(cause):
        return _tls_error(cause if _is_ssl_error(cause) else e)
    if isinstance(e, x.NameResolutionError):  # (a NewConnectionError, itself a ConnectTimeoutError)
        return ConnectFailed(f"no such host ({urlsplit('//' + host).hostname})")
    if isinstance(e, x.NewConnectionError):
        return ConnectFailed(_reason(e))
    if isinstance(e, x.ConnectTimeoutError):
        return ConnectFailed(f"no connection within {watch.timeout:g} s")
    if isinstance(e, x.ReadTimeoutError):
        return TimedOut(f"{host}: no answer within {watch.timeout:g} s (--timeout)")
    if isinstance(e, x.LocationValueError | x.LocationParseError) or isinstance(cause, http.client.InvalidURL):
        return Unsendable(f"not a valid URL for {host}")
    if isinstance(cause, ValueError) and "header" in str(cause).lower():
        return Unsendable(f"a request header for {host} is not valid")
    malformed = (http.client.LineTooLong, http.client.UnknownProtocol, x.InvalidChunkLength, x.InvalidHeader)
    if isinstance(cause, malformed) or isinstance(e, x.InvalidHeader):
        return Malformed(f"{host} sent a malformed answer ({cause.__class__.__name__})")
    if isinstance(cause, http.client.BadStatusLine) and not isinstance(cause, http.client.RemoteDisconnected):
        return Malformed(f"{host} sent a malformed answer (not an HTTP status line)")
    if isinstance(cause, http.client.HTTPException) and "headers" in str(cause):
        return Malformed(f"{host} sent too many header lines")
    if isinstance(cause, http.client.IncompleteRead) or isinstance(e, x.IncompleteRead):
        return Broken(f"the connection to {host} closed before the end of the answer")
    if isinstance(e, (x.HTTPError, OSError, http.client.HTTPException)):
        return Broken(f"{_reason(cause)} talking to {host}")
    raise e


def _reason(e: BaseException) -> str:
    """A short reason for a connection failure: the OS's words, else the exception's class."""
    inner: BaseException | None = e
    while inner is not None:
        if isinstance(inner, OSError) and inner.strerror:
            text = inner.strerror
            return text[:1].lower() + text[1:]
        inner = inner.__context__ or inner.__cause__
    return e.__class__.__name__


def _is_ssl_error(e: BaseException) -> bool:
    import ssl

    return isinstance(e, ssl.SSLError)


def _tls_error(e: BaseException) -> TLSFailed:
    import ssl

    inner: object = e
    for _ in range(8):  # urllib3 wraps the ssl error (args[0], or the cause)
        if isinstance(inner, ssl.SSLError) or not isinstance(inner, BaseException):
            break
        inner = inner.__cause__ or inner.__context__ or (inner.args[0] if inner.args else None)
    verify = isinstance(inner, ssl.SSLCertVerificationError)
    found = inner if isinstance(inner, BaseException) else e
    reason = getattr(found, "verify_message", "") or getattr(found, "reason", "") or found.__class__.__name__
    return TLSFailed(str(reason), verify=verify)
