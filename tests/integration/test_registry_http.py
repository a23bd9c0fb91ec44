"""The client's HTTP behaviour against a small scripted server on loopback:
retries (429 + Retry-After, 5xx, resets), the bearer token flow, redirects,
and that secrets stay out of messages."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from archlift.errors import RegistryError as RegistryError_
from archlift.oci import Descriptor, RegistryClient, RequestFailed, auth
from archlift.refs import Digest, ImageRef

Handler = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    """A server whose answers come from ``routes``: path prefix -> handler."""

    def __init__(self) -> None:
        self.routes: dict[str, Handler] = {}
        self.seen: list[tuple[str, str, str]] = []  # method, path, Authorization (API requests)
        self.probes = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _any(self) -> None:
                if (self.command, self.path) == ("GET", "/v2/"):
                    outer.probes += 1  # the client's first, plain-HTTP contact with a loopback host
                else:
                    outer.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
                length = int(self.headers.get("Content-Length") or 0)
                self.body = self.rfile.read(length) if length else b""
                for prefix in sorted(outer.routes, key=len, reverse=True):
                    if self.path.startswith(prefix):
                        outer.routes[prefix](self)
                        return
                reply(self, 404, b'{"errors":[{"code":"NOT_FOUND","message":"nope"}]}')

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def reply(h: BaseHTTPRequestHandler, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


@pytest.fixture
def server() -> Iterator[Scripted]:
    s = Scripted()
    yield s
    s.close()


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegistryClient]:
    for name in ("ARCHLIFT_REGISTRY_HOST", "ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    c = RegistryClient(docker_config=str(tmp_path), backoff=0.01, retries=4)
    yield c
    c.close()


def sequence(*steps: Handler) -> Handler:
    """Answer the n-th request with the n-th step (the last one repeats)."""
    calls = [0]

    def handle(h: BaseHTTPRequestHandler) -> None:
        i = min(calls[0], len(steps) - 1)
        calls[0] += 1
        steps[i](h)

    return handle


def blob_ok(data: bytes) -> Handler:
    return lambda h: reply(h, 200, data, {"Content-Type": "application/octet-stream"})


def test_retries_429_with_retry_after_and_5xx(server: Scripted, client: RegistryClient) -> None:
    data = b"hello"
    d = Digest.of(data)
    server.routes[f"/v2/a/blobs/{d}"] = sequence(
        lambda h: reply(h, 429, headers={"Retry-After": "0"}),
        lambda h: reply(h, 503),
        lambda h: reply(h, 502),
        blob_ok(data),
    )
    assert client.get_blob(ImageRef.parse(f"{server.host}/a"), d) == data
    assert sum(1 for m, p, _ in server.seen if p.startswith("/v2/a/blobs")) == 4


def test_retries_are_bounded(server: Scripted, client: RegistryClient) -> None:
    server.routes["/v2/a/blobs/"] = lambda h: reply(h, 500, b"boom")
    d = Digest.of(b"x")
    with pytest.raises(RequestFailed, match="HTTP 500") as e:
        client.get_blob(ImageRef.parse(f"{server.host}/a"), d)
    assert e.value.temporary
    assert len(server.seen) == 1 + 4  # first try + retries
    assert server.probes == 1  # GET /v2/ once, in plain HTTP: the host speaks it


def test_no_retry_on_client_errors(server: Scripted, client: RegistryClient) -> None:
    server.routes["/v2/a/manifests/"] = lambda h: reply(
        h, 400, b'{"errors":[{"code":"MANIFEST_INVALID","message":"bad"}]}'
    )
    with pytest.raises(RequestFailed, match=r'fetching ".*/a:v1": HTTP 400 \(MANIFEST_INVALID: bad\)'):
        client.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    assert len(server.seen) == 1


def test_reset_connection_is_retried(server: Scripted, client: RegistryClient) -> None:
    data = b"after a reset"
    d = Digest.of(data)

    def reset(h: BaseHTTPRequestHandler) -> None:
        h.close_connection = True
        h.connection.shutdown(2)

    server.routes[f"/v2/a/blobs/{d}"] = sequence(reset, blob_ok(data))
    assert client.get_blob(ImageRef.parse(f"{server.host}/a"), d) == data


def test_head_manifest_404_is_none_and_digest_is_verified(server: Scripted, client: RegistryClient) -> None:
    assert client.head_manifest(ImageRef.parse(f"{server.host}/a:missing")) is None
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": str(Digest.of(b"{}")), "size": 2},
            "layers": [],
        }
    ).encode()
    server.routes["/v2/a/manifests/"] = lambda h: reply(
        h, 200, raw, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    )
    wrong = Digest("sha256:" + "0" * 64)
    with pytest.raises(RegistryError_, match="digest is sha256:"):
        client.get_manifest(ImageRef.parse(f"{server.host}/a").with_digest(wrong))
    m = client.get_manifest(ImageRef.parse(f"{server.host}/a").with_digest(Digest.of(raw)))
    assert m.media_type.endswith("manifest.v1+json")


def test_bearer_flow_caches_tokens_per_scope(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="archlift")
    monkeypatch.setenv(auth.env_name(server.host), "alice:wonderland")
    token_requests: list[str] = []

    def token(h: BaseHTTPRequestHandler) -> None:
        token_requests.append(h.path)
        assert h.headers["Authorization"] == "Basic " + base64.b64encode(b"alice:wonderland").decode()
        scope = h.path.split("scope=", 1)[1].split("&")[0]
        reply(h, 200, json.dumps({"token": f"tok-{scope}"}).encode())

    def protected(h: BaseHTTPRequestHandler) -> None:
        if not h.headers.get("Authorization", "").startswith("Bearer tok-"):
            realm = f"http://{server.host}/token"
            reply(h, 401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="test",scope="x"'})
            return
        reply(h, 200, json.dumps({"tags": ["v1"]}).encode())

    server.routes["/token"] = token
    server.routes["/v2/"] = protected
    c = RegistryClient(docker_config=str(tmp_path), backoff=0.01)
    repo = ImageRef.parse(f"{server.host}/team/app")
    assert c.list_tags(repo) == ["v1"]
    assert c.list_tags(repo) == ["v1"]
    assert c.list_tags(ImageRef.parse(f"{server.host}/team/other")) == ["v1"]
    assert len(token_requests) == 2  # one per repository scope
    assert "service=test" in token_requests[0] and "repository%3Ateam%2Fapp%3Apull" in token_requests[0]
    # after the first challenge the token for a new scope is fetched before asking
    assert sum(1 for _, p, a in server.seen if p.startswith("/v2/team/other") and not a) == 0
    assert "/token" in caplog.text and "alice" not in caplog.text and "tok-" not in caplog.text


def test_refused_credentials_never_leak(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="archlift")
    monkeypatch.setenv("ARCHLIFT_REGISTRY_HOST", server.host)
    monkeypatch.setenv("ARCHLIFT_REGISTRY_USERNAME", "bob")
    monkeypatch.setenv("ARCHLIFT_REGISTRY_PASSWORD", "topsecret-pw")
    server.routes["/v2/"] = lambda h: reply(h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'})
    c = RegistryClient(docker_config=str(tmp_path), backoff=0.01)
    with pytest.raises(RequestFailed) as e:
        c.list_tags(ImageRef.parse(f"{server.host}/a"))
    text = e.value.render()
    assert "refused the credentials from ARCHLIFT_REGISTRY_USERNAME" in text
    assert "topsecret" not in text and base64.b64encode(b"bob:topsecret-pw").decode() not in text
    assert e.value.status == 401
    assert caplog.text and "topsecret" not in caplog.text and "Basic" not in caplog.text


def test_no_credentials_message(server: Scripted, client: RegistryClient) -> None:
    server.routes["/v2/"] = lambda h: reply(h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'})
    with pytest.raises(RequestFailed, match="asks for credentials") as e:
        client.list_tags(ImageRef.parse(f"{server.host}/a"))
    assert auth.env_name(server.host) in e.value.hint and "ARCHLIFT_REGISTRY_HOST" in e.value.hint


def test_redirect_drops_authorization_for_other_hosts(
    server: Scripted, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = Scripted()
    try:
        data = b"stored elsewhere"
        d = Digest.of(data)
        monkeypatch.setenv("ARCHLIFT_REGISTRY_HOST", server.host)
        monkeypatch.setenv("ARCHLIFT_REGISTRY_USERNAME", "u")
        monkeypatch.setenv("ARCHLIFT_REGISTRY_PASSWORD", "p")

        def blobs(h: BaseHTTPRequestHandler) -> None:
            if not h.headers.get("Authorization"):
                reply(h, 401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'})
            else:
                reply(h, 307, b"", {"Location": f"http://{storage.host}/data/{d.hex}"})

        server.routes["/v2/a/blobs/"] = blobs
        storage.routes["/data/"] = blob_ok(data)
        c = RegistryClient(docker_config=str(tmp_path), backoff=0.01)
        assert c.get_blob(ImageRef.parse(f"{server.host}/a"), d) == data
        assert storage.seen and all(a == "" for _, _, a in storage.seen)
    finally:
        storage.close()


def test_tag_list_pagination(server: Scripted, client: RegistryClient) -> None:
    def tags(h: BaseHTTPRequestHandler) -> None:
        if "last=b" in h.path:
            reply(h, 200, json.dumps({"tags": ["c"]}).encode())
        else:
            reply(
                h, 200, json.dumps({"tags": ["a", "b"]}).encode(), {"Link": '</v2/a/tags/list?n=2&last=b>; rel="next"'}
            )

    server.routes["/v2/a/tags/list"] = tags
    assert client.list_tags(ImageRef.parse(f"{server.host}/a")) == ["a", "b", "c"]


def test_plain_http_refused_for_non_loopback() -> None:
    c = RegistryClient(retries=0, timeout=2)
    # nothing listens there; the point is the scheme: https only
    assert c.scheme("registry.invalid:5000") == "https"
    assert not c._may_use_http("registry.invalid:5000")
    assert RegistryClient(insecure=True)._may_use_http("registry.invalid:5000")


def test_mount_refused_gives_an_upload_location(server: Scripted, client: RegistryClient) -> None:
    """A registry that will not mount answers 202 with a session: the copy goes there."""
    server.routes["/v2/dst/blobs/uploads/"] = lambda h: reply(
        h, 202, b"", {"Location": "/v2/dst/blobs/uploads/u1?_state=x"}
    )
    d = Digest.of(b"x")
    loc = client.start_upload(
        ImageRef.parse(f"{server.host}/dst"), mount=d, mount_from=ImageRef.parse(f"{server.host}/src")
    )
    assert loc == f"http://{server.host}/v2/dst/blobs/uploads/u1?_state=x"
    method, path, _ = server.seen[-1]
    assert method == "POST" and f"mount={d}".replace(":", "%3A") in path and "from=src" in path


def test_copy_restarts_when_the_source_breaks_off_mid_blob(server: Scripted, client: RegistryClient) -> None:
    """A blob whose GET stops halfway (connection closed): the copy starts again, and only
    a complete, verified body is ever committed."""
    data = bytes(range(256)) * 12_000  # 3 MB: several chunks
    d = Digest.of(data)
    committed: list[bytes] = []

    def half(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data[: len(data) // 2])
        h.wfile.flush()
        h.close_connection = True
        h.connection.shutdown(2)

    def upload(h: BaseHTTPRequestHandler) -> None:
        if h.command == "POST":
            reply(h, 202, b"", {"Location": f"/v2/dst/blobs/uploads/{len(server.seen)}"})
        elif len(h.body) == int(h.headers["Content-Length"]):  # type: ignore[attr-defined]
            committed.append(h.body)  # type: ignore[attr-defined]
            reply(h, 201)
        else:  # a body cut short is never committed (as a registry does)
            reply(h, 400)

    server.routes[f"/v2/src/blobs/{d}"] = sequence(half, blob_ok(data))
    server.routes["/v2/dst/blobs/uploads/"] = upload
    sent = client.copy_blob(
        ImageRef.parse(f"{server.host}/src"), ImageRef.parse(f"{server.host}/dst"), Descriptor("x", d, len(data))
    )
    assert sent == len(data) and committed == [data]
    assert sum(1 for m, p, _ in server.seen if m == "GET" and p.startswith("/v2/src/blobs/")) == 2
