"""archlift sign: the real cosign signs a two-platform index by digest in a real registry, verifies it,
refuses another key, and the signature still verifies on the copy ``archlift mirror`` makes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.cli import run_archlift
from support.registry import LocalRegistry

from archlift.checks.sign import Cosign, sign_release, signature_tag, verify_release
from archlift.errors import UsageError, VerifyError
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import RegistryClient, auth
from archlift.proc import run
from archlift.refs import ImageRef
from archlift.steps.mirror import ImagePlan, MirrorPlan, Target, check, mirror, plan_mirror

PLATFORMS = ("linux/amd64", "linux/arm64")


@pytest.fixture
def key_pair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A cosign key pair made for the test (keyless signing would need the internet)."""
    monkeypatch.setenv("COSIGN_PASSWORD", "test-password")
    keys = tmp_path / "keys"
    keys.mkdir()
    run(["cosign", "generate-key-pair"], cwd=keys, env={"COSIGN_PASSWORD": "test-password"}, timeout=60)
    return keys / "cosign.key", keys / "cosign.pub"


@pytest.fixture
def other_public_key(tmp_path: Path) -> Path:
    keys = tmp_path / "other"
    keys.mkdir()
    run(["cosign", "generate-key-pair"], cwd=keys, env={"COSIGN_PASSWORD": "other"}, timeout=60)
    return keys / "cosign.pub"


@pytest.fixture
def reg_a() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def reg_b() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def _copy_in(client: RegistryClient, source: ImageRef, target: ImageRef) -> None:
    assert source.digest
    plan = MirrorPlan(Target(target.registry), (ImagePlan("busybox", source, target, (), PLATFORMS),))
    check(mirror(plan, client))


def _release(client: RegistryClient, seeded: ImageRef, reg: LocalRegistry, repository: str) -> ReleaseLock:
    """A one-image release in ``reg``: the seeded two-platform busybox copied to ``repository``."""
    assert seeded.digest
    target = reg.ref(repository)
    _copy_in(client, seeded, target)
    platforms = client.index_platforms(target.with_digest(seeded.digest))
    assert set(platforms) == set(PLATFORMS)
    comp = ComponentRelease(
        name="busybox",
        kind="mirrored",
        repository=target.name,
        index_digest=seeded.digest,
        platforms=platforms,
        tags=("1.35",),
        source_image=str(seeded),
    )
    return ReleaseLock(components={"busybox": comp}, config="images.yaml", created_at="2026-01-01T00:00:00Z")


def test_sign_verify_mirror_verify(
    seeded_base: ImageRef,
    reg_a: LocalRegistry,
    reg_b: LocalRegistry,
    key_pair: tuple[Path, Path],
    other_public_key: Path,
) -> None:
    key, pub = key_pair
    with RegistryClient() as client:
        lock = _release(client, seeded_base, reg_a, "release/busybox")
        ref = lock.components["busybox"].ref

        with pytest.raises(VerifyError, match="no valid signature"):
            verify_release(lock, str(pub))  # nothing signed yet

        signed = sign_release(lock, str(key))
        assert [(s.component, s.ref, s.verified) for s in signed] == [("busybox", ref, True)]
        assert signed[0].signatures == 1
        assert signature_tag(ref) in client.list_tags(ImageRef.parse(lock.components["busybox"].repository))

        # the public key given explicitly, and the one derived from the private key, both verify
        assert verify_release(lock, str(pub))[0].verified
        with pytest.raises(VerifyError, match="no signature verifies against"):
            verify_release(lock, str(other_public_key))

        # archlift mirror copies the .sig tag along: cosign verify passes on the MIRRORED copy
        result = mirror(plan_mirror(lock, Target(reg_b.host)), client)
        check(result)
        mirrored = ref.in_registry(reg_b.host)
        assert client.head_manifest(mirrored) is not None
        assert signature_tag(ref) in client.list_tags(ImageRef(mirrored.registry, mirrored.repository))
        on_b = verify_release(lock, str(pub), registry=reg_b.host)
        assert on_b[0].ref == mirrored and on_b[0].verified
        with pytest.raises(VerifyError):
            verify_release(lock, str(other_public_key), registry=reg_b.host)

    # and cosign itself, run directly, agrees
    direct = run(
        [
            "cosign",
            "verify",
            "--key",
            str(pub),
            "--insecure-ignore-tlog=true",
            "--allow-insecure-registry",
            str(mirrored),
        ],
        check=False,
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr
    payload = json.loads(direct.stdout)
    assert payload[0]["critical"]["image"]["docker-manifest-digest"] == str(ref.digest)


def test_cli_sign_then_verify_the_mirror(
    seeded_base: ImageRef,
    reg_a: LocalRegistry,
    reg_b: LocalRegistry,
    key_pair: tuple[Path, Path],
    other_public_key: Path,
    tmp_path: Path,
) -> None:
    key, pub = key_pair
    with RegistryClient() as client:
        lock = _release(client, seeded_base, reg_a, "cli/busybox")
    lock_path = tmp_path / "dist" / "release.json"
    lock.write(lock_path)
    env = {"COSIGN_PASSWORD": "test-password"}

    signed = run_archlift("sign", "--key", str(key), cwd=tmp_path, env=env)
    assert signed.returncode == 0, signed.stderr
    assert "1 image(s) signed and verified" in signed.stdout
    record = json.loads((tmp_path / "dist" / "signatures.json").read_text())
    assert record["signatures"][0]["verified"] is True
    assert record["signatures"][0]["image"] == str(lock.components["busybox"].ref)

    mirrored = run_archlift("mirror", "--to", f"{reg_b.host}/copy", cwd=tmp_path, env=env)
    assert mirrored.returncode == 0, mirrored.stderr
    ok = run_archlift(
        "sign", "--verify", "--key", str(pub), "--registry", f"{reg_b.host}/copy", "--json", cwd=tmp_path, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["signatures"][0]["image"].startswith(f"{reg_b.host}/copy/cli/busybox@sha256:")
    bad = run_archlift(
        "sign", "--verify", "--key", str(other_public_key), "--registry", f"{reg_b.host}/copy", cwd=tmp_path, env=env
    )
    assert bad.returncode == VerifyError.exit_code
    assert "no signature verifies against" in bad.stderr

    # `archlift verify` checks the whole release there: digests, platforms, tags, and signatures with --key
    whole = run_archlift("verify", "--registry", f"{reg_b.host}/copy", "--key", str(pub), cwd=tmp_path, env=env)
    assert whole.returncode == 0, whole.stderr
    assert "signatures: 1 of 1 image(s) verified" in whole.stdout
    wrong = run_archlift(
        "verify", "--registry", f"{reg_b.host}/copy", "--key", str(other_public_key), cwd=tmp_path, env=env
    )
    assert wrong.returncode == VerifyError.exit_code
    assert "no signature verifies against" in wrong.stderr


def test_sign_in_a_tls_registry_with_archlift_credentials(
    seeded_base: ImageRef,
    auth_registry: LocalRegistry,
    key_pair: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Credentials from ARCHLIFT_AUTH_<HOST> reach cosign (a temporary docker config), the CA in SSL_CERT_FILE."""
    key, pub = key_pair
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "empty-docker-config"))
    monkeypatch.setenv(auth.env_name(auth_registry.host), f"{auth_registry.username}:{auth_registry.password}")
    assert auth_registry.ca_file
    with RegistryClient(ca_file=str(auth_registry.ca_file)) as client:
        lock = _release(client, seeded_base, auth_registry, "tls/busybox")
    cosign = Cosign(ca_file=auth_registry.ca_file)
    assert cosign.flags(lock.components["busybox"].ref) == [
        "--allow-insecure-registry=true",
        "--allow-http-registry=true",
    ]  # loopback; TLS is still used when the registry speaks it
    assert sign_release(lock, str(key), public_key=str(pub), cosign=cosign)[0].verified
    monkeypatch.delenv(auth.env_name(auth_registry.host))
    with pytest.raises(VerifyError):
        verify_release(lock, str(pub), cosign=cosign)  # no credentials: cosign cannot read it


def test_sign_needs_the_password_and_the_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock = ReleaseLock(components={})
    key = tmp_path / "cosign.key"
    with pytest.raises(UsageError, match="no such private key"):
        sign_release(lock, str(key))
    key.write_text("x")
    monkeypatch.delenv("COSIGN_PASSWORD", raising=False)
    with pytest.raises(UsageError, match="COSIGN_PASSWORD is not set"):
        sign_release(lock, str(key))
    with pytest.raises(UsageError, match="no such public key"):
        verify_release(lock, str(tmp_path / "nope.pub"))


def test_the_record_keeps_other_components_signed_earlier(tmp_path: Path) -> None:
    from archlift.commands.sign import _record
    from archlift.refs import Digest

    def comp(name: str, n: int) -> ComponentRelease:
        return ComponentRelease(name, "built", f"registry.example/{name}", Digest.of(bytes([n])), {})

    lock = ReleaseLock(components={"a": comp("a", 1), "b": comp("b", 2), "c": comp("c", 3)})
    path = tmp_path / "signatures.json"
    earlier = [
        {"component": "b", "image": str(lock.components["b"].ref), "verified": True},
        {"component": "c", "image": f"registry.example/c@{Digest.of(b'old')}", "verified": True},  # stale
        {"component": "gone", "image": "registry.example/gone@" + str(Digest.of(b"x")), "verified": True},
    ]
    path.write_text(json.dumps({"signatures": earlier}))
    new = [{"component": "a", "image": str(lock.components["a"].ref), "verified": True}]
    record = json.loads(_record(path, lock, new))["signatures"]
    assert [e["component"] for e in record] == ["a", "b"]
    path.write_text("not json")
    assert [e["component"] for e in json.loads(_record(path, lock, new))["signatures"]] == ["a"]


def test_the_ca_file_handed_to_cosign_adds_to_its_system_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """cosign (Go) reads SSL_CERT_FILE *instead of* its system file: archlift hands it a bundle of
    what cosign would have read (``$SSL_CERT_FILE``, else Go's first system file) and then the CA."""
    from archlift.checks.sign import GO_ROOT_FILES, system_roots_file

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-config"))
    for name in ("ARCHLIFT_REGISTRY_HOST", "ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    system, ca = tmp_path / "system.pem", tmp_path / "ca.pem"
    system.write_text("-----SYSTEM ROOTS-----\n")
    ca.write_text("-----OUR CA-----\n")
    monkeypatch.setenv("SSL_CERT_FILE", str(system))
    with Cosign(ca_file=ca).env(["127.0.0.1:1"]) as env:
        handed = Path(env["SSL_CERT_FILE"])
        assert handed not in (system, ca)
        assert handed.read_text() == "-----SYSTEM ROOTS-----\n\n-----OUR CA-----\n"
        assert "DOCKER_CONFIG" not in env  # no credentials from the environment: cosign reads the user's config
    assert not handed.exists()  # a temporary file
    monkeypatch.delenv("SSL_CERT_FILE")
    found = system_roots_file()
    assert found == next((Path(f) for f in GO_ROOT_FILES if Path(f).is_file()), None)
    with Cosign(ca_file=ca).env([]) as env:
        text = Path(env["SSL_CERT_FILE"]).read_text()
        assert text.endswith("-----OUR CA-----\n") and (found is None or found.read_text() in text)
    with Cosign().env([]) as env:
        assert env == {}  # no CA file: cosign keeps its own roots
