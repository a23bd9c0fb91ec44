"""The Config Sync distribution (root images.yaml): it validates and plans; its patches are
well-formed; its install renders with every image pinned by digest from a release lock
made here, over tests/fixtures/config-sync-tree (a stand-in for the upstream tree, which
CI cannot fetch)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from archlift.config.model import Config, load_config
from archlift.lock import ComponentRelease, ReleaseLock, Upstream
from archlift.refs import Digest, ImageRef
from archlift.steps.render import UpstreamFile, render

ROOT = Path(__file__).parent.parent
IMAGES_YAML = ROOT / "images.yaml"
TREE = Path(__file__).parent / "fixtures" / "config-sync-tree"
COMMIT = "b259f899954123f52668e61fe2092fe5d17be833"
BUILT = (
    "reconciler",
    "reconciler-manager",
    "admission-webhook",
    "hydration-controller",
    "hydration-controller-with-shell",
    "oci-sync",
    "helm-sync",
    "gcenode-askpass-sidecar",
    "nomos",
    "resource-group-controller",
)
MIRRORED = {
    "git-sync": "registry.k8s.io/git-sync/git-sync:v4.4.2",
    "otel-collector": "docker.io/otel/opentelemetry-collector-contrib:0.118.0",
}
PLACEHOLDER_RE = re.compile(r"\b[A-Z][A-Z_]*_IMAGE_NAME\b")


def archlift(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with the file's own defaults (no registry or base image overrides from the environment)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ARCHLIFT_REGISTRY", "CONFIG_SYNC_"))}
    return subprocess.run(
        [sys.executable, "-m", "archlift", *args], capture_output=True, text=True, cwd=ROOT, timeout=120, env=env
    )


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(IMAGES_YAML)


def test_validates() -> None:
    proc = archlift("validate", "images.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "10 to build, 2 to mirror" in proc.stdout


def test_plan_lists_every_config_sync_image() -> None:
    proc = archlift("plan", "images.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = {c["name"]: c for c in json.loads(proc.stdout)["components"]}
    assert set(plan) == set(BUILT) | set(MIRRORED)
    patches = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "patches" / "config-sync").glob("*.patch"))
    assert len(patches) == 4
    for name in BUILT:
        c = plan[name]
        assert c["source"]["git"] == "https://github.com/GoogleContainerTools/kpt-config-sync.git"
        assert (c["source"]["ref"], c["source"]["commit"]) == ("v1.22.0", COMMIT)
        assert c["patches"] == patches
        assert c["build"]["dockerfile"] == "build/all/Dockerfile"
        assert c["build"]["target"] == name
        assert c["platforms"] == ["linux/amd64", "linux/arm64"]
        assert c["image"] == f"ghcr.io/example/config-sync/{name}"
        assert "GOLANG_IMAGE" in c["build"]["args"] and "DEBIAN_BASE_IMAGE" in c["build"]["args"]
        assert set(c["build"]["contexts"]) == {"gcr.io/distroless/static:nonroot", "gcr.io/distroless/static:latest"}
    for name, upstream in MIRRORED.items():
        assert plan[name]["mirror"] == upstream
        assert plan[name]["platforms"] == ["linux/amd64", "linux/arm64"]


def test_registry_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLIFT_REGISTRY", "registry.internal:5000/cs")
    monkeypatch.setenv("CONFIG_SYNC_DISTROLESS", "registry.internal:5000/distroless/static")
    config = load_config(IMAGES_YAML)
    assert config.registry == "registry.internal:5000/cs"
    contexts = config.components["reconciler"].build.contexts  # type: ignore[union-attr]
    assert (
        contexts["gcr.io/distroless/static:nonroot"]
        == "docker-image://registry.internal:5000/distroless/static:nonroot"
    )


@pytest.mark.parametrize("patch", sorted((ROOT / "patches" / "config-sync").glob("*.patch")), ids=lambda p: p.name)
def test_patches_are_format_patch_mails(patch: Path, tmp_path: Path) -> None:
    """git am needs the From/Subject headers; git apply --numstat parses the diff (no tree needed)."""
    text = patch.read_text()
    assert text.startswith("From 0000000000000000000000000000000000000000 ")
    assert re.search(r"^Subject: \[PATCH \d/\d\] ", text, re.M)
    proc = subprocess.run(["git", "apply", "--numstat", str(patch)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()


def test_fixture_tree_has_every_upstream_manifest(config: Config) -> None:
    paths = [u.path for u in config.manifests.upstream]
    assert len(paths) == 19
    assert all(u.source == "config-sync" for u in config.manifests.upstream)
    assert [p for p in paths if not (TREE / p).is_file()] == []


def make_lock(config: Config) -> ReleaseLock:
    """A release of every component, by made-up digests, as the build and mirror steps would write it."""
    components = {}
    for name, comp in config.components.items():
        digest = Digest.of(f"index {name}".encode())
        platforms = {str(p): Digest.of(f"{p} {name}".encode()) for p in comp.platforms}
        upstream = None
        if comp.source is not None:
            upstream = Upstream(comp.source.git or "", comp.source.ref or "", comp.source.commit or "", "v1.22.0")
        components[name] = ComponentRelease(
            name=name,
            kind="mirrored" if comp.mirror else "built",
            repository=comp.image.name,
            index_digest=digest,
            platforms=platforms,
            tags=("v1.22.0",) if comp.source else ((comp.mirror.tag or ""),) if comp.mirror else (),
            upstream=upstream,
            source_image=str(comp.mirror) if comp.mirror else None,
        )
    return ReleaseLock(components=components)


def replacements(config: Config) -> dict[str, str]:
    return {text: name for name, comp in config.components.items() for text in comp.replaces}


@pytest.fixture(scope="module")
def rendered(config: Config) -> tuple[ReleaseLock, list[dict[str, Any]], str]:
    lock = make_lock(config)
    files = [UpstreamFile(TREE / u.path, f"config-sync:{u.path}") for u in config.manifests.upstream]
    out = render(lock, upstream=files, replacements=replacements(config))
    text = "".join(data.decode() for _, data in out.files)
    return lock, [doc.body for doc in out.documents], text


def test_install_renders_with_every_image_pinned(rendered: tuple[ReleaseLock, list[dict[str, Any]], str]) -> None:
    lock, docs, text = rendered
    assert PLACEHOLDER_RE.findall(text) == []
    images = set(re.findall(r"image: (\S+)", text))
    expected = {
        name: str(ImageRef.parse(lock.components[name].repository).with_digest(lock.components[name].index_digest))
        for name in (
            "reconciler",
            "reconciler-manager",
            "hydration-controller",
            "oci-sync",
            "helm-sync",
            "gcenode-askpass-sidecar",
            "resource-group-controller",
            "git-sync",
            "otel-collector",
        )
    }
    assert images == set(expected.values())
    assert all("@sha256:" in image for image in images)
    kinds = [d["kind"] for d in docs]
    assert kinds.count("CustomResourceDefinition") == 7 and kinds[0] == "Namespace"


def test_reconciler_template_in_the_configmap_is_rewritten(
    rendered: tuple[ReleaseLock, list[dict[str, Any]], str],
) -> None:
    lock, docs, _ = rendered
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "reconciler-manager-cm")
    template = yaml.safe_load(cm["data"]["deployment.yaml"])
    by_container = {c["name"]: c["image"] for c in template["spec"]["template"]["spec"]["containers"]}
    assert by_container["git-sync"] == str(lock.components["git-sync"].ref)
    assert by_container["reconciler"] == str(lock.components["reconciler"].ref)
    assert by_container["otel-agent"] == str(lock.components["otel-collector"].ref)


def test_with_shell_image_is_given_to_the_reconciler_manager_by_digest(
    rendered: tuple[ReleaseLock, list[dict[str, Any]], str],
) -> None:
    """Patch 0004: enableShellInRendering needs the with-shell image, which a digest cannot be renamed to."""
    lock, docs, _ = rendered
    manager = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "reconciler-manager")
    env = {e["name"]: e["value"] for c in manager["spec"]["template"]["spec"]["containers"] for e in c.get("env", [])}
    assert env["HYDRATION_CONTROLLER_WITH_SHELL_IMAGE"] == str(lock.components["hydration-controller-with-shell"].ref)


def test_every_placeholder_in_the_tree_is_replaced_by_a_component(config: Config) -> None:
    """The stand-in tree and images.yaml agree: each placeholder names a component (the webhook's too)."""
    in_tree = {m for p in TREE.rglob("*.yaml") for m in PLACEHOLDER_RE.findall(p.read_text())}
    named = {r for r in replacements(config) if PLACEHOLDER_RE.fullmatch(r)}
    assert in_tree == named


def test_rootsync_oci_example() -> None:
    doc = yaml.safe_load((ROOT / "manifests" / "examples" / "rootsync-oci.yaml").read_text())
    assert (doc["apiVersion"], doc["kind"]) == ("configsync.gke.io/v1beta1", "RootSync")
    assert doc["metadata"]["namespace"] == "config-management-system"
    assert doc["spec"]["sourceType"] == "oci"
    assert doc["spec"]["oci"]["auth"] in ("none", "gcenode", "gcpserviceaccount", "k8sserviceaccount")
    assert ImageRef.parse(doc["spec"]["oci"]["image"]).digest is not None
