"""archlift verify: a mirrored release matches; each kind of drift is named; exit 9."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.images as h
from support.cli import run_archlift
from support.images import PushedImage, make_release, release_lock
from support.registry import LocalRegistry

from archlift.checks.verify import verify_target
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import RegistryClient
from archlift.refs import ImageRef
from archlift.steps.mirror import Target, check, mirror, plan_mirror

no_docker_config = h.no_docker_config
source = h.source  # a registry holding the release, per module


@pytest.fixture(scope="module")
def release(source: LocalRegistry) -> dict[str, PushedImage]:
    return make_release(RegistryClient(), source, n=2)


@pytest.fixture
def mirrored(release: dict[str, PushedImage]) -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        check(mirror(plan_mirror(release_lock(release), Target.parse(f"{reg.host}/m")), RegistryClient()))
        yield reg


def test_verify_ok_then_each_drift(
    release: dict[str, PushedImage], mirrored: LocalRegistry, no_docker_config: None, tmp_path: Path
) -> None:
    client = RegistryClient()
    lock = release_lock(release)
    target = Target.parse(f"{mirrored.host}/m")
    report = verify_target(lock, target, client, deep=True)
    assert report.ok, report.summary()
    c0 = next(i for i in report.to_json()["images"] if i["name"] == "c0")
    assert c0["tags"] == {"v1": str(release["c0"].index), "latest": str(release["c0"].index)}
    assert c0["blobs"]["missing"] == [] and c0["blobs"]["total"] > 0
    assert release["c0"].signature_tag in c0["referrers"]

    lock.write(tmp_path / "dist/release.json")
    ok = run_archlift("verify", "--registry", f"{mirrored.host}/m", "--json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["ok"] is True

    m = ImageRef(mirrored.host, "m/rel/c1")
    # a tag moved elsewhere, a signature removed, a blob removed
    other = client.get_manifest(m.with_digest(release["c1"].platforms["linux/amd64"]))
    client.put_manifest(m.with_tag("latest"), other.raw, other.media_type)
    c0_repo = ImageRef(mirrored.host, "m/rel/c0")
    sig = client.head_manifest(c0_repo.with_tag(release["c0"].signature_tag))
    assert sig is not None
    client.delete_manifest(c0_repo.with_digest(sig.digest))
    layer = other.descriptors()[-1].digest
    assert mirrored.request("DELETE", f"/v2/m/rel/c1/blobs/{layer}").status == 202

    bad = verify_target(lock, target, client, deep=True)
    assert not bad.ok
    problems = {i.name: i.problems for i in bad.images}
    assert f"tag latest: expected {release['c1'].index}, found {other.digest}" in problems["c1"]
    assert f"blob {layer} is missing" in problems["c1"]
    assert any(p.startswith(f"tag {release['c0'].signature_tag}: expected") for p in problems["c0"])

    out = run_archlift("verify", "--registry", f"{mirrored.host}/m", cwd=tmp_path)
    assert out.returncode == 9
    assert "does not match the release: c0, c1" in out.stderr and "MISMATCH" in out.stdout
    assert run_archlift("verify", "--registry", "nohost", cwd=tmp_path).returncode == 2


def test_missing_image_and_unreachable_source(
    release: dict[str, PushedImage], mirrored: LocalRegistry, no_docker_config: None
) -> None:
    client = RegistryClient(retries=0)
    # the lock names a source nobody serves any more (the air-gapped side): referrers are not compared
    dead = "127.0.0.1:9"
    lock = ReleaseLock(
        components={
            n: ComponentRelease(n, "built", f"{dead}/{img.ref.repository}", img.index, dict(img.platforms), ("v1",))
            for n, img in release.items()
        }
    )
    report = verify_target(lock, Target.parse(f"{mirrored.host}/m"), client)
    assert report.ok and len(report.notes) == 2 and "unreachable" in report.notes[0]
    empty = verify_target(lock, Target.parse(f"{mirrored.host}/elsewhere"), client)
    assert not empty.ok and all(i.problems[0].endswith("is missing") for i in empty.images)


def test_mirror_and_verify_a_real_buildx_image(seeded_base: ImageRef, no_docker_config: None, tmp_path: Path) -> None:
    """The busybox base built and pushed by buildx (with whatever attestations it made)."""
    client = RegistryClient()
    platforms = client.index_platforms(seeded_base)
    index = client.get_manifest(seeded_base)
    lock = ReleaseLock(
        components={
            "busybox": ComponentRelease(
                "busybox",
                "mirrored",
                seeded_base.name,
                index.digest,
                platforms,
                (seeded_base.tag or "latest",),
                media_type=index.media_type,
            )
        }
    )
    with LocalRegistry() as dst:
        target = Target.parse(f"{dst.host}/air")
        check(mirror(plan_mirror(lock, target), client))
        report = verify_target(lock, target, client, deep=True)
        assert report.ok, report.summary()
        copied = client.get_manifest(ImageRef(dst.host, f"air/{seeded_base.repository}").with_digest(index.digest))
        assert copied.raw == index.raw
        assert {str(d.digest) for d in copied.descriptors()} == {str(d.digest) for d in index.descriptors()}
