"""Pure tests of the registry client's parts: challenges, credentials, values."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest

from archlift.errors import RegistryError
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


def test_env_name() -> None:
    assert auth.env_name("127.0.0.1:5000") == "ARCHLIFT_AUTH_127_0_0_1_5000"
    assert auth.env_name("registry.local") == "ARCHLIFT_AUTH_REGISTRY_LOCAL"


def _config(tmp_path: Path, data: dict[str, object]) -> str:
    (tmp_path / "config.json").write_text(json.dumps(data))
    return str(tmp_path)


def test_lookup_order(tmp_path: Path) -> None:
    cfg = _config(tmp_path, {"auths": {"r.example": {"auth": base64.b64encode(b"cfg:pw").decode()}}})
    scoped = {
        "ARCHLIFT_AUTH_R_EXAMPLE": "scoped:pw1",
        "ARCHLIFT_REGISTRY_USERNAME": "g",
        "ARCHLIFT_REGISTRY_PASSWORD": "p",
    }
    assert auth.lookup("r.example", cfg, scoped).username == "scoped"
    generic = {"ARCHLIFT_REGISTRY_USERNAME": "g", "ARCHLIFT_REGISTRY_PASSWORD": "p"}
    assert auth.lookup("r.example", cfg, generic).username == "g"
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
    with pytest.raises(RegistryError, match="user:password"):
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
