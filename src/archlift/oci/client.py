"""The OCI distribution client, over ``archlift.oci.http`` (urllib3): one
``RegistryClient`` serves every registry host and may be shared by worker threads.

Transport rules:
- HTTPS first. Plain HTTP only for loopback hosts (127.0.0.0/8, ``localhost``,
  ``[::1]``) or with ``insecure=True``, and only when the host does not speak
  TLS; the scheme is remembered per host. A loopback host with no CA in
  ``/etc/docker/certs.d`` is asked ``GET /v2/`` in plain HTTP first (without
  credentials): a TLS server's refusal of it sends the client to HTTPS. A
  loopback host whose certificate does not verify is an error (give ``ca_file``),
  not a silent downgrade; with ``insecure=True`` certificates are not verified
  (docker's insecure registries). No request goes in plain HTTP to any other
  host: a redirect or an upload location there is refused.
- CA: the system's trusted roots, plus ``ca_file`` and the ``*.crt`` files of
  ``/etc/docker/certs.d/<host>/`` (and its ``client.cert``/``client.key``).
- Proxies: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` (see ``archlift.oci.http``).
- Credentials stay with their origin: they go only with requests to the scheme,
  host and port of the registry they were given for, never with a redirect or
  an upload location elsewhere (a blob store), and to a token service only over
  HTTPS (plain HTTP only when the registry itself may use it).
- Retries with backoff only on temporary failures: 429 (honouring
  ``Retry-After``), 5xx, connection reset, deadline; bounded by ``retries``
  and by ``retry_time`` seconds from the first attempt.
- Every request has a deadline (``timeout``, see ``archlift.oci.http``); a
  manifest is at most 4 MiB, an error body is read up to 16 KiB, a blob no
  larger than its descriptor says; manifests and descriptors are validated
  (``archlift.oci.model``) before they are used.
- Auth on 401: Basic, or the distribution token flow (Bearer), tokens cached per
  scope; see ``archlift.oci.auth`` for where credentials come from.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

from ..errors import RegistryError
from ..refs import Digest, ImageRef, Platform, RefError, is_tag
from . import auth
from .http import (
    CHUNK,
    ERROR_BODY,
    MAX_BODY,
    TLS,
    Broken,
    ConnectFailed,
    Malformed,
    Response,
    TLSFailed,
    TooLarge,
    Transport,
    TransportError,
    Unsendable,
    is_loopback,
)
from .model import ACCEPT_MANIFESTS, INDEX_TYPES, OCI_INDEX, Descriptor, InvalidManifest, Manifest

__all__ = [
    "BlobReader",
    "DigestMismatch",
    "InvalidAnswer",
    "RegistryClient",
    "RequestFailed",
    "chunks_of",
    "cosign_tag_of",
    "is_loopback",
]

log = logging.getLogger("archlift.oci")

CERTS_D = Path("/etc/docker/certs.d")
MAX_MANIFEST = 4 << 20
MAX_TAG_PAGES = 10_000
_TEMPORARY_STATUS = frozenset({408, 429, 500, 502, 503, 504, 507, 520, 522, 524})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_COSIGN_TAG = re.compile(r"sha256-([a-f0-9]{64})(?:\.(sig|att|sbom))?")
_PLAIN_HTTP_HINT = "plain HTTP is allowed only for loopback registries, or for any with --insecure"


class RequestFailed(RegistryError):
    """A registry request that failed; ``temporary`` says a retry may succeed."""

    def __init__(self, message: str, *, status: int = 0, temporary: bool = False, hint: str = "") -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.temporary = temporary


class InvalidAnswer(RequestFailed):
    """An answer archlift will not use: malformed HTTP, too large, an invalid manifest or
    descriptor, a redirect to plain HTTP, a token service that is not HTTPS. Hostile input."""

    exit_code = 2
    title = "invalid registry answer"


class DigestMismatch(RegistryError):
    """Content whose sha256 is not the digest it was asked for."""

    def __init__(self, message: str, *, expected: Digest, actual: str) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


def _scope(repo: ImageRef, actions: str = "pull") -> str:
    return f"repository:{repo.repository}:{actions}"


def _digest_of(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


@functools.lru_cache(maxsize=256)
def _base_origin(scheme: str, host: str) -> tuple[str, str, int]:
    return _origin(f"{scheme}://{host}")


def _origin(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an absolute URL, the default port filled in."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise Unsendable(f"not a valid URL: {url[:80]!r}") from None
    return parts.scheme, (parts.hostname or "").lower(), port or (443 if parts.scheme == "https" else 80)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_text(resp: Response) -> str:
    """The registry's own error codes and messages, shortened."""
    import json

    body = resp.text(ERROR_BODY)
    try:
        errors = json.loads(body).get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, TypeError, RecursionError):
        text = body.decode("utf-8", "replace").strip()
    text = " ".join(text.split())
    return f"HTTP {resp.status}" + (f" ({text[:300]})" if text else "")


class BlobReader:
    """A blob's body as it streams in: ``chunks`` stops with ``DigestMismatch`` as soon as
    more bytes than the descriptor's size arrive (the chunk that crosses it is not given
    out), and turns transport failures into ``RequestFailed`` (temporary when a retry may
    help). The reader checks the size only; the digest is the caller's (it hashes anyway)."""

    def __init__(self, resp: Response, digest: Digest, size: int, origin: str) -> None:
        self._resp = resp
        self.digest = digest
        self.size = size
        self.origin = origin
        self.status = resp.status
        self.headers = resp.headers
        resp.limit = size

    def chunks(self, size: int = CHUNK) -> Iterator[bytes]:
        where = f"reading blob {self.digest.short()} from {self.origin}"
        try:
            yield from self._resp.chunks(size)
        except TooLarge:
            raise DigestMismatch(
                f"blob {self.digest} from {self.origin}: the registry sent more than {self.size} bytes, "
                "the size its descriptor gives; stopped there",
                expected=self.digest,
                actual="",
            ) from None
        except Malformed as e:
            raise InvalidAnswer(f"{where}: {e}") from None
        except TransportError as e:  # a reset, a deadline, a short body
            raise RequestFailed(f"{where}: {e}", temporary=True) from None

    def release(self) -> None:
        self._resp.release()

    def close(self) -> None:
        self._resp.close()


class RegistryClient:
    def __init__(
        self,
        *,
        insecure: bool = False,
        ca_file: str | None = None,
        docker_config: str | None = None,
        max_connections: int = 8,
        retries: int = 8,
        backoff: float = 0.2,
        timeout: float = 60.0,
        retry_time: float | None = None,
    ) -> None:
        self.insecure = insecure
        self.ca_file = ca_file
        self.docker_config = docker_config
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.retry_time = retry_time if retry_time is not None else 2 * timeout
        auth.check_environment()  # a credential variable that names no host, or not one, is refused now
        self._transport = Transport(timeout=timeout, max_idle=max_connections)
        self._lock = threading.Lock()
        self._auth_lock = threading.Lock()
        self._scheme: dict[str, str] = {}
        self._tls_of: dict[str, TLS] = {}
        self._creds: dict[str, auth.Credentials] = {}
        self._basic: dict[str, str] = {}  # host -> Authorization header
        self._bearer: dict[str, auth.Challenge] = {}  # host -> its token challenge
        self._tokens: dict[tuple[str, str], str] = {}  # (host, scope) -> token
        self._no_referrers_api: set[str] = set()
        self._referrers_api: set[str] = set()
        self._mounts_honoured: set[str] = set()  # registries that answered a blob mount with 201
        self._probes: dict[str, threading.Lock] = {}  # one first contact (scheme, referrers API) per host
        self.requests = 0  # for tests and reports: HTTP requests sent

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def transport(self) -> Transport:
        """The HTTP layer (proxies, TLS, deadlines), for a caller that needs plain requests."""
        return self._transport

    # ------------------------------------------------------------------ transport
    def _tls(self, host: str) -> TLS:
        with self._lock:
            known = self._tls_of.get(host)
        if known is not None:
            return known
        if self.insecure:
            tls = TLS(insecure=True)
        else:
            certs = CERTS_D / host
            cas = [self.ca_file] if self.ca_file else []
            cas += sorted(str(p) for p in certs.glob("*.crt")) if certs.is_dir() else []
            cert, key = certs / "client.cert", certs / "client.key"
            if cert.is_file() and key.is_file():
                tls = TLS(ca_files=tuple(cas), cert_file=str(cert), key_file=str(key))
            else:
                tls = TLS(ca_files=tuple(cas))
        with self._lock:
            return self._tls_of.setdefault(host, tls)

    def scheme(self, host: str) -> str:
        with self._lock:
            return self._scheme.get(host, "https")

    def _may_use_http(self, host: str) -> bool:
        return self.insecure or is_loopback(host)

    def _credentials(self, host: str) -> auth.Credentials:
        with self._lock:
            if host in self._creds:
                return self._creds[host]
        creds = auth.lookup(host, self.docker_config)
        with self._lock:
            self._creds[host] = creds
        return creds

    def _auth_header(self, host: str, scope: str, context: str) -> str | None:
        with self._lock:
            basic = self._basic.get(host)
            challenge = self._bearer.get(host)
            token = self._tokens.get((host, scope))
        if basic:
            return basic
        if token:
            return f"Bearer {token}"
        if challenge:  # a bearer host: fetch the token for this scope before asking
            return f"Bearer {self._fetch_token(host, scope, challenge, context)}"
        return None

    def _authenticate(self, host: str, scope: str, header: str, context: str, tried: bool) -> None:
        challenge = auth.parse_challenge(header) if header else auth.Challenge("", {})
        creds = self._credentials(host)
        hint = auth.env_hint(host)
        if challenge.scheme == "basic":
            if tried or not creds:
                what = f"refused the credentials from {creds.source}" if creds else "asks for credentials"
                raise RequestFailed(f"{context}: {host} {what} (HTTP 401)", status=401, hint=hint)
            with self._lock:
                self._basic[host] = creds.basic_header()
            return
        if challenge.scheme == "bearer" and "realm" in challenge.params:
            self._check_realm(host, challenge.params["realm"], context)
            with self._lock:
                self._bearer[host] = challenge
                stale = self._tokens.pop((host, scope), None)
            if tried and stale is None:
                what = f"refused the credentials from {creds.source}" if creds else "asks for credentials"
                raise RequestFailed(f"{context}: {host} {what} (HTTP 401)", status=401, hint=hint)
            self._fetch_token(host, scope, challenge, context)
            return
        raise RequestFailed(f"{context}: {host} answered 401 with no usable challenge", status=401, hint=hint)

    def _check_realm(self, host: str, realm: str, context: str) -> None:
        """A token service gets credentials over HTTPS only (plain HTTP only when the
        registry itself may use it: loopback, or --insecure)."""
        parts = urlsplit(realm)
        if parts.netloc and (parts.scheme == "https" or (parts.scheme == "http" and self._may_use_http(host))):
            return
        shown = realm if len(realm) <= 200 else realm[:200] + "..."
        raise InvalidAnswer(
            f"{context}: {host} names the token service (realm) {shown!r}, which is not an https:// URL; "
            "archlift sent no credentials there",
            hint="a registry's token realm must be https:// unless the registry itself is on loopback or "
            "trusted with --insecure",
        )

    def _fetch_token(self, host: str, scope: str, challenge: auth.Challenge, context: str) -> str:
        import json

        with self._auth_lock:
            with self._lock:
                cached = self._tokens.get((host, scope))
            if cached:
                return cached
            realm = challenge.params["realm"]
            self._check_realm(host, realm, context)
            creds = self._credentials(host)
            service = challenge.params.get("service", "")
            scopes = scope.split(" ")
            headers = {}
            if creds.identity_token:
                form = {
                    "grant_type": "refresh_token",
                    "refresh_token": creds.identity_token,
                    "service": service,
                    "scope": " ".join(scopes),
                    "client_id": "archlift",
                }
                method, url, body = "POST", realm, urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                query = [("service", service)] if service else []
                query += [("scope", s) for s in scopes]
                if creds:
                    query.append(("account", creds.username))
                    headers["Authorization"] = creds.basic_header()
                method, url, body = "GET", realm + ("&" if "?" in realm else "?") + urlencode(query), None
            realm_host = urlsplit(realm).netloc
            resp = self._send_with_retries(method, url, headers, body, f"{context}: token from {realm_host}", False)
            if resp.status in (401, 403):
                raise RequestFailed(
                    f"{context}: the token service {realm_host} refused "
                    + (f"the credentials from {creds.source}" if creds else "anonymous access"),
                    status=resp.status,
                    hint=auth.env_hint(host),
                )
            if resp.status != 200:
                raise RequestFailed(f"{context}: token service {realm_host}: {_error_text(resp)}", status=resp.status)
            try:
                data = json.loads(resp.data)
                token = data.get("token") or data.get("access_token") or ""
            except (ValueError, AttributeError, RecursionError):
                token = ""
            if not isinstance(token, str) or not token or any(c in token for c in "\r\n\0"):
                raise InvalidAnswer(f"{context}: token service {realm_host} sent no usable token")
            with self._lock:
                self._tokens[(host, scope)] = token
            return token

    def _raw_send(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any,
        stream: bool,
        limit: int = MAX_BODY,
        what: str = "answer",
    ) -> Response:
        parts = urlsplit(url)
        tls = self._tls(parts.netloc) if parts.scheme == "https" else None
        with self._lock:
            self.requests += 1
        log.debug("%s %s://%s%s", method, parts.scheme, parts.netloc, parts.path)  # no query: it may name the account
        resp = self._transport.send(method, url, headers, body, tls=tls)
        if not stream:  # read it whole now (bounded): the connection goes back to the pool
            if resp.status >= 300:
                resp.text(ERROR_BODY)
            else:
                resp.load(limit, what=what)
        return resp

    def _send_with_retries(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        body: Any,
        context: str,
        stream: bool,
        limit: int = MAX_BODY,
        what: str = "answer",
    ) -> Response:
        """Send once, retrying temporary failures (only with a replayable body), at most
        ``retries`` times and never starting an attempt ``retry_time`` seconds after the first."""
        replayable = body is None or isinstance(body, bytes)
        attempt = 0
        started = time.monotonic()
        while True:
            wait: float | None = None
            try:
                resp = self._raw_send(method, url, headers, body, stream, limit, what)
            except ConnectFailed as e:
                raise RequestFailed(f"{context}: cannot connect to {urlsplit(url).netloc}: {e}") from None
            except Unsendable as e:
                raise RequestFailed(f"{context}: {e}") from None
            except (Malformed, TooLarge) as e:
                raise InvalidAnswer(f"{context}: {e}") from None
            except Broken as e:
                if not replayable or attempt >= self.retries or time.monotonic() - started >= self.retry_time:
                    raise RequestFailed(
                        f"{context}: {e}" + (f" (after {attempt + 1} attempts)" if attempt else ""),
                        temporary=True,
                    ) from None
            else:
                if (
                    resp.status not in _TEMPORARY_STATUS
                    or not replayable
                    or attempt >= self.retries
                    or time.monotonic() - started >= self.retry_time
                ):
                    return resp
                wait = _retry_after(resp.headers.get("Retry-After")) if resp.status in (429, 503) else None
                resp.release()
            delay = min(4.0, self.backoff * (2**attempt)) * (0.5 + random.random() / 2)
            if wait is not None:
                delay = min(max(delay, wait), 30.0)
            delay = max(0.0, min(delay, started + self.retry_time - time.monotonic()))
            attempt += 1
            log.debug("%s: temporary failure, retry %d in %.2f s", context, attempt, delay)
            time.sleep(delay)

    def _probe_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._probes.setdefault(key, threading.Lock())

    def request(
        self,
        method: str,
        host: str,
        target: str,
        *,
        scope: str,
        context: str,
        headers: dict[str, str] | None = None,
        body: Any = None,
        stream: bool = False,
        anonymous: bool = False,
        limit: int = MAX_BODY,
        what: str = "answer",
    ) -> Response:
        """One API request: scheme choice, auth, retries and redirects done here.

        ``target`` is a path (``/v2/...``) on ``host`` or an absolute URL (an
        upload location). Returns the response for any status that is not
        temporary; callers decide what a 404 means. ``anonymous``: no credentials
        are sent, and a 401 is returned as it is. Without ``stream`` the body is
        read whole, up to ``limit`` bytes (an error's up to 16 KiB); ``what`` names it in errors.
        """
        args = (scope, context, headers, body, stream, anonymous, limit, what)
        with self._lock:
            known = host in self._scheme
        if known or target.startswith(("http://", "https://")):
            return self._request(method, host, target, *args)
        with self._probe_lock(f"scheme {host}"):  # the first request finds the scheme; the others wait for it
            with self._lock:
                known = host in self._scheme
            if not known and self._plain_first(host):
                self._probe_plain(host, context)
            return self._request(method, host, target, *args)

    def _plain_first(self, host: str) -> bool:
        """Ask a loopback host in plain HTTP first (no certificate is configured for it): a
        local registry mostly speaks it, and TLS set-up costs more than the request."""
        return is_loopback(host) and not (CERTS_D / host / "ca.crt").is_file()

    def _probe_plain(self, host: str, context: str) -> None:
        """``GET /v2/`` in plain HTTP, no credentials: any HTTP answer but a TLS server's
        complaint about plain HTTP means the host speaks it; else it is left to HTTPS."""
        try:
            resp = self._raw_send("GET", f"http://{host}/v2/", {}, None, False)
            tls_port = resp.status == 400 and b"https" in resp.text().lower()
        except ConnectFailed as e:
            raise RequestFailed(f"{context}: cannot connect to {host}: {e}") from None
        except (Broken, Malformed, TooLarge):  # no HTTP answer: a TLS server that dropped the plain request
            tls_port = True
        if not tls_port:
            log.debug("%s speaks plain HTTP (loopback)", host)
            with self._lock:
                self._scheme[host] = "http"

    def _check_plain(self, url: str, context: str, why: str) -> None:
        """No request goes in plain HTTP to a host that may not use it."""
        netloc = urlsplit(url).netloc
        if url.startswith("http://") and not self._may_use_http(netloc):
            raise InvalidAnswer(
                f"{context}: refusing {why} in plain HTTP to {netloc} (http://{netloc}/...)", hint=_PLAIN_HTTP_HINT
            )

    def _request(
        self,
        method: str,
        host: str,
        target: str,
        scope: str,
        context: str,
        headers: dict[str, str] | None,
        body: Any,
        stream: bool,
        anonymous: bool,
        limit: int,
        what: str,
    ) -> Response:
        auth_tried = False
        redirects = 0
        while True:
            url = target if target.startswith(("http://", "https://")) else f"{self.scheme(host)}://{host}{target}"
            url_host = urlsplit(url).netloc
            self._check_plain(url, context, "a request")
            same_origin = _origin(url) == _base_origin(self.scheme(host), host)
            hdrs = dict(headers or {})
            if same_origin and not anonymous:  # credentials go to their own origin only
                authz = self._auth_header(host, scope, context)
                if authz:
                    hdrs["Authorization"] = authz
            try:
                resp = self._send_with_retries(method, url, hdrs, body, context, stream, limit, what)
            except TLSFailed as e:
                verify = e.verify
                if url.startswith("https://") and not verify and self._may_use_http(url_host):
                    with self._lock:
                        self._scheme[url_host] = "http"
                    if target.startswith("https://"):
                        target = "http://" + target[len("https://") :]
                    log.debug("%s does not speak TLS; using plain HTTP (loopback or --insecure)", url_host)
                    continue
                if verify:
                    raise RequestFailed(
                        f"{context}: the TLS certificate of {url_host} does not verify ({e})",
                        hint=f"pass --ca-file, or put the CA in {CERTS_D}/{url_host}/ca.crt",
                    ) from None
                hint = "" if self._may_use_http(url_host) else "plain HTTP needs --insecure for a non-loopback host"
                raise RequestFailed(f"{context}: TLS with {url_host} failed ({e})", hint=hint) from None
            if url.startswith("https://"):
                with self._lock:
                    self._scheme.setdefault(url_host, "https")
            if resp.status == 401 and same_origin and not anonymous:
                header = resp.headers.get("WWW-Authenticate", "")
                resp.release()
                self._authenticate(host, scope, header, context, auth_tried)
                auth_tried = True
                if body is not None and not isinstance(body, bytes):  # a stream cannot be sent twice
                    raise RequestFailed(f"{context}: authentication needed during a streamed upload", temporary=True)
                continue
            if resp.status in _REDIRECTS and method in ("GET", "HEAD") and redirects < 5:
                location = resp.headers.get("Location", "")
                resp.release()
                if not location:
                    raise InvalidAnswer(f"{context}: {url_host} answered HTTP {resp.status} without a Location")
                target = urljoin(url, location)
                if not target.startswith(("http://", "https://")):
                    raise InvalidAnswer(f"{context}: {url_host} redirected to {target[:100]!r}, not an http(s) URL")
                self._check_plain(target, context, f"the redirect from {url_host}")
                redirects += 1
                continue
            return resp

    def ping(self, host: str) -> str:
        """``GET /v2/`` with no credentials: settles the scheme ``host`` speaks (``scheme``)
        and returns the authentication it asks for: "basic", "bearer", or "" for none."""
        resp = self.request("GET", host, "/v2/", scope="", context=f"reaching {host}", anonymous=True)
        if resp.status == 401:
            return resp.headers.get("WWW-Authenticate", "").split(" ", 1)[0].lower()
        if resp.status != 200:
            raise self._fail(resp, f"reaching {host}")
        return ""

    def token(self, repo: ImageRef, actions: str = "pull") -> str:
        """A bearer token for ``actions`` on ``repo`` from its registry's token service, to hand
        to another client; "" when the registry asks for none (basic or no authentication)."""
        scope = _scope(repo, actions)
        context = f"authenticating to {repo.registry} for {actions} on {repo.repository}"
        resp = self.request("GET", repo.registry, "/v2/", scope=scope, context=context)
        if resp.status != 200:
            raise self._fail(resp, context)
        with self._lock:
            return self._tokens.get((repo.registry, scope), "")

    def tls_verify(self, host: str) -> bool | str:
        """How a requests-based client should check ``host``'s certificate: False
        (``--insecure``), a CA bundle's path, or True (the system's CAs)."""
        if self.insecure:
            return False
        cas = self._tls(host).ca_files
        return cas[0] if cas else True

    def _fail(self, resp: Response, context: str) -> RequestFailed:
        if resp.status == 403:
            return RequestFailed(
                f"{context}: denied ({_error_text(resp)})",
                status=403,
                hint="the credentials lack permission for this repository",
            )
        return RequestFailed(
            f"{context}: {_error_text(resp)}", status=resp.status, temporary=resp.status in _TEMPORARY_STATUS
        )

    def _manifest_call(self, method: str, ref: ImageRef, context: str) -> Response:
        return self.request(
            method,
            ref.registry,
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=_scope(ref),
            context=context,
            headers={"Accept": ACCEPT_MANIFESTS},
            limit=MAX_MANIFEST,
            what="manifest",
        )

    def _blob_call(self, method: str, repo: ImageRef, digest: Digest, context: str, stream: bool = False) -> Response:
        return self.request(
            method,
            repo.registry,
            f"/v2/{repo.repository}/blobs/{digest}",
            scope=_scope(repo),
            context=context,
            stream=stream,
        )

    def _manifest_of(self, raw: bytes, content_type: str, context: str) -> Manifest:
        try:
            return Manifest.of(raw, content_type)
        except InvalidManifest as e:
            raise InvalidAnswer(f"{context}: the registry sent an invalid manifest: {e}") from None

    # ------------------------------------------------------------------ manifests
    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        """The manifest's descriptor, or None when the registry has no such manifest."""
        context = f'checking "{ref}"'
        resp = self._manifest_call("HEAD", ref, context)
        if resp.status == 404:
            return None
        if resp.status != 200:
            raise self._fail(resp, context)
        digest = resp.headers.get("Docker-Content-Digest")
        media_type = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
        size = resp.declared_length
        if not digest or size is None or not media_type:
            return self.get_manifest(ref).descriptor()
        try:
            return Descriptor(media_type, Digest.parse(digest.strip()), size)
        except RefError as e:
            raise InvalidAnswer(f"{context}: the registry's Docker-Content-Digest is not valid: {e}") from None

    def get_manifest(self, ref: ImageRef) -> Manifest:
        """The manifest's bytes (at most 4 MiB), validated; verified against ``ref.digest``
        when the reference has one."""
        context = f'fetching "{ref}"'
        resp = self._manifest_call("GET", ref, context)
        if resp.status != 200:
            raise self._fail(resp, context)
        raw = resp.data
        if ref.digest:
            actual = _digest_of(raw, ref.digest.algorithm)
            if actual != ref.digest.value:
                raise DigestMismatch(
                    f"{context}: the registry sent a manifest whose digest is {actual}",
                    expected=ref.digest,
                    actual=actual,
                )
        return self._manifest_of(raw, resp.headers.get("Content-Type", ""), context)

    def put_manifest(self, ref: ImageRef, raw: bytes, media_type: str) -> Digest:
        """Push a manifest by tag or by digest; returns its digest."""
        digest = Digest.of(raw)
        context = f'pushing "{ref}"'
        if ref.digest and ref.digest != digest:
            raise DigestMismatch(
                f"{context}: the manifest's digest is {digest}", expected=ref.digest, actual=str(digest)
            )
        resp = self.request(
            "PUT",
            ref.registry,
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=_scope(ref, "pull,push"),
            context=context,
            headers={"Content-Type": media_type},
            body=raw,
        )
        if resp.status not in (200, 201, 202):
            raise self._fail(resp, context)
        sent = resp.headers.get("Docker-Content-Digest")
        if sent and sent != str(digest):
            raise RegistryError(f"{context}: the registry stored it as {sent[:80]}, not {digest}")
        return digest

    def delete_manifest(self, ref: ImageRef) -> None:
        context = f'deleting "{ref}"'
        resp = self.request(
            "DELETE",
            ref.registry,
            f"/v2/{ref.repository}/manifests/{ref.reference}",
            scope=_scope(ref, "delete"),
            context=context,
        )
        if resp.status not in (200, 202, 404):
            raise self._fail(resp, context)

    def list_tags(self, repo: ImageRef) -> list[str]:
        """Every tag of the repository ([] when the repository does not exist). The pages are
        followed on the registry's own origin, each link once, at most 10,000 of them."""
        import json

        context = f'listing tags of "{repo.name}"'
        target: str | None = f"/v2/{repo.repository}/tags/list?n=1000"
        tags: list[str] = []
        seen: set[str] = set()
        while target:
            if len(seen) >= MAX_TAG_PAGES:
                raise InvalidAnswer(f"{context}: more than {MAX_TAG_PAGES} pages of tags; stopped there")
            seen.add(target)
            resp = self.request("GET", repo.registry, target, scope=_scope(repo), context=context)
            if resp.status == 404:
                return []
            if resp.status != 200:
                raise self._fail(resp, context)
            try:
                page = json.loads(resp.data).get("tags") or []
            except (ValueError, AttributeError, RecursionError):
                raise InvalidAnswer(f"{context}: the answer is not a tag list") from None
            if not isinstance(page, list) or not all(isinstance(t, str) and is_tag(t) for t in page):
                bad = next((t for t in page if not (isinstance(t, str) and is_tag(t))), page)
                raise InvalidAnswer(f"{context}: the tag list holds {str(bad)[:60]!r}, which is not a tag")
            tags += page
            link = re.search(r"<([^>]+)>\s*;\s*rel=\"?next\"?", resp.headers.get("Link", ""))
            target = None
            if link:
                base = f"{self.scheme(repo.registry)}://{repo.registry}"
                absolute = urljoin(base + "/", link.group(1))
                if _origin(absolute) != _origin(base):
                    raise InvalidAnswer(f"{context}: the next page is on another host ({urlsplit(absolute).netloc})")
                target = absolute[len(base) :] if absolute.startswith(base) else absolute
                if target in seen:
                    raise InvalidAnswer(f"{context}: the next-page link {target[:100]!r} repeats; stopped there")
        return tags

    def index_platforms(self, ref: ImageRef) -> dict[str, Digest]:
        """``"linux/arm64" -> manifest digest``, attestation manifests left out.

        A single-platform image manifest gives its one platform (read from its config).
        """
        import json

        manifest = self.get_manifest(ref)
        if manifest.is_index:
            out: dict[str, Digest] = {}
            for d in manifest.descriptors():
                if d.platform is None or d.is_attestation:
                    continue
                out.setdefault(str(d.platform), d.digest)
            return out
        config = manifest.config
        if config is None:
            return {}
        try:
            doc = json.loads(self.get_blob(ref, config))
        except (ValueError, RecursionError):
            doc = None
        if not isinstance(doc, dict) or not doc.get("os"):
            return {}  # an artifact, not a runnable image
        plat = Platform.from_oci({k: str(doc.get(k, "")) for k in ("os", "architecture", "variant") if doc.get(k)})
        return {str(plat): manifest.digest}

    def referrers(self, repo: ImageRef, digest: Digest, *, fallback: bool = True) -> list[Descriptor]:
        """What refers to ``digest``: the OCI referrers API when offered, else (with
        ``fallback``) the ``sha256-<hex>`` tag schema; [] when there are none."""
        context = f'listing referrers of "{repo.name}@{digest}"'
        if repo.registry not in self._no_referrers_api:
            resp = self.request(
                "GET",
                repo.registry,
                f"/v2/{repo.repository}/referrers/{digest}",
                scope=_scope(repo),
                context=context,
                headers={"Accept": OCI_INDEX},
            )
            ctype = resp.headers.get("Content-Type", "").split(";", 1)[0].strip()
            if resp.status == 200 and ctype in INDEX_TYPES:
                with self._lock:
                    self._referrers_api.add(repo.registry)
                return self._manifest_of(resp.data, ctype, context).descriptors()
            if resp.status not in (400, 404, 405):
                raise self._fail(resp, context)
            with self._lock:
                self._no_referrers_api.add(repo.registry)
        if not fallback:
            return []
        tag = repo.with_tag(f"{digest.algorithm}-{digest.hex}")
        if self.head_manifest(tag) is None:
            return []
        manifest = self.get_manifest(tag)
        return manifest.descriptors() if manifest.is_index else []

    def referrers_api(self, repo: ImageRef) -> bool:
        """Whether ``repo``'s registry offers the OCI referrers API (asked once per host)."""
        with self._lock:
            if repo.registry in self._referrers_api:
                return True
            if repo.registry in self._no_referrers_api:
                return False
        with self._probe_lock(f"referrers {repo.registry}"):
            with self._lock:
                known = repo.registry in self._referrers_api or repo.registry in self._no_referrers_api
            if not known:  # ask the API about a digest nothing refers to
                self.referrers(repo, Digest.of(b""), fallback=False)
        with self._lock:
            return repo.registry in self._referrers_api

    # ------------------------------------------------------------------ blobs
    def blob_exists(self, repo: ImageRef, digest: Digest) -> bool:
        context = f'checking blob {digest.short()} in "{repo.name}"'
        resp = self._blob_call("HEAD", repo, digest, context)
        if resp.status == 200:
            return True
        if resp.status == 404:
            return False
        raise self._fail(resp, context)

    def get_blob(self, repo: ImageRef, blob: Digest | Descriptor, *, max_size: int = MAX_BODY) -> bytes:
        """A small blob, held in memory and verified: at most its descriptor's size (given a
        ``Descriptor``), else at most ``max_size`` bytes."""
        digest, size = (blob.digest, blob.size) if isinstance(blob, Descriptor) else (blob, None)
        context = f'fetching blob {digest.short()} from "{repo.name}"'
        reader = self.open_blob(repo, digest, size if size is not None else max_size, exact=size is not None)
        data = b"".join(reader.chunks())
        actual = _digest_of(data, digest.algorithm)
        if actual != digest.value or (size is not None and len(data) != size):
            raise DigestMismatch(
                f"{context}: the registry sent {len(data)} bytes whose digest is {actual}",
                expected=digest,
                actual=actual,
            )
        return data

    def open_blob(
        self, repo: ImageRef, blob: Digest | Descriptor, size: int | None = None, *, exact: bool = True
    ) -> BlobReader:
        """The blob's body as it streams in, bounded by its size: a ``Descriptor``, or a
        ``Digest`` and its ``size``. A registry that announces another length is refused before
        anything is read; one that sends more stops at the size (``BlobReader.chunks``).
        ``exact=False``: ``size`` is only a bound (``get_blob`` without a descriptor)."""
        digest = blob.digest if isinstance(blob, Descriptor) else blob
        if isinstance(blob, Descriptor):
            size = blob.size
        if size is None:
            raise ValueError("open_blob needs the blob's size: pass its Descriptor")
        context = f'fetching blob {digest.short()} from "{repo.name}"'
        resp = self._blob_call("GET", repo, digest, context, stream=True)
        if resp.status != 200:
            raise self._fail(resp, context)
        declared = resp.declared_length
        if declared is not None and (declared != size if exact else declared > size):
            resp.close()
            raise DigestMismatch(
                f'blob {digest} from "{repo.name}": the registry has {declared} bytes for it, '
                + (f"the manifest says {size}" if exact else f"more than the {size} bytes archlift reads"),
                expected=digest,
                actual="",
            )
        return BlobReader(resp, digest, size, f'"{repo.name}"')

    def honours_mounts(self, registry: str) -> bool:
        """Whether ``registry`` has mounted a blob for this client (``start_upload`` with ``mount``)."""
        with self._lock:
            return registry in self._mounts_honoured

    def start_upload(
        self, repo: ImageRef, *, mount: Digest | None = None, mount_from: ImageRef | None = None
    ) -> str | None:
        """Open an upload session and return its location; with ``mount``, try a
        cross-repository mount first and return None when the blob was mounted.
        A location on another origin gets no credentials; one in plain HTTP to a
        host that may not use it is refused."""
        context = f'starting an upload to "{repo.name}"'
        target = f"/v2/{repo.repository}/blobs/uploads/"
        scope = _scope(repo, "pull,push")
        if mount is not None and mount_from is not None:
            target += "?" + urlencode({"mount": str(mount), "from": mount_from.repository})
            scope += " " + _scope(mount_from)
        resp = self.request(
            "POST", repo.registry, target, scope=scope, context=context, headers={"Content-Length": "0"}, body=b""
        )
        if mount is not None and resp.status == 201:
            with self._lock:
                self._mounts_honoured.add(repo.registry)
            return None
        if resp.status != 202:
            raise self._fail(resp, context)
        location = resp.headers.get("Location")
        if not location:
            raise InvalidAnswer(f"{context}: the registry gave no upload location")
        url = urljoin(f"{self.scheme(repo.registry)}://{repo.registry}/", location.strip())
        if not url.startswith(("http://", "https://")):
            raise InvalidAnswer(f"{context}: the upload location {location[:100]!r} is not an http(s) URL")
        self._check_plain(url, context, "the upload")
        return url

    def _finish_upload(self, repo: ImageRef, location: str, digest: Digest, body: Any, size: int, context: str) -> None:
        sep = "&" if "?" in location else "?"
        resp = self.request(
            "PUT",
            repo.registry,
            f"{location}{sep}{urlencode({'digest': str(digest)})}",
            scope=_scope(repo, "pull,push"),
            context=context,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            body=body,
        )
        if resp.status not in (201, 204):
            raise self._fail(resp, context)

    def put_blob(self, repo: ImageRef, data: bytes) -> Digest:
        """Upload a small blob in one PUT (monolithic); returns its digest."""
        digest = Digest.of(data)
        context = f'pushing blob {digest.short()} to "{repo.name}"'
        for attempt in range(3):
            location = self.start_upload(repo)
            assert location is not None
            try:
                self._finish_upload(repo, location, digest, data, len(data), context)
                return digest
            except RequestFailed as e:
                if not e.temporary or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def copy_blob(
        self,
        src: ImageRef,
        dst: ImageRef,
        desc: Descriptor,
        *,
        location: str | None = None,
        progress: Callable[[int], None] | None = None,
        attempts: int | None = None,
    ) -> int:
        """Stream a blob from ``src`` to ``dst`` (GET -> PUT, never whole in memory),
        verifying its sha256 before the upload is committed. Returns bytes sent."""

        return self.upload_stream(
            dst,
            desc,
            lambda: self.blob_chunks(src, desc),
            origin=f'"{src.name}"',
            location=location,
            progress=progress,
            attempts=attempts,
        )

    def upload_stream(
        self,
        dst: ImageRef,
        desc: Descriptor,
        opener: Callable[[], tuple[Iterable[bytes], Callable[[], None]]],
        *,
        origin: str,
        location: str | None = None,
        progress: Callable[[int], None] | None = None,
        attempts: int | None = None,
    ) -> int:
        """Upload a blob whose bytes ``opener()`` yields (with a close function),
        verifying size and digest before the registry may commit it.

        A temporary failure anywhere restarts with a new reader and a new upload
        session, at most ``attempts`` times (default: the client's retries + 1). Returns the bytes sent.
        """
        context = f'copying blob {desc.digest.short()} to "{dst.name}"'
        attempts = attempts or self.retries + 1
        for attempt in range(attempts):
            sent = [0]
            try:
                loc = location if (location and attempt == 0) else self.start_upload(dst)
                assert loc is not None
                chunks, close = opener()
                try:
                    body = _verified(chunks, desc, origin, sent, progress)
                    self._finish_upload(dst, loc, desc.digest, body, desc.size, context)
                finally:
                    close()
                return sent[0]
            except RequestFailed as e:
                if not e.temporary or attempt == attempts - 1:
                    raise
                if progress and sent[0]:
                    progress(-sent[0])
                log.debug("%s: %s; starting again", context, e)
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ for the stores (archlift.oci.store)
    def blob_chunks(self, repo: ImageRef, desc: Descriptor) -> tuple[Iterable[bytes], Callable[[], None]]:
        """The blob's bytes as they arrive, and the function that ends the answer: what a store's
        ``blob`` opener gives the copy (``open_blob``'s bounds: a length other than the descriptor's
        size is refused before the body is read, more bytes stop the read; a read that breaks is a
        temporary ``RequestFailed``, and the copy starts the blob again). Check the bytes with
        ``verified_chunks``."""
        reader = self.open_blob(repo, desc)
        return reader.chunks(), reader.release


def verified_chunks(
    chunks: Iterable[bytes], desc: Descriptor, origin: str, progress: Callable[[int], None] | None = None
) -> Iterator[bytes]:
    """``chunks`` checked against ``desc`` as they pass, the last one held back until the size and
    digest match (``DigestMismatch`` otherwise; more bytes than the size stop the read at once):
    what a store writes a blob through, so a wrong one is never committed."""
    return _verified(chunks, desc, origin, [0], progress)


def _verified(
    chunks: Iterable[bytes],
    desc: Descriptor,
    origin: str,
    sent: list[int],
    progress: Callable[[int], None] | None,
) -> Iterator[bytes]:
    """``chunks``, with the last one held back until the digest and size check,
    so a wrong blob is never committed by the target."""
    h = hashlib.new(desc.digest.algorithm)
    held: bytes | None = None
    total = 0
    try:
        for chunk in chunks:
            if not chunk:
                continue
            h.update(chunk)
            total += len(chunk)
            if total > desc.size:
                break
            if held is not None:
                yield held
                sent[0] += len(held)
                if progress:
                    progress(len(held))
            held = chunk
    except OSError as e:  # reading a local file (a bundle)
        raise RequestFailed(
            f"reading blob {desc.digest.short()} from {origin}: {e.__class__.__name__}", temporary=True
        ) from None
    if total < desc.size:  # the connection ended early: try again
        raise RequestFailed(
            f"reading blob {desc.digest.short()} from {origin}: the connection closed after {total} of "
            f"{desc.size} bytes",
            temporary=True,
        )
    actual = f"{desc.digest.algorithm}:{h.hexdigest()}"
    if total != desc.size or actual != desc.digest.value:
        size = f"{total} bytes" if total <= desc.size else f"more than {desc.size} bytes"
        raise DigestMismatch(
            f"blob {desc.digest} from {origin}: got {size} with digest {actual}, expected {desc.size} bytes",
            expected=desc.digest,
            actual=actual,
        )
    if held is not None:
        yield held
        sent[0] += len(held)
        if progress:
            progress(len(held))


def cosign_tag_of(tag: str) -> Digest | None:
    """The digest a cosign/referrers-fallback tag (``sha256-<hex>[.sig|.att|.sbom]``) points at."""
    m = _COSIGN_TAG.fullmatch(tag)
    return Digest("sha256:" + m.group(1)) if m else None


def chunks_of(data: bytes, size: int = CHUNK) -> Iterable[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))
