"""The client against the real distribution server (plain, and TLS + htpasswd)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import support.images as h
from support.images import blob, push_image
from support.registry import LocalRegistry

from archlift.oci import OCI_MANIFEST, DigestMismatch, RegistryClient, RequestFailed, auth
from archlift.oci.client import chunks_of
from archlift.refs import Digest

# fixtures shared with the mirror and airgap tests
plain_registry = h.plain_registry
second_registry = h.second_registry
tls_auth_registry = h.tls_auth_registry
no_docker_config = h.no_docker_config


def test_blobs_manifests_tags_platforms(plain_registry: LocalRegistry, no_docker_config: None) -> None:
    c = RegistryClient()
    ref = plain_registry.ref("team/app", "v1")
    img = push_image(c, ref, seed=1, signature=True, referrer=True)
    assert c.scheme(plain_registry.host) == "http"  # loopback without TLS
    desc = c.head_manifest(ref)
    assert desc is not None and desc.digest == img.index
    assert plain_registry.manifest_digest("team/app", "v1") == img.index
    assert c.head_manifest(plain_registry.ref("team/app", "nope")) is None
    m = c.get_manifest(img.pinned)
    assert m.is_index and m.digest == img.index
    assert c.index_platforms(ref) == img.platforms  # attestation manifest left out
    assert c.index_platforms(ref.with_digest(img.platforms["linux/arm64"])) == {
        "linux/arm64": img.platforms["linux/arm64"]
    }
    assert set(c.list_tags(ref)) == {"v1", img.signature_tag, f"sha256-{img.index.hex}"}
    assert c.list_tags(plain_registry.ref("no/such")) == []
    refs = c.referrers(ref, img.index)
    assert [d.digest for d in refs] == [img.referrer]
    assert refs[0].artifact_type == "application/spdx+json"
    assert c.referrers(ref, img.platforms["linux/amd64"]) == []
    for d in img.blobs:
        assert c.blob_exists(ref, d)
    assert not c.blob_exists(ref, Digest.of(b"never pushed"))


def test_copy_blob_streams_between_registries(
    plain_registry: LocalRegistry, second_registry: LocalRegistry, no_docker_config: None
) -> None:
    c = RegistryClient()
    data = blob(3 * 1024 * 1024 + 17, seed=99)  # several chunks
    src = plain_registry.ref("copy/src")
    d = c.put_blob(src, data)
    dst = second_registry.ref("copy/dst")
    seen: list[int] = []
    from archlift.oci import Descriptor

    sent = c.copy_blob(src, dst, Descriptor("application/octet-stream", d, len(data)), progress=seen.append)
    assert sent == len(data) == sum(seen)
    assert c.get_blob(dst, d) == data
    # a mount within one registry
    other = second_registry.ref("copy/other")
    assert c.start_upload(other, mount=d, mount_from=dst) is None
    assert c.blob_exists(other, d)


def test_corrupted_source_blob_is_never_committed(
    plain_registry: LocalRegistry, second_registry: LocalRegistry, no_docker_config: None
) -> None:
    c = RegistryClient()
    data = blob(2 * 1024 * 1024, seed=7)
    src = plain_registry.ref("corrupt/src")
    d = c.put_blob(src, data)
    stored = plain_registry.storage_dir / "docker/registry/v2/blobs/sha256" / d.hex[:2] / d.hex / "data"
    stored.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    from archlift.oci import Descriptor

    dst = second_registry.ref("corrupt/dst")
    with pytest.raises(DigestMismatch, match=f"blob {d}"):
        c.copy_blob(src, dst, Descriptor("application/octet-stream", d, len(data)))
    assert not c.blob_exists(dst, d)
    with pytest.raises(DigestMismatch):
        c.get_blob(src, d)
    stored.write_bytes(data[: len(data) // 2])  # truncated in storage: a size mismatch, not a broken connection
    with pytest.raises(DigestMismatch, match=f"has {len(data) // 2} bytes for it, the manifest says {len(data)}"):
        c.copy_blob(src, dst, Descriptor("application/octet-stream", d, len(data)))


def test_tls_auth_registry(
    tls_auth_registry: LocalRegistry, no_docker_config: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    reg = tls_auth_registry
    ref = reg.ref("secure/app", "v1")
    # the CA is not trusted: an error with a hint, never a downgrade to HTTP
    with pytest.raises(RequestFailed, match="does not verify") as e:
        RegistryClient().list_tags(ref)
    assert "--ca-file" in e.value.hint
    # trusted but without credentials
    with pytest.raises(RequestFailed, match="asks for credentials"):
        RegistryClient(ca_file=str(reg.ca_file)).put_blob(ref, b"x")
    # credentials from a docker config file
    import base64

    assert reg.username and reg.password
    (tmp_path / "config.json").write_text(
        json.dumps(
            {"auths": {reg.host: {"auth": base64.b64encode(f"{reg.username}:{reg.password}".encode()).decode()}}}
        )
    )
    c = RegistryClient(ca_file=str(reg.ca_file), docker_config=str(tmp_path))
    img = push_image(c, ref, seed=3)
    assert c.scheme(reg.host) == "https"
    assert c.get_manifest(img.pinned).digest == img.index
    # wrong password from the host-scoped variable (it wins over the config)
    monkeypatch.setenv(auth.env_name(reg.host), f"{reg.username}:wrong-pw")
    with pytest.raises(RequestFailed, match="refused the credentials") as e2:
        RegistryClient(ca_file=str(reg.ca_file), docker_config=str(tmp_path)).list_tags(ref)
    assert "wrong-pw" not in e2.value.render() and reg.password not in e2.value.render()
    # insecure: no verification at all
    monkeypatch.delenv(auth.env_name(reg.host))
    assert "v1" in RegistryClient(insecure=True, docker_config=str(tmp_path)).list_tags(ref)


def test_put_manifest_by_digest_checks_the_digest(plain_registry: LocalRegistry, no_docker_config: None) -> None:
    c = RegistryClient()
    ref = plain_registry.ref("pm/app")
    cfg = c.put_blob(ref, b"{}")
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(cfg), "size": 2},
            "layers": [],
        }
    ).encode()
    with pytest.raises(DigestMismatch):
        c.put_manifest(ref.with_digest(Digest.of(b"other")), raw, OCI_MANIFEST)
    assert c.put_manifest(ref.with_digest(Digest.of(raw)), raw, OCI_MANIFEST) == Digest.of(raw)
    assert list(chunks_of(b"abcde", 2)) == [b"ab", b"cd", b"e"]


def test_real_buildx_index(seeded_base: object, no_docker_config: None) -> None:
    """The busybox base built by buildx: two platforms, attestations (if any) left out."""
    from archlift.refs import ImageRef

    assert isinstance(seeded_base, ImageRef)
    c = RegistryClient()
    platforms = c.index_platforms(seeded_base)
    assert set(platforms) == {"linux/amd64", "linux/arm64"}
    index = c.get_manifest(seeded_base)
    for d in index.descriptors():
        m = c.get_manifest(seeded_base.with_digest(d.digest))
        for child in m.descriptors():
            assert c.blob_exists(seeded_base, child.digest)
