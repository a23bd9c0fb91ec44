"""The registry client's rules against hostile servers of our own (``tests/hostile.py``) and the
real distribution server, on loopback: proxies (a CONNECT proxy that resolves names the client
cannot, as a corporate proxy does), credentials that stay with their origin (redirects, upload
locations, token realms), CA files that add to the system's roots, validated manifests and
descriptors, bounded index walks and tag pagination, and the ASCII reference grammar."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import tarfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.cli import run_archlift
from support.hostile import CLOSE, ConnectProxy, HostileServer, Request, tls_context
from support.images import push_image
from support.registry import LocalRegistry

from archlift.errors import ConfigError, RegistryError
from archlift.lock import ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, Descriptor, InvalidAnswer, Manifest, RegistryClient, auth
from archlift.oci.http import USER_AGENT
from archlift.oci.model import InvalidManifest
from archlift.oci.walk import TreeError, walk
from archlift.refs import Digest, ImageRef, RefError

CONFIG = {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(b"{}")), "size": 2}
PROXY_VARS = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy", "ALL_PROXY")


def image_manifest(**extra: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": CONFIG, "layers": [], **extra}).encode()


def serve_manifests(server: HostileServer, repo: str, manifests: dict[str, bytes]) -> None:
    """``/v2/<repo>/manifests/<tag or digest>``; each manifest also by its digest."""
    by_ref = dict(manifests)
    for raw in manifests.values():
        by_ref[str(Digest.of(raw))] = raw

    def handle(req: Request) -> None:
        ref = req.path.rsplit("/", 1)[1]
        raw = by_ref.get(ref)
        if raw is None:
            req.json(404, {"errors": [{"code": "MANIFEST_UNKNOWN"}]})
            return
        mt = json.loads(raw).get("mediaType", OCI_MANIFEST) if raw.startswith(b"{") else OCI_MANIFEST
        req.reply(200, raw, {"Content-Type": mt, "Docker-Content-Digest": str(Digest.of(raw))})

    server.routes[f"/v2/{repo}/manifests/"] = handle


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No proxy and no credential variables from this machine; an empty docker config."""
    for name in (*PROXY_VARS, "ARCHLIFT_REGISTRY_HOST", "ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    for name in list(os.environ):
        if name.startswith("ARCHLIFT_AUTH_"):
            monkeypatch.delenv(name)
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return config


@pytest.fixture
def server(clean_env: Path) -> Iterator[HostileServer]:
    with HostileServer() as s:
        yield s


def basic_protected(answer: object) -> object:
    def handle(req: Request) -> object:
        if req.headers.get("authorization") != "Basic " + base64.b64encode(b"u:secret").decode():
            req.reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'})
            return None
        return answer(req)  # type: ignore[operator]

    return handle


# ---------------------------------------------------------------------- a world behind a proxy
@dataclass
class World:
    proxy: ConnectProxy
    registry: HostileServer  # registry.test (https)
    auth: HostileServer  # auth.test (https): a token service
    storage: HostileServer  # storage.test (plain http): a blob store
    ca: Path


@pytest.fixture(params=["upper", "lower"])
def world(
    request: pytest.FixtureRequest, clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    """registry.test, auth.test (TLS, one CA) and storage.test (plain HTTP), reachable only through
    a CONNECT proxy that resolves their names; HTTPS_PROXY/HTTP_PROXY/NO_PROXY set (upper or lower case)."""
    ctx, ca = tls_context(tmp_path / "tls", ("registry.test", "auth.test"))
    with HostileServer(tls=ctx) as reg, HostileServer(tls=ctx) as authsrv, HostileServer() as storage:
        proxy = ConnectProxy(
            {"registry.test:443": reg.host, "auth.test:443": authsrv.host, "storage.test:80": storage.host}
        )
        names = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
        for name in names:
            value = {"NO_PROXY": "direct.test,.internal.test"}.get(name, proxy.url)
            monkeypatch.setenv(name if request.param == "upper" else name.lower(), value)
        try:
            yield World(proxy, reg, authsrv, storage, ca)
        finally:
            proxy.close()


def test_registry_and_token_requests_go_through_the_proxy_and_no_proxy_hosts_do_not(
    world: World, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.env_name("registry.test"), "u:secret")
    tokens: list[str] = []

    def token(req: Request) -> None:
        tokens.append(req.headers.get("authorization", ""))
        req.json(200, {"token": "tok-1"})

    def tags(req: Request) -> None:
        if req.headers.get("authorization") != "Bearer tok-1":
            realm = 'Bearer realm="https://auth.test/token",service="registry.test"'
            req.reply(401, b"{}", {"WWW-Authenticate": realm})
        else:
            req.json(200, {"name": "team/app", "tags": ["v1"]})

    world.auth.routes["/token"] = token
    world.registry.routes["/v2/team/app/tags/list"] = tags
    c = RegistryClient(ca_file=str(world.ca), retries=0, timeout=5)
    assert c.list_tags(ImageRef.parse("registry.test/team/app")) == ["v1"]
    assert {t.target for t in world.proxy.tunnels} == {"registry.test:443", "auth.test:443"}
    assert all(t.headers["user-agent"].startswith("archlift/") for t in world.proxy.tunnels)
    assert tokens == ["Basic " + base64.b64encode(b"u:secret").decode()]  # to the https realm only
    assert {s.headers["user-agent"] for s in world.auth.seen + world.registry.seen} == {USER_AGENT}
    assert c.transport.via_proxy >= 3
    with pytest.raises(RegistryError, match=r"the proxy 127\.0\.0\.1 did not open a tunnel to unknown\.test"):
        c.list_tags(ImageRef.parse("unknown.test/team/app"))  # a name the proxy cannot resolve either
    # NO_PROXY: straight to the host (which this machine cannot resolve), never to the proxy
    before = len(world.proxy.tunnels)
    for host in ("direct.test", "a.internal.test"):
        with pytest.raises(RegistryError, match=f"cannot connect to {host}.*no such host"):
            c.list_tags(ImageRef.parse(f"{host}/team/app"))
    # loopback is never proxied (as in Go: docker, skopeo, crane, oras)
    with HostileServer() as local:
        assert c.list_tags(ImageRef.parse(f"{local.host}/x")) == []
        assert local.seen
    assert len(world.proxy.tunnels) == before


def test_the_real_registry_through_a_connect_proxy(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Push and pull an image into the real distribution server under a name only the proxy resolves."""
    with LocalRegistry(tls=True, tls_hosts=("registry.test",), log_level="error") as reg:
        name = f"registry.test:{reg.port}"
        proxy = ConnectProxy({name: reg.host})
        try:
            monkeypatch.setenv("HTTPS_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "localhost")
            c = RegistryClient(ca_file=str(reg.ca_file), timeout=10)
            img = push_image(c, ImageRef.parse(f"{name}/proxied/app:v1"), seed=5)
            assert c.get_manifest(img.pinned).digest == img.index
            assert reg.manifest_digest("proxied/app", "v1") == img.index
            assert proxy.tunnels and {t.target for t in proxy.tunnels} == {name}
            assert reg.count("PUT", r"/v2/proxied/app/manifests/") >= 3
        finally:
            proxy.close()


def test_an_http_token_realm_is_refused_by_name_and_gets_no_credentials(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(auth.env_name("registry.test"), "u:secret")
    realm = "http://storage.test/token"
    world.registry.routes["/v2/"] = lambda req: req.reply(
        401, b"{}", {"WWW-Authenticate": f'Bearer realm="{realm}",service="registry.test"'}
    )
    c = RegistryClient(ca_file=str(world.ca), retries=0, timeout=5)
    with pytest.raises(InvalidAnswer) as e:
        c.list_tags(ImageRef.parse("registry.test/team/app"))
    text = e.value.render()
    assert realm in text and "not an https:// URL" in text and "sent no credentials" in text
    assert e.value.exit_code == 2
    assert not world.storage.seen and not world.proxy.forwarded
    # a loopback registry may use a plain-HTTP realm (it may use plain HTTP itself)
    with HostileServer() as local, HostileServer() as tokens:
        tokens.routes["/token"] = lambda req: req.json(200, {"token": "t"})
        local.routes["/v2/a/"] = lambda req: (
            req.json(200, {"tags": []})
            if req.headers.get("authorization") == "Bearer t"
            else req.reply(401, b"{}", {"WWW-Authenticate": f'Bearer realm="http://{tokens.host}/token"'})
        )
        assert c.list_tags(ImageRef.parse(f"{local.host}/a")) == []


def test_a_redirect_to_plain_http_is_refused_unless_the_host_may_use_it(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """registry.test (https) sends a blob GET to http://storage.test: refused; with --insecure
    it is followed (through the proxy), without the registry's credentials."""
    monkeypatch.setenv(auth.env_name("registry.test"), "u:secret")
    data = b"stored elsewhere"
    d = Digest.of(data)
    world.registry.routes["/v2/a/blobs/"] = basic_protected(
        lambda req: req.reply(307, b"", {"Location": f"http://storage.test/data/{d.hex}"})
    )
    world.storage.routes["/data/"] = lambda req: req.reply(200, data)
    repo = ImageRef.parse("registry.test/a")
    secure = RegistryClient(ca_file=str(world.ca), retries=0, timeout=5)
    with pytest.raises(
        InvalidAnswer, match=r"refusing the redirect from registry\.test in plain HTTP to storage\.test"
    ):
        secure.get_blob(repo, d)
    assert not world.storage.seen
    insecure = RegistryClient(insecure=True, retries=0, timeout=5)
    assert insecure.get_blob(repo, d) == data
    assert world.storage.seen and not any(s.authorization for s in world.storage.seen)
    assert [t.target for t in world.proxy.forwarded] == [f"http://storage.test/data/{d.hex}"]


def test_credentials_never_follow_a_redirect_or_an_upload_to_another_origin(
    server: HostileServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another port is another origin: a blob redirect and an upload location there get no
    credentials; an upload location in plain HTTP to a host that may not use it is refused."""
    monkeypatch.setenv(auth.env_name(server.host), "u:secret")
    data = b"blob"
    d = Digest.of(data)
    with HostileServer() as other:
        server.routes["/v2/a/blobs/uploads/"] = basic_protected(
            lambda req: req.reply(202, b"", {"Location": f"http://{other.host}/upload/1?state=x"})
        )
        server.routes["/v2/a/blobs/sha256:"] = basic_protected(
            lambda req: req.reply(302, b"", {"Location": f"http://{other.host}/blob"})
        )
        other.routes["/upload/"] = lambda req: req.reply(201)
        other.routes["/blob"] = lambda req: req.reply(200, data)
        c = RegistryClient(docker_config=str(tmp_path), retries=0, timeout=5)
        repo = ImageRef.parse(f"{server.host}/a")
        assert c.put_blob(repo, data) == d
        assert c.get_blob(repo, d) == data
        assert [s.method for s in other.seen] == ["PUT", "GET"]
        assert not any(s.authorization for s in other.seen)
        assert any(s.authorization for s in server.api())
        server.routes["/v2/a/blobs/uploads/"] = basic_protected(
            lambda req: req.reply(202, b"", {"Location": "http://storage.example/upload/1"})
        )
        with pytest.raises(InvalidAnswer, match=r"refusing the upload in plain HTTP to storage\.example"):
            c.put_blob(repo, data)


def test_a_ca_file_adds_to_the_system_roots(clean_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two TLS registries: one signed by a CA standing for the system's roots (SSL_CERT_FILE), one by
    the CA given with --ca-file. The client trusts both: the CA file adds, it does not replace."""
    ctx_sys, system_ca = tls_context(tmp_path / "system", ("127.0.0.1",))
    ctx_own, own_ca = tls_context(tmp_path / "own", ("127.0.0.1",))
    monkeypatch.setenv("SSL_CERT_FILE", str(system_ca))
    with HostileServer(tls=ctx_sys) as public, HostileServer(tls=ctx_own) as private:
        c = RegistryClient(ca_file=str(own_ca), retries=0, timeout=5)
        for s in (public, private):
            assert c.list_tags(ImageRef.parse(f"{s.host}/a")) == []
            assert c.scheme(s.host) == "https"
        with pytest.raises(RegistryError, match=r"TLS certificate of .* does not verify"):
            RegistryClient(retries=0, timeout=5).list_tags(ImageRef.parse(f"{private.host}/a"))


# ---------------------------------------------------------------------- validated answers
BAD = {
    "a digest that is not one": {"digest": "sha256:1234"},
    "an md5 digest": {"digest": "md5:" + "0" * 32},
    "upper-case hex": {"digest": "sha256:" + "A" * 64},
    "a negative size": {"size": -1},
    "a size that is a string": {"size": "2"},
    "a size that is a float": {"size": 2.5},
    "a size that is a boolean": {"size": True},
    "a media type that is a number": {"mediaType": 7},
    "no digest": {"digest": None},
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_descriptors_are_an_error_naming_the_image(server: HostileServer, case: str) -> None:
    config = {k: v for k, v in {**CONFIG, **BAD[case]}.items() if v is not None}
    serve_manifests(server, "a", {"v1": image_manifest(config=config)})
    c = RegistryClient(retries=0, timeout=5)
    with pytest.raises(InvalidAnswer) as e:
        c.get_manifest(ImageRef.parse(f"{server.host}/a:v1"))
    text = e.value.render()
    assert f'fetching "{server.host}/a:v1": the registry sent an invalid manifest: config.' in text
    assert "\n" not in e.value.message and e.value.exit_code == 2


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
        (b"not json", "not valid JSON"),
        (b"[]", "not a JSON object"),
        (b'{"schemaVersion": 1}', "schemaVersion is 1"),
        (json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": {}}).encode(), "manifests is not a list"),
        (
            json.dumps(
                {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [{"mediaType": OCI_MANIFEST}]}
            ).encode(),
            "manifests[0].digest is missing",
        ),
        (image_manifest(layers=[{**CONFIG, "annotations": {"a": 1}}]), "layers[0].annotations is not an object"),
        (image_manifest(config=None), "config is not a JSON object"),
    ],
)
def test_malformed_manifests_are_refused(server: HostileServer, raw: bytes, why: str) -> None:
    serve_manifests(server, "a", {"v1": raw})
    with pytest.raises(InvalidAnswer, match=re.escape(why)):
        RegistryClient(retries=0, timeout=5).get_manifest(ImageRef.parse(f"{server.host}/a:v1"))


def chain(depth: int) -> list[bytes]:
    """An image manifest under ``depth`` nested indexes; the top last."""
    out = [image_manifest()]
    for _ in range(depth):
        child = out[-1]
        kind = OCI_MANIFEST if len(out) == 1 else OCI_INDEX
        entry = {"mediaType": kind, "digest": str(Digest.of(child)), "size": len(child)}
        out.append(json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode())
    return out


def test_index_trees_are_walked_without_recursion_and_with_a_depth_limit(server: HostileServer) -> None:
    deep, ok = chain(12), chain(8)
    serve_manifests(server, "a", {"deep": deep[-1], "ok": ok[-1], **{str(n): m for n, m in enumerate(deep + ok)}})
    c = RegistryClient(retries=0, timeout=5)
    repo = ImageRef.parse(f"{server.host}/a")

    def fetch(d: Digest) -> Manifest:
        return c.get_manifest(repo.with_digest(d))

    tree = walk(fetch, c.get_manifest(repo.with_tag("ok")))  # 8 levels: fine
    assert len(tree.manifests) == 9 and tree.manifests[-1].digest == Digest.of(chain(8)[-1])
    with pytest.raises(TreeError, match="nested more than 8 levels deep") as e:
        walk(fetch, c.get_manifest(repo.with_tag("deep")))
    assert e.value.exit_code == 2
    fetched = sum(1 for s in server.api() if "/manifests/sha256:" in s.path)
    assert fetched <= 8 + 8  # it stopped at the limit
    # no recursion: a chain far deeper than Python's stack, when the limit allows it
    long = chain(3000)
    by_digest = {Digest.of(m): Manifest.of(m) for m in long}
    walked = walk(by_digest.__getitem__, by_digest[Digest.of(long[-1])], max_depth=5000)
    assert len(walked.manifests) == 3001 and len(walked.blobs) == 1
    with pytest.raises(TreeError, match="more than 100 manifests"):
        walk(by_digest.__getitem__, by_digest[Digest.of(long[-1])], max_depth=5000, max_manifests=100)
    wrong = json.loads(long[1])
    wrong["manifests"][0]["size"] += 1
    liar = Manifest.of(json.dumps(wrong).encode())
    with pytest.raises(TreeError, match="its index says"):
        walk(by_digest.__getitem__, liar)


def test_tag_pagination_stops_on_a_repeated_link_and_after_a_bound(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import archlift.oci.client as client_mod

    c = RegistryClient(retries=0, timeout=5)
    repo = ImageRef.parse(f"{server.host}/a")
    server.routes["/v2/a/tags/list"] = lambda req: req.json(
        200, {"tags": ["t"]}, {"Link": '</v2/a/tags/list?n=1000>; rel="next"'}
    )
    with pytest.raises(InvalidAnswer, match=r"next-page link .* repeats"):
        c.list_tags(repo)
    pages = [0]

    def endless(req: Request) -> None:
        pages[0] += 1
        req.json(200, {"tags": [f"t{pages[0]}"]}, {"Link": f'</v2/a/tags/list?last=t{pages[0]}>; rel="next"'})

    server.routes["/v2/a/tags/list"] = endless
    monkeypatch.setattr(client_mod, "MAX_TAG_PAGES", 30)
    with pytest.raises(InvalidAnswer, match="more than 30 pages of tags"):
        c.list_tags(repo)
    assert pages[0] == 30
    server.routes["/v2/a/tags/list"] = lambda req: req.json(
        200, {"tags": ["t"]}, {"Link": '<https://elsewhere.example/v2/a/tags/list?x>; rel="next"'}
    )
    with pytest.raises(InvalidAnswer, match="the next page is on another host"):
        c.list_tags(repo)
    server.routes["/v2/a/tags/list"] = lambda req: req.json(200, {"tags": ["v1", "vé"]})
    with pytest.raises(InvalidAnswer, match="'vé', which is not a tag"):
        c.list_tags(repo)


def test_an_invalid_digest_header_is_an_error(server: HostileServer) -> None:
    server.routes["/v2/a/manifests/"] = lambda req: req.reply(
        200, b"", {"Docker-Content-Digest": "sha256:nope", "Content-Type": OCI_MANIFEST}
    )
    with pytest.raises(InvalidAnswer, match="Docker-Content-Digest is not valid"):
        RegistryClient(retries=0).head_manifest(ImageRef.parse(f"{server.host}/a:v1"))


# ---------------------------------------------------------------------- the ASCII grammar
@pytest.mark.parametrize("tag", ["vé", "v1\n", "٣", "v1\u200b", ".hidden", "-x", "a" * 129, "v 1"])
def test_the_reference_grammar_is_ascii(tag: str) -> None:
    with pytest.raises(RefError):
        ImageRef.parse(f"registry.example/app:{tag}")
    with pytest.raises(RefError):
        Digest.parse("sha256:" + "a" * 64 + "\n")
    assert ImageRef.parse("registry.example/app:v1.2_rc-3").tag == "v1.2_rc-3"


def write_lock(path: Path, repository: str, index: Digest, tags: list[str]) -> Path:
    """A release lock of one component, ``app`` (no platforms recorded)."""
    app = {"name": "app", "kind": "built", "repository": repository, "index_digest": str(index)}
    path.write_text(json.dumps({"schema_version": 1, "components": {"app": {**app, "platforms": {}, "tags": tags}}}))
    return path


def test_a_lock_with_a_non_ascii_tag_is_refused(tmp_path: Path) -> None:
    path = write_lock(tmp_path / "release.json", "127.0.0.1:1/app", Digest.of(b"x"), ["v1", "vé"])
    with pytest.raises(ConfigError, match="tag 'vé' is not a valid tag"):
        ReleaseLock.read(path)
    out = run_archlift("mirror", "--to", "127.0.0.1:1/m", "--lock", str(path), "--no-artifacts", cwd=tmp_path)
    assert out.returncode == 2
    assert "tag 'vé' is not a valid tag" in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2  # the message, and its hint


def make_bundle(path: Path, tag: str) -> None:
    """The smallest bundle ``open_bundle`` reads: a lock, an index naming one manifest with ``tag``."""
    manifest = image_manifest()
    entry = {
        "mediaType": OCI_MANIFEST,
        "digest": str(Digest.of(manifest)),
        "size": len(manifest),
        "annotations": {"org.opencontainers.image.ref.name": tag, "io.archlift.component": "app"},
    }
    files = {
        "oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
        "index.json": json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode(),
        "archlift/release.json": ReleaseLock(components={}).to_json().encode(),
    }
    sums = "".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()).encode()
    files |= {f"blobs/sha256/{Digest.of(manifest).hex}": manifest, "SHA256SUMS": sums}
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_a_bundle_with_a_non_ascii_tag_is_refused(tmp_path: Path) -> None:
    from archlift.steps.airgap import open_bundle

    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    make_bundle(good, "v1")
    make_bundle(bad, "vé")
    with pytest.raises(ConfigError, match="it lacks blobs/sha256/"):  # the tag passes; the tree is resolved next
        open_bundle(good)
    with pytest.raises(ConfigError, match="'vé' is not a valid tag"):
        open_bundle(bad)
    out = run_archlift("import", str(bad), "--to", "127.0.0.1:1", cwd=tmp_path)
    assert out.returncode == 2 and "'vé' is not a valid tag" in out.stderr and "Traceback" not in out.stderr


def test_invalid_manifest_values_raise_invalid_manifest() -> None:
    with pytest.raises(InvalidManifest, match="mediaType is missing"):
        Descriptor.from_json({"digest": str(Digest.of(b"")), "size": 0})
    assert Descriptor.from_json({"mediaType": "x", "digest": "sha512:" + "a" * 128, "size": 0}).size == 0


# ---------------------------------------------------------------------- through the command line
def test_the_cli_gives_one_paragraph_for_hostile_answers_and_a_usage_error_for_bad_options(
    server: HostileServer, tmp_path: Path, registry: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = image_manifest(config={**CONFIG, "size": -5})
    serve_manifests(server, "app", {"v1": bad})
    write_lock(tmp_path / "release.json", f"{server.host}/app", Digest.of(bad), ["v1"])
    args = ("mirror", "--to", f"{registry.host}/hostile", "--lock", "release.json", "--no-artifacts")
    out = run_archlift(*args, "--timeout", "2", cwd=tmp_path)
    assert out.returncode == 8, out.stderr
    assert "config.size '-5' is not a non-negative integer" in out.stderr and "Traceback" not in out.stderr
    server.routes["/v2/app/manifests/"] = lambda req: (time.sleep(30), CLOSE)[1]
    slow = run_archlift(*args, "--timeout", "0.5", cwd=tmp_path)
    assert slow.returncode == 8 and "within 0.5 s (--timeout)" in slow.stderr and "Traceback" not in slow.stderr
    for value in ("0", "abc"):
        assert run_archlift(*args, "--timeout", value, cwd=tmp_path).returncode == 2
    monkeypatch.setenv("ARCHLIFT_REGISTRY_USERNAME", "someone")
    monkeypatch.setenv("ARCHLIFT_REGISTRY_PASSWORD", "pw")
    amb = run_archlift(*args, cwd=tmp_path)
    assert amb.returncode == 2 and "ARCHLIFT_REGISTRY_HOST" in amb.stderr and "pw" not in amb.stderr.split(":", 2)[-1]
    for command in ("mirror", "export", "import", "verify", "build", "audit"):
        assert "--timeout" in run_archlift(command, "--help", cwd=tmp_path).stdout
