"""archlift verify-reproducible: two builds from empty caches give the same index digest for every demo
component; when they do not, the first differing platform, layer and file are named."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from pathlib import Path

import pytest
from support.registry import LocalRegistry

from archlift.checks.reproducible import build_definition, compare_layer_blobs, compare_layouts, verify_component
from archlift.config.model import load_config
from archlift.localenv import make_git_repo, seed_sbom_scanner
from archlift.oci import RegistryClient
from archlift.oci.layout import Layout
from archlift.refs import Digest, ImageRef
from archlift.steps.engine import BuildJob, bake_target
from archlift.steps.inputs import Inputs
from archlift.steps.mirror import ImagePlan, MirrorPlan, Target, check, mirror
from archlift.steps.patches import PatchedTree
from archlift.steps.sources import ResolvedSource

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo"
LAYER = "application/vnd.oci.image.layer.v1.tar"


# --- comparing layers and layouts (no engine) ----------------------------------------


def tar(entries: Mapping[str, bytes | None], *, mtime: int = 1700000000, order: list[str] | None = None) -> bytes:
    """A layer: name -> content (None for a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name in order or list(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                t.addfile(info)
            else:
                info.size = len(content)
                info.mode = 0o644
                t.addfile(info, io.BytesIO(content))
    return buf.getvalue()


FILES = {"etc": None, "etc/version": b"1.0\n", "usr/local/bin/hello": b"#!/bin/sh\necho hi\n"}


def test_layer_comparison_names_the_first_differing_file() -> None:
    base = tar(FILES)
    assert compare_layer_blobs(base, tar({**FILES, "usr/local/bin/hello": b"#!/bin/sh\necho HI\n"})) == (
        "usr/local/bin/hello",
        "content differs",
    )
    assert compare_layer_blobs(base, tar(FILES, mtime=1700000001)) == ("etc", "mtime 1700000000 vs 1700000001")
    assert compare_layer_blobs(base, tar({**FILES, "stamp": b"x"})) == ("stamp", "only in build 2")
    assert compare_layer_blobs(tar({**FILES, "stamp": b"x"}), base) == ("stamp", "only in build 1")
    reordered = tar(FILES, order=["usr/local/bin/hello", "etc", "etc/version"])
    assert compare_layer_blobs(base, reordered) == ("", "the same entries in a different order")
    import gzip

    assert compare_layer_blobs(gzip.compress(base, mtime=0), gzip.compress(base, mtime=1)) == (
        "",
        "the same tar, compressed differently",
    )


def _blob(root: Path, data: bytes) -> dict[str, object]:
    digest = Digest.of(data)
    path = root / "blobs" / "sha256" / digest.hex
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": str(digest), "size": len(data)}


def _layout(root: Path, layers: Mapping[str, bytes]) -> Digest:
    """An OCI layout with a two-platform index; returns the index digest."""
    manifests = []
    for platform, layer in layers.items():
        os_, arch = platform.split("/")
        config = json.dumps({"architecture": arch, "os": os_, "rootfs": {"type": "layers"}}).encode()
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(root, config)},
            "layers": [
                {"mediaType": LAYER, **_blob(root, tar({"etc": None}))},
                {"mediaType": LAYER, **_blob(root, layer)},
            ],
        }
        desc = _blob(root, json.dumps(manifest).encode())
        manifests.append({"mediaType": manifest["mediaType"], **desc, "platform": {"os": os_, "architecture": arch}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}
    top = _blob(root, json.dumps(index).encode())
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return Digest.parse(str(top["digest"]))


def test_layout_comparison_names_platform_layer_and_file(tmp_path: Path) -> None:
    same = tar(FILES)
    first = _layout(tmp_path / "a", {"linux/amd64": same, "linux/arm64": same})
    second = _layout(tmp_path / "b", {"linux/amd64": same, "linux/arm64": tar({**FILES, "stamp": b"1"})})
    equal = compare_layouts(Layout(tmp_path / "a"), Layout(tmp_path / "a"), first, first)
    assert equal.same_index and equal.same_images
    c = compare_layouts(Layout(tmp_path / "a"), Layout(tmp_path / "b"), first, second)
    assert not c.same_index and not c.same_images
    assert c.platforms["linux/amd64"][0] == c.platforms["linux/amd64"][1]
    assert c.platforms["linux/arm64"][0] != c.platforms["linux/arm64"][1]
    diff = c.differences[0]
    assert (diff.platform, diff.what, diff.layer, diff.path, diff.detail) == (
        "linux/arm64",
        "layer",
        2,
        "stamp",
        "only in build 2",
    )
    assert diff.describe().startswith("linux/arm64: layer 2 (")
    assert diff.describe().endswith("): stamp: only in build 2")


def test_the_build_definition_is_the_releases_from_an_empty_cache(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").write_text(
        "registry: registry.example/x\n"
        "reproducible: false\n"
        "attestations: {provenance: true, sbom: true}\n"
        "components:\n"
        "  app:\n"
        "    source: {path: .}\n"
        "    build: {args: {A: b}, contexts: {'base:1': 'docker-image://registry.example/base:1'}}\n"
    )
    config = load_config(tmp_path / "images.yaml")
    comp = config.components["app"]
    assert comp.source is not None
    resolved = ResolvedSource(comp.source, str(tmp_path), "0" * 40, "local", 42, None)
    job = BuildJob(comp, Inputs("h", {}, {"A": "b"}), PatchedTree(tmp_path, resolved, ()), tmp_path / "out")
    target = build_definition(job, config, attestations=False)["target"][job.target]
    assert target["no-cache"] is True
    assert "cache-from" not in target and "cache-to" not in target
    # reproducible even where the release build is not (reproducible: false)
    assert target["args"] == {"A": "b", "SOURCE_DATE_EPOCH": "42"}
    assert target["output"] == [f"type=oci,dest={tmp_path / 'out'},tar=false,rewrite-timestamp=true"]
    assert target["attest"] == ["type=provenance,disabled=true", "type=sbom,disabled=true"]
    assert target["contexts"] == {"base:1": "docker-image://registry.example/base:1"}
    # the same definition the release build uses, but for the cache
    release = bake_target(job, config, reproducible=True)
    assert {k: v for k, v in release.items() if not k.startswith("cache-")} == {
        **{k: v for k, v in target.items() if k != "no-cache"},
        "attest": release["attest"],
    }
    with_att = build_definition(job, config, attestations=True)["target"][job.target]
    assert with_att["attest"] == ["type=provenance,mode=min", "type=sbom"]


# --- real builds ------------------------------------------------------------------------------


def make_demo(tmp_path: Path, registry: LocalRegistry, base: ImageRef, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of examples/demo with its upstreams as git repositories, against ``registry`` where ``base``
    (the seeded busybox) and the toolchain are; thirdparty/busybox:1.35 is copied from ``base``."""
    assert base.digest
    third = registry.ref("thirdparty/busybox")
    copy = ImagePlan("busybox", base, third, ("1.35",), ("linux/amd64", "linux/arm64"))
    with RegistryClient() as client:
        check(mirror(MirrorPlan(Target(registry.host), (copy,)), client))
    root = tmp_path / "demo"
    shutil.copytree(DEMO, root, ignore=shutil.ignore_patterns(".upstreams", ".cache", "dist"))
    for name, tag in (("hello", "v1.0.0"), ("toolbox", "v0.3.0")):
        make_git_repo(root / "upstreams" / name, root / ".upstreams" / f"{name}.git", tags=(tag,))
    monkeypatch.setenv("DEMO_REGISTRY", registry.host)
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))  # an empty source cache too
    return root / "images.yaml"


@pytest.fixture
def demo(
    tmp_path: Path,
    registry: LocalRegistry,
    seeded_base: ImageRef,
    toolchain: ImageRef,
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    return make_demo(tmp_path, registry, seeded_base, monkeypatch)


@pytest.mark.slow
@pytest.mark.parametrize("component", ["hello", "toolbox"])
def test_every_demo_component_is_reproducible(demo: Path, component: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "archlift", "verify-reproducible", component, str(demo), "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
        cwd=tmp_path,
        env=os.environ.copy(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = json.loads(result.stdout)
    assert out["reproducible"] is True, out
    assert out["index"][0] == out["index"][1]
    assert set(out["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert all(a == b for a, b in out["platforms"].values())
    assert out["source_date_epoch"] > 0 and len(out["commit"]) == 40
    assert "attestations: off" in out["policy"]


@pytest.mark.slow
def test_with_attestations_only_the_provenance_differs(demo: Path, registry: LocalRegistry) -> None:
    seed_sbom_scanner(registry.host)
    result = verify_component(load_config(demo), "hello", attestations=True)
    assert result.ok, result.text()
    c = result.comparison
    assert not c.same_index  # the index lists the attestation manifests, which differ
    assert all(a == b for a, b in c.platforms.values())
    provenance = [d for d in c.attestation_differences if "slsa.dev/provenance" in d.what]
    assert {d.platform for d in provenance} == {"linux/amd64 attestation", "linux/arm64 attestation"}
    assert all("buildStartedOn" in d.path and "buildInvocationID" in d.path for d in provenance)
    assert "platform manifests are equal" in result.text()


@pytest.mark.slow
def test_a_build_that_records_the_clock_is_named(
    tmp_path: Path, registry: LocalRegistry, seeded_base: ImageRef, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    # what a build records of its run: a fresh random id every time the step runs
    (src / "Dockerfile").write_text(
        "ARG BASE\nFROM ${BASE}\nRUN cat /proc/sys/kernel/random/uuid > /built-at && echo ok > /same\n"
    )
    make_git_repo(src, tmp_path / "clock.git", tags=("v1.0.0",))
    (tmp_path / "images.yaml").write_text(
        f"registry: {registry.host}/repro\n"
        "platforms: [linux/amd64]\n"
        "components:\n"
        "  clock:\n"
        "    source: {git: clock.git, ref: v1.0.0}\n"
        f"    build: {{args: {{BASE: '{seeded_base}'}}}}\n"
    )
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    result = subprocess.run(
        [sys.executable, "-m", "archlift", "verify-reproducible", "clock", str(tmp_path / "images.yaml")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
        env=os.environ.copy(),
    )
    assert result.returncode == 5, result.stdout + result.stderr
    line = next(ln for ln in result.stdout.splitlines() if ln.startswith("NOT reproducible"))
    # the base image has two layers; the RUN that records the clock is the third
    assert "first difference: image: layer 3 (" in line, result.stdout
    assert line.endswith("): built-at: content differs")
    assert "then:" not in result.stdout  # the config's rootfs.diff_ids follow from the layer: not a second cause


def test_a_result_that_differs_from_the_release_is_not_ok() -> None:
    from archlift.checks.reproducible import Comparison, Result

    a, b = Digest.of(b"a"), Digest.of(b"b")
    same = Comparison(a, a, {"linux/amd64": (b, b)})
    assert Result("x", 1, "0" * 40, False, same).ok
    assert Result("x", 1, "0" * 40, False, same, released={"linux/amd64": b}).matches_release is True
    off = Result("x", 1, "0" * 40, False, same, released={"linux/amd64": a})
    assert off.matches_release is False and not off.ok
    assert "NOT the released image" in off.text()
    assert off.to_json()["matches_release"] is False


@pytest.mark.slow
def test_the_release_build_with_epoch_and_rewritten_timestamps_is_rebuilt_exactly(
    demo: Path, registry: LocalRegistry, tmp_path: Path
) -> None:
    """The release build sets SOURCE_DATE_EPOCH (the commit time) and rewrite-timestamp=true itself
    (``reproducible: true``, the default), so a rebuild from empty caches gives the released platform
    manifests (provenance, SBOM and the registry cache on in the release build; they do not touch the images)."""
    from archlift.cli import main
    from archlift.lock import ReleaseLock
    from archlift.steps.sources import resolve

    seed_sbom_scanner(registry.host)
    config = load_config(demo, registry=f"{registry.host}/reproduced")
    assert config.reproducible
    epochs = {}
    for name in ("hello", "toolbox"):
        source = config.components[name].source
        assert source is not None
        epochs[name] = resolve(source).commit_time
    lock_path = tmp_path / "dist" / "release.json"
    argv = ["build", str(demo), "hello", "toolbox", "--registry", f"{registry.host}/reproduced"]
    assert main([*argv, "--lock", str(lock_path), "--force", "--quiet"]) == 0
    lock = ReleaseLock.read(lock_path)
    for name in ("hello", "toolbox"):
        rebuilt = verify_component(config, name, released=dict(lock.component(name).platforms))
        assert rebuilt.epoch == epochs[name] > 0
        assert rebuilt.matches_release is True, rebuilt.text()
        assert rebuilt.ok
