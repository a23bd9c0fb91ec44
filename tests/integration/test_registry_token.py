"""The bearer token flow against the real distribution server configured for
token auth, with a small token service on loopback that signs RS256 JWTs with
the openssl CLI (the x5c certificate is the registry's root of trust)."""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import support.images as h
import urllib3
import yaml
from support.images import assert_same, make_release, release_lock
from support.registry import LocalRegistry

from archlift.errors import PublishError
from archlift.localenv import free_port
from archlift.oci import RegistryClient, RequestFailed, auth
from archlift.refs import ImageRef
from archlift.steps.mirror import Target, check, mirror, plan_mirror
from archlift.steps.publish import parse_target, publish

no_docker_config = h.no_docker_config
SERVICE = "archlift-test-registry"
ISSUER = "archlift-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass
class TokenService:
    url: str
    username: str
    password: str
    requests: list[tuple[str, list[str]]]  # (account, scopes)


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenService]]:
    work = tmp_path_factory.mktemp("token-registry")
    key, cert = work / "key.pem", work / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=archlift-token-signer",
        ],
        check=True,
        capture_output=True,
    )
    der = subprocess.run(["openssl", "x509", "-in", str(cert), "-outform", "DER"], check=True, capture_output=True)
    x5c = base64.b64encode(der.stdout).decode()
    service = TokenService("", "robot", secrets.token_urlsafe(10), [])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            expected = "Basic " + base64.b64encode(f"{service.username}:{service.password}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            scopes = query.get("scope", [])
            service.requests.append((query.get("account", [""])[0], scopes))
            access = []
            for scope in scopes:
                kind, name, actions = scope.split(":")
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
            now = int(time.time())
            header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
            claims = {
                "iss": ISSUER,
                "sub": service.username,
                "aud": SERVICE,
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": access,
            }
            signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
            sig = subprocess.run(
                ["openssl", "dgst", "-sha256", "-sign", str(key)],
                input=signing_input.encode(),
                check=True,
                capture_output=True,
            ).stdout
            body = json.dumps({"token": f"{signing_input}.{_b64(sig)}", "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    service.url = f"http://127.0.0.1:{server.server_address[1]}/token"
    port = free_port()
    config = {
        "version": 0.1,
        "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(work / "storage")}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(8)},
        "auth": {"token": {"realm": service.url, "service": SERVICE, "issuer": ISSUER, "rootcertbundle": str(cert)}},
    }
    (work / "config.yml").write_text(yaml.safe_dump(config))
    with (work / "registry.log").open("wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [shutil.which("docker-registry") or "docker-registry", "serve", str(work / "config.yml")],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    pool = urllib3.PoolManager(retries=False)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                if pool.request("GET", f"http://127.0.0.1:{port}/v2/", timeout=1).status == 401:
                    break
            except urllib3.exceptions.HTTPError:
                pass
            time.sleep(0.05)
        else:
            raise RuntimeError((work / "registry.log").read_text())
        yield f"127.0.0.1:{port}", service
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        server.shutdown()
        server.server_close()


@pytest.fixture
def logged_in(
    token_registry: tuple[str, TokenService], no_docker_config: None, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, TokenService]:
    """The token registry, with its robot's credentials in ARCHLIFT_AUTH_<HOST>."""
    host, service = token_registry
    monkeypatch.setenv(auth.env_name(host), f"{service.username}:{service.password}")
    return token_registry


def test_bearer_tokens_against_distribution(
    logged_in: tuple[str, TokenService], monkeypatch: pytest.MonkeyPatch
) -> None:
    host, service = logged_in
    c = RegistryClient()
    ref = ImageRef.parse(f"{host}/team/app")
    digest = c.put_blob(ref, b"through a bearer token")
    assert c.get_blob(ref, digest) == b"through a bearer token"
    assert c.blob_exists(ref, digest)
    # a mount asks for a token with two scopes at once
    other = ImageRef.parse(f"{host}/team/other")
    assert c.start_upload(other, mount=digest, mount_from=ref) is None
    assert any(len(scopes) == 2 for _, scopes in service.requests)
    assert all(account == service.username for account, _ in service.requests)
    asked = len(service.requests)
    c.get_blob(ref, digest)
    assert len(service.requests) == asked  # cached per scope
    monkeypatch.setenv(auth.env_name(host), f"{service.username}:wrong")
    with pytest.raises(RequestFailed, match=r"token service 127\.0\.0\.1:\d+ refused the credentials") as e:
        RegistryClient().get_blob(ref, digest)
    assert "wrong" not in e.value.render()


def test_mirror_into_token_registry(logged_in: tuple[str, TokenService]) -> None:
    host, _ = logged_in
    with LocalRegistry() as source:
        client = RegistryClient()
        images = make_release(client, source, n=2)
        result = mirror(plan_mirror(release_lock(images), Target.parse(f"{host}/m")), client, jobs=4)
        check(result)
        assert sum(i.blobs_mounted for i in result.images) >= 1  # the shared layer, mounted with a 2-scope token
        assert_same(client, images, host, "m")


def test_ping_names_the_scheme_and_the_challenge(
    token_registry: tuple[str, TokenService], registry: LocalRegistry, auth_registry: LocalRegistry
) -> None:
    host, _ = token_registry
    c = RegistryClient(ca_file=str(auth_registry.ca_file))
    assert (c.ping(host), c.scheme(host)) == ("bearer", "http")
    assert (c.ping(registry.host), c.scheme(registry.host)) == ("", "http")
    assert (c.ping(auth_registry.host), c.scheme(auth_registry.host)) == ("basic", "https")
    assert c.tls_verify(auth_registry.host) == str(auth_registry.ca_file)
    assert RegistryClient(insecure=True).tls_verify(auth_registry.host) is False


def test_publish_into_token_registry(logged_in: tuple[str, TokenService], tmp_path: Path) -> None:
    host, service = logged_in
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n")
    pub = publish(tmp_path, parse_target(f"{host}/team/manifests:v1"))
    assert [a.pushed for a in pub.artifacts] == [True, True]
    c = RegistryClient()
    for a in pub.artifacts:
        assert c.head_manifest(a.ref.with_tag(a.ref.tag or "")) is not None
        assert c.get_manifest(a.ref).digest == a.ref.digest
    assert any("repository:team/manifests:pull,push" in s for _, scopes in service.requests for s in scopes)


def test_publish_with_refused_token_credentials(
    token_registry: tuple[str, TokenService], no_docker_config: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    host, service = token_registry
    monkeypatch.setenv(auth.env_name(host), f"{service.username}:not-the-password")
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: demo\n")
    with pytest.raises(
        PublishError, match=f"the token service 127.0.0.1:.* refused the credentials from {auth.env_name(host)}"
    ) as e:
        publish(tmp_path, parse_target(f"{host}/team/manifests:v2"))
    assert "not-the-password" not in str(e.value) + e.value.hint
