"""Pure tests of the registry client's parts: challenges, credentials, values."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from archlift.errors import RegistryError, UsageError
from archlift.oci import Descriptor, Manifest, auth, cosign_tag_of, is_loopback
from archlift.oci.client import _retry_after
from archlift.refs import Digest, Platform


def test_parse_bearer_challenge() -> None:
    c = auth.parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"'
    )
    assert c.scheme == "bearer"
    assert c.params == {
        "realm": "https://auth.example/token",
        "service": "registry.example",
        "scope": "repository:a/b:pull,push",
    }


def test_parse_basic_and_unquoted_and_escaped() -> None:
    assert auth.parse_challenge('Basic realm="archlift-local"') == auth.Challenge("basic", {"realm": "archlift-local"})
    c = auth.parse_challenge(r'Bearer realm=https://x/t, error="insufficient_scope", note="say \"hi\""')
    assert c.params["realm"] == "https://x/t"
    assert c.params["error"] == "insufficient_scope"
    assert c.params["note"] == 'say "hi"'


def test_env_name_spells_each_host_without_loss() -> None:
    assert auth.env_name("127.0.0.1:5000") == "ARCHLIFT_AUTH_127_0_0_1___5000"
    assert auth.env_name("registry.local") == "ARCHLIFT_AUTH_REGISTRY_LOCAL"
    assert auth.env_name("my-registry.example:5000") == "ARCHLIFT_AUTH_MY__REGISTRY_EXAMPLE___5000"
    # the old spelling gave these two hosts one name; now each has its own, and it reads back
    hosts = ["a.b:5000", "a-b:5000", "a--b.c", "a.b.c", "xn--bcher-kva.example", "localhost:80", "10.0.0.1"]
    names = [auth.env_name(h) for h in hosts]
    assert len(set(names)) == len(hosts)
    assert [auth.host_of(n) for n in names] == hosts
    assert auth.env_name("[::1]:5000") == ""  # no name for an IPv6 literal: the ARCHLIFT_REGISTRY_HOST pair
    for bad in ("ARCHLIFT_AUTH_A_____B", "ARCHLIFT_AUTH_127_0_0_1_5000", "ARCHLIFT_AUTH_", "ARCHLIFT_AUTH_A__"):
        assert auth.host_of(bad) is None, bad


def test_environment_credentials_name_exactly_one_host() -> None:
    pair = {"ARCHLIFT_REGISTRY_USERNAME": "g", "ARCHLIFT_REGISTRY_PASSWORD": "p"}
    on = auth.lookup("r.example:5000", None, {**pair, "ARCHLIFT_REGISTRY_HOST": "r.example:5000"})
    assert (on.username, on.password) == ("g", "p") and "ARCHLIFT_REGISTRY_HOST=r.example:5000" in on.source
    assert not auth.lookup("other.example", None, {**pair, "ARCHLIFT_REGISTRY_HOST": "r.example:5000"})
    assert not auth.lookup("r.example", None, {**pair, "ARCHLIFT_REGISTRY_HOST": "r.example:5000"})  # not the port
    with pytest.raises(UsageError, match="are set, but not ARCHLIFT_REGISTRY_HOST"):
        auth.lookup("r.example", None, pair)  # once for every host: refused
    with pytest.raises(UsageError, match="but not ARCHLIFT_REGISTRY_USERNAME"):
        auth.lookup("r.example", None, {"ARCHLIFT_REGISTRY_HOST": "r.example"})
    with pytest.raises(UsageError, match="not a registry host"):
        auth.lookup("r.example", None, {**pair, "ARCHLIFT_REGISTRY_HOST": "https://r.example/"})
    both = {**pair, "ARCHLIFT_REGISTRY_HOST": "r.example", "ARCHLIFT_AUTH_R_EXAMPLE": "s:pw"}
    with pytest.raises(UsageError, match="both ARCHLIFT_AUTH_R_EXAMPLE and ARCHLIFT_REGISTRY_HOST"):
        auth.lookup("r.example", None, both)
    a, b = auth.env_name("a.b:5000"), auth.env_name("a-b:5000")
    env = {a: "dot:1", b: "dash:2"}
    assert auth.lookup("a.b:5000", None, env).username == "dot"
    assert auth.lookup("a-b:5000", None, env).username == "dash"
    with pytest.raises(UsageError, match="ARCHLIFT_AUTH_A_B_5000 names no registry host") as e:
        auth.lookup("a.b:5000", None, {"ARCHLIFT_AUTH_A_B_5000": "old:spelling"})  # archlift 0.1's name
    assert "a.b:5000 is spelt ARCHLIFT_AUTH_A_B___5000" in e.value.hint
    # empty values are unset (CI leaves missing secrets empty)
    assert not auth.lookup("r.example", None, {"ARCHLIFT_REGISTRY_USERNAME": "", "ARCHLIFT_AUTH_X_____Y": ""})


def test_environment_credentials_reach_only_their_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two hosts, credentials for one: the other is asked anonymously (the hostile server records it)."""
    from support.hostile import HostileServer, Request

    from archlift.oci import RegistryClient
    from archlift.refs import ImageRef

    def protected(req: Request) -> None:
        if req.headers.get("authorization"):
            req.json(200, {"name": "a", "tags": ["v1"]})
        else:
            req.reply(401, b"{}", {"WWW-Authenticate": 'Basic realm="x"'})

    with HostileServer() as mine, HostileServer() as theirs:
        for s in (mine, theirs):
            s.routes["/v2/a/"] = protected
        monkeypatch.setenv("ARCHLIFT_REGISTRY_HOST", mine.host)
        monkeypatch.setenv("ARCHLIFT_REGISTRY_USERNAME", "u")
        monkeypatch.setenv("ARCHLIFT_REGISTRY_PASSWORD", "p")
        c = RegistryClient(docker_config=str(tmp_path), retries=0)
        assert c.list_tags(ImageRef.parse(f"{mine.host}/a")) == ["v1"]
        with pytest.raises(RegistryError, match="asks for credentials"):
            c.list_tags(ImageRef.parse(f"{theirs.host}/a"))
        assert any(s.authorization for s in mine.api())
        assert not any(s.authorization for s in theirs.seen)


def _config(tmp_path: Path, data: dict[str, object]) -> str:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return str(tmp_path)


def test_lookup_order(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"auths": {"r.example": {"auth": base64.b64encode(b"cfg:pw").decode()}}})
    scoped = {"ARCHLIFT_AUTH_R_EXAMPLE": "scoped:pw1"}
    assert auth.lookup("r.example", cfg, scoped).username == "scoped"
    pair = {"ARCHLIFT_REGISTRY_HOST": "r.example", "ARCHLIFT_REGISTRY_USERNAME": "g", "ARCHLIFT_REGISTRY_PASSWORD": "p"}
    assert auth.lookup("r.example", cfg, pair).username == "g"
    found = auth.lookup("r.example", cfg, {})
    assert (found.username, found.password) == ("cfg", "pw")
    assert not auth.lookup("other.example", cfg, {})


def test_lookup_auths_keys_with_scheme_and_identity_token(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        {
            "auths": {
                "https://r.example/v1/": {"auth": base64.b64encode(b"u:p:with:colons").decode()},
                "t.example": {"identitytoken": "refresh-me"},
                "https://index.docker.io/v1/": {"username": "hub", "password": "hubpw"},
            }
        },
    )
    assert auth.lookup("r.example", cfg, {}).password == "p:with:colons"
    assert auth.lookup("t.example", cfg, {}).identity_token == "refresh-me"
    assert auth.lookup("docker.io", cfg, {}).username == "hub"


def test_docker_config_env_and_file_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert auth.docker_config_path() == tmp_path / "config.json"
    assert auth.docker_config_path(str(tmp_path / "x.json")) == tmp_path / "x.json"


def _helper(bindir: Path, name: str, body: str) -> None:
    path = bindir / f"docker-credential-{name}"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _helper(bindir, "fake", 'read host; echo "{\\"Username\\":\\"helper-$host\\",\\"Secret\\":\\"s3cret\\"}"\n')
    _helper(bindir, "store", 'read host; echo "{\\"Username\\":\\"<token>\\",\\"Secret\\":\\"idtok\\"}"\n')
    _helper(bindir, "missing", "echo 'credentials not found in native keychain'; exit 1\n")
    _helper(bindir, "broken", "echo 'the secret is hunter2' >&2; exit 3\n")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cfg = _config(
        tmp_path,
        {
            "credHelpers": {"h.example": "fake", "m.example": "missing", "b.example": "broken"},
            "credsStore": "store",
        },
    )
    found = auth.lookup("h.example", cfg, {})
    assert (found.username, found.password) == ("helper-h.example", "s3cret")
    assert "s3cret" not in repr(found)
    assert auth.lookup("any.example", cfg, {}).identity_token == "idtok"
    assert not auth.lookup("m.example", cfg, {})
    with pytest.raises(RegistryError) as e:
        auth.lookup("b.example", cfg, {})
    assert "hunter2" not in str(e.value) and "exit 3" in str(e.value)
    cfg2 = _config(tmp_path, {"credHelpers": {"n.example": "nonexistent"}})
    with pytest.raises(RegistryError, match="not installed"):
        auth.lookup("n.example", cfg2, {})


def test_scoped_env_needs_colon() -> None:
    with pytest.raises(UsageError, match="user:password"):
        auth.lookup("r.example", None, {"ARCHLIFT_AUTH_R_EXAMPLE": "nocolon"})


def test_basic_header_and_repr() -> None:
    c = auth.Credentials("u", "p", source="x")
    assert c.basic_header() == "Basic " + base64.b64encode(b"u:p").decode()
    assert "'p'" not in repr(c)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("localhost:80", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("10.0.0.1:5000", False),
        ("registry.example", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, expected: bool) -> None:
    assert is_loopback(host) is expected


def test_retry_after() -> None:
    assert _retry_after("3") == 3.0
    assert _retry_after(None) is None
    assert _retry_after("garbage") is None
    assert _retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


INDEX = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "a" * 64,
            "size": 10,
            "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"},
        },
        {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": "sha256:" + "b" * 64,
            "size": 11,
            "platform": {"os": "unknown", "architecture": "unknown"},
            "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
        },
    ],
}


def test_manifest_index_descriptors() -> None:
    raw = json.dumps(INDEX).encode()
    m = Manifest.of(raw, "")
    assert m.is_index and m.digest == Digest.of(raw)
    d = m.descriptors()
    assert d[0].platform == Platform("linux", "arm64") and not d[0].is_attestation
    assert d[1].is_attestation and d[1].annotations["vnd.docker.reference.type"] == "attestation-manifest"
    assert m.subject is None and m.config is None
    assert len({d[0], d[1]}) == 2  # hashable despite the annotations dict


def test_manifest_image_descriptors_and_subject() -> None:
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": "c", "digest": "sha256:" + "c" * 64, "size": 2},
        "layers": [{"mediaType": "l", "digest": "sha256:" + "d" * 64, "size": 3}],
        "subject": {"mediaType": "m", "digest": "sha256:" + "e" * 64, "size": 4},
        "artifactType": "application/x",
    }
    m = Manifest.of(json.dumps(doc).encode(), "application/vnd.oci.image.manifest.v1+json; charset=utf-8")
    assert m.media_type == "application/vnd.oci.image.manifest.v1+json"
    assert [d.size for d in m.descriptors()] == [2, 3]
    assert m.subject == Descriptor("m", Digest("sha256:" + "e" * 64), 4)
    assert m.descriptor().size == len(m.raw)


def test_cosign_tag_of() -> None:
    hexd = "f" * 64
    assert cosign_tag_of(f"sha256-{hexd}.sig") == Digest(f"sha256:{hexd}")
    assert cosign_tag_of(f"sha256-{hexd}") == Digest(f"sha256:{hexd}")
    assert cosign_tag_of("v1.0") is None
    assert cosign_tag_of(f"sha256-{hexd}.other") is None
