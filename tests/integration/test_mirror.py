"""archlift mirror: the pure plan, and real copies between distribution servers."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.images as h
from support.cli import run_archlift
from support.images import FaultProxy, PushedImage, assert_same, make_release, release_lock
from support.registry import LocalRegistry

from archlift.errors import ConfigError, MirrorError
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import Manifest, RegistryClient, auth
from archlift.refs import Digest, ImageRef
from archlift.steps.mirror import MirrorResult, Target, check, filter_platforms, mirror, plan_mirror

no_docker_config = h.no_docker_config


# ------------------------------------------------------------------ pure parts
@pytest.mark.parametrize(
    ("text", "registry", "prefix"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", ""),
        ("registry.internal/mirror/x", "registry.internal", "mirror/x"),
        ("localhost:5000/", "localhost:5000", ""),
    ],
)
def test_target_parse(text: str, registry: str, prefix: str) -> None:
    assert Target.parse(text) == Target(registry, prefix)


@pytest.mark.parametrize("text", ["mirror", "registry.internal/Bad", "registry.internal/x:tag", "", "a b"])
def test_target_parse_refuses(text: str) -> None:
    with pytest.raises(ConfigError, match="--to"):
        Target.parse(text)


def test_plan_maps_repositories_and_checks_platforms() -> None:
    d = Digest("sha256:" + "a" * 64)
    lock = ReleaseLock(
        components={
            "app": ComponentRelease("app", "built", "src.example/team/app", d, {"linux/amd64": d}, ("v1",)),
        }
    )
    plan = plan_mirror(lock, Target.parse("dst.example:5000/mirror"))
    (img,) = plan.images
    assert img.target == ImageRef("dst.example:5000", "mirror/team/app")
    assert img.source == ImageRef("src.example", "team/app", None, d)
    assert plan_mirror(lock, Target.parse("dst.example"), ["linux/arm64/v8", "linux/amd64"]).platforms == (
        "linux/arm64",
        "linux/amd64",
    )
    with pytest.raises(ConfigError, match="has none of these"):
        plan_mirror(lock, Target.parse("dst.example"), ["linux/arm64"])
    with pytest.raises(ConfigError, match="not a known platform"):
        plan_mirror(lock, Target.parse("dst.example"), ["plan9/mips"])
    with pytest.raises(ConfigError, match="onto itself"):
        plan_mirror(lock, Target.parse("src.example"))
    with pytest.raises(ConfigError, match="no component 'nope'"):
        plan_mirror(lock, Target.parse("dst.example"), components=["nope"])


def test_filter_platforms_drops_platform_and_its_attestation() -> None:
    amd, arm = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    doc = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": h.OCI_MANIFEST,
                "digest": amd,
                "size": 1,
                "platform": {"os": "linux", "architecture": "amd64"},
            },
            {
                "mediaType": h.OCI_MANIFEST,
                "digest": arm,
                "size": 1,
                "platform": {"os": "linux", "architecture": "arm64"},
            },
            {
                "mediaType": h.OCI_MANIFEST,
                "digest": "sha256:" + "c" * 64,
                "size": 1,
                "platform": {"os": "unknown", "architecture": "unknown"},
                "annotations": {
                    "vnd.docker.reference.type": "attestation-manifest",
                    "vnd.docker.reference.digest": arm,
                },
            },
        ],
    }
    index = Manifest.of(json.dumps(doc).encode())
    same, dropped = filter_platforms(index, ["linux/amd64", "linux/arm64"])
    assert same is index and dropped == ()
    new, dropped = filter_platforms(index, ["linux/amd64"])
    assert dropped == ("linux/arm64",)
    assert [str(d.digest) for d in new.descriptors()] == [amd]
    assert new.digest != index.digest


# ------------------------------------------------------------------ real registries
@pytest.fixture
def source() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def target() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


def test_mirror_preserves_digests_sends_shared_blobs_once_and_remirror_sends_nothing(
    source: LocalRegistry, target: LocalRegistry, no_docker_config: None, tmp_path: Path
) -> None:
    client = RegistryClient()
    images = make_release(client, source)
    plan = plan_mirror(release_lock(images), Target.parse(f"{target.host}/mirror"))
    result = mirror(plan, client, jobs=4)
    check(result)
    assert_same(client, images, target, "mirror")
    unique = set().union(*(img.blobs for img in images.values()))
    assert target.blob_uploads() == len(unique)  # the shared layer and "{}" configs: sent once
    assert sum(i.blobs_sent for i in result.images) == len(unique)
    sizes = {d: len(client.get_blob(img.ref, d)) for img in images.values() for d in img.blobs}
    assert result.bytes_sent == sum(sizes.values())  # every unique byte once, counted right across threads
    assert sum(i.blobs_mounted for i in result.images) >= 2  # the shared layer into two more repositories
    c0 = next(i for i in result.images if i.name == "c0")
    assert c0.extra_tags and c0.referrers >= 2

    before = len(target.access_log())
    again = mirror(plan, client, jobs=4)
    check(again)
    assert all(i.up_to_date for i in again.images)
    assert again.bytes_sent == 0
    new = target.access_log()[before:]
    assert new and all(e.method == "HEAD" and "/manifests/" in e.path for e in new), new


def test_mirror_through_fault_proxy(source: LocalRegistry, target: LocalRegistry, no_docker_config: None) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=3, size=1024 * 1024)
    with FaultProxy(target.host, every=3, delay=0.2) as proxy, FaultProxy(source.host, every=3) as src_proxy:
        # the lock names the source through its own proxy too
        lock = release_lock(
            {
                k: PushedImage(ImageRef.parse(f"{src_proxy.host}/{v.ref.repository}:v1"), v.index, v.platforms)
                for k, v in images.items()
            }
        )
        flaky = RegistryClient(backoff=0.01, retries=10)
        result = mirror(plan_mirror(lock, Target.parse(proxy.host)), flaky, jobs=4)
        check(result)
        assert sum(proxy.faults.values()) >= 10 and all(proxy.faults.values())
        assert sum(src_proxy.faults.values()) >= 5
    assert_same(client, images, target)


def test_mirror_into_tls_auth_registry(
    source: LocalRegistry,
    tls_auth: LocalRegistry,
    no_docker_config: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=2)
    monkeypatch.setenv(auth.env_name(tls_auth.host), f"{tls_auth.username}:{tls_auth.password}")
    secure = RegistryClient(ca_file=str(tls_auth.ca_file))
    result = mirror(plan_mirror(release_lock(images), Target.parse(f"{tls_auth.host}/m")), secure, jobs=4)
    check(result)
    assert_same(secure, images, tls_auth, "m")
    text = json.dumps(result.to_json())
    assert tls_auth.password and tls_auth.password not in text


@pytest.fixture
def tls_auth() -> Iterator[LocalRegistry]:
    with LocalRegistry(tls=True, auth=True) as reg:
        yield reg


def test_corrupted_blob_fails_that_image_and_moves_no_tag(
    source: LocalRegistry, target: LocalRegistry, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=2)
    bad = images["c1"]
    victim = next(d for d in bad.blobs if len(client.get_blob(bad.ref, d)) == 64 * 1024)
    path = source.storage_dir / "docker/registry/v2/blobs/sha256" / victim.hex[:2] / victim.hex / "data"
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])
    result = mirror(plan_mirror(release_lock(images), Target.parse(target.host)), client, jobs=2)
    with pytest.raises(
        MirrorError, match=rf'c1: blob {victim} from "{source.host}/rel/c1": got 65536 bytes with digest sha256:'
    ):
        check(result)
    assert client.head_manifest(target.ref("rel/c1", "v1")) is None
    assert client.head_manifest(target.ref("rel/c0", "v1")) is not None
    assert not client.blob_exists(target.ref("rel/c1"), victim)


def test_cli_mirror_report_and_bad_input(
    source: LocalRegistry, target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=2)
    release_lock(images).write(tmp_path / "dist/release.json")
    bad = run_archlift("mirror", "--to", "nohost", cwd=tmp_path)
    assert bad.returncode == 2 and "REGISTRY[/PREFIX]" in bad.stderr
    assert run_archlift("mirror", "--to", target.host, "--jobs", "0", cwd=tmp_path).returncode == 2
    assert run_archlift("mirror", "--to", target.host, "--lock", "nope.json", cwd=tmp_path).returncode == 2
    assert run_archlift("mirror", "--to", target.host, "--platform", "plan9/mips", cwd=tmp_path).returncode == 2
    dry = run_archlift("mirror", "--to", f"{target.host}/x", "--dry-run", "--json", cwd=tmp_path)
    assert dry.returncode == 0 and [i["target"] for i in json.loads(dry.stdout)["images"]] == [
        f"{target.host}/x/rel/c0",
        f"{target.host}/x/rel/c1",
    ]
    assert [e.path for e in target.access_log()] == ["/v2/"]  # the start-up probe only: a dry run asks nothing
    out = run_archlift("mirror", "--to", f"{target.host}/x", "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["ok"] and len(data["images"]) == 2
    report = json.loads((tmp_path / "dist/mirror-report.json").read_text())
    assert report["images"] == data["images"]
    text = run_archlift("mirror", "--to", f"{target.host}/x", cwd=tmp_path)
    assert text.returncode == 0 and "2 image(s) were up to date" in text.stdout


def test_platform_filter_records_new_index(
    source: LocalRegistry, target: LocalRegistry, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=1)
    result = mirror(plan_mirror(release_lock(images), Target.parse(target.host), ["linux/arm64"]), client)
    check(result)
    (img,) = result.images
    assert img.dropped_platforms == ("linux/amd64",) and img.platforms == ("linux/arm64",)
    assert img.digest != images["c0"].index
    assert client.index_platforms(target.ref("rel/c0", "v1")) == {"linux/arm64": images["c0"].platforms["linux/arm64"]}
    amd_layers = client.get_manifest(source.ref("rel/c0").with_digest(images["c0"].platforms["linux/amd64"]))
    assert not client.blob_exists(target.ref("rel/c0"), amd_layers.descriptors()[-1].digest)


def _mirror_until(target: LocalRegistry, cwd: Path, *, uploads: int, jobs: int) -> subprocess.Popen[str]:
    """``archlift mirror`` in the background, returned once the target has completed ``uploads`` uploads.
    It starts with SIGINT at its default, as from a terminal, even when the tests themselves run in a
    shell's background job (``bash .ci/run &``), whose commands and their children ignore SIGINT."""
    argv = [sys.executable, "-m", "archlift", "mirror", "--to", target.host, "--jobs", str(jobs)]
    proc = subprocess.Popen(
        ["env", "--default-signal=INT", *argv],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while target.blob_uploads() < uploads and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    return proc


def _settled_uploads(reg: LocalRegistry) -> int:
    """The registry's completed uploads, once the count has stopped changing for a second."""
    count, since = reg.blob_uploads(), time.monotonic()
    while time.monotonic() - since < 1.0:
        time.sleep(0.1)
        now = reg.blob_uploads()
        if now != count:
            count, since = now, time.monotonic()
    return count


def test_killed_mirror_resumes_sending_only_what_is_missing(
    source: LocalRegistry, target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=4, size=24 * 1024 * 1024)
    release_lock(images).write(tmp_path / "dist/release.json")
    proc = _mirror_until(target, tmp_path, uploads=3, jobs=2)
    proc.kill()
    proc.communicate()
    first = _settled_uploads(target)  # an upload fully sent before the kill may still be committed
    unique = set().union(*(img.blobs for img in images.values()))
    assert 0 < first < len(unique), "the mirror should have been killed midway"
    out = run_archlift("mirror", "--to", target.host, "--json", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert target.blob_uploads() == len(unique)  # nothing uploaded twice
    assert result["blobs_sent"] == len(unique) - first
    assert_same(client, images, target)


def test_result_summary_mentions_failures() -> None:
    from archlift.steps.mirror import ImageResult

    r = MirrorResult("t", (ImageResult("a", "s", "t/a@x", Digest("sha256:" + "a" * 64), (), error="boom"),), 1.0)
    assert not r.ok and "FAILED: boom" in r.summary()
    with pytest.raises(MirrorError, match="a: boom"):
        check(r)


def test_interrupted_mirror_stops_and_tags_only_complete_images(
    source: LocalRegistry, target: LocalRegistry, tmp_path: Path, no_docker_config: None
) -> None:
    import signal

    client = RegistryClient()
    images = make_release(client, source, n=4, size=16 * 1024 * 1024)
    release_lock(images).write(tmp_path / "dist/release.json")
    proc = _mirror_until(target, tmp_path, uploads=2, jobs=1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    for img in images.values():
        tag = client.head_manifest(target.ref(img.ref.repository, "v1"))
        assert tag is None or tag.digest == img.index
    unique = set().union(*(img.blobs for img in images.values()))
    assert target.blob_uploads() < len(unique)
    again = run_archlift("mirror", "--to", target.host, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert_same(client, images, target)


def test_blob_present_in_another_target_repository_is_mounted_not_sent(
    source: LocalRegistry, target: LocalRegistry, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=3)
    shared = client.put_blob(target.ref("rel/c2"), h.SHARED)  # as a killed run may have left it
    before = target.blob_uploads()
    result = mirror(plan_mirror(release_lock(images), Target.parse(target.host)), client)
    check(result)
    uploads = [e.path for e in target.access_log() if e.method == "PUT" and e.status == 201][before:]
    assert not any(shared.hex in p for p in uploads)
    assert sum(i.blobs_mounted for i in result.images) >= 2 and sum(i.blobs_skipped for i in result.images) >= 1
    assert_same(client, images, target)


def test_mirror_within_one_registry_mounts_everything(source: LocalRegistry, no_docker_config: None) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=2)
    before = source.blob_uploads()
    result = mirror(plan_mirror(release_lock(images), Target.parse(f"{source.host}/copy")), client)
    check(result)
    assert result.bytes_sent == 0 and source.blob_uploads() == before
    assert sum(i.blobs_mounted for i in result.images) == sum(i.blobs for i in result.images)
    assert_same(client, images, source, "copy")


def test_registry_seen_to_mount_is_asked_with_a_mount_instead_of_a_head(
    source: LocalRegistry, target: LocalRegistry, no_docker_config: None
) -> None:
    client = RegistryClient()
    images = make_release(client, source, n=3)
    present = sorted(images["c2"].blobs - images["c0"].blobs - images["c1"].blobs)[0]
    client.put_blob(target.ref("rel/c2"), client.get_blob(images["c2"].ref, present))  # as a killed run left it
    # once the client has seen the target mount a blob ...
    client.put_blob(target.ref("proof/a"), b"proof")
    assert (
        client.start_upload(target.ref("proof/b"), mount=Digest.of(b"proof"), mount_from=target.ref("proof/a")) is None
    )
    assert client.honours_mounts(target.host)
    before = len(target.access_log())
    result = mirror(plan_mirror(release_lock(images), Target.parse(target.host)), client)
    check(result)
    log = target.access_log()[before:]
    # ... a blob that one repository needs costs one request: a mount from that repository itself
    assert not [e for e in log if e.method == "HEAD" and present.hex in e.path]
    asked = [e for e in log if e.method == "POST" and present.hex in e.path]
    assert [e.status for e in asked] == [201]
    assert not any(present.hex in e.path for e in log if e.method == "PUT")  # never sent again
    assert next(i for i in result.images if i.name == "c2").blobs_skipped >= 1
    assert_same(client, images, target)
