"""The Config Sync distribution (root images.yaml): it validates and plans at v1.24.3 with every
patch listed; its patches are well-formed, and patch 0002 leaves the images without helm or
kustomize free of the Go module proxy; its install renders with every image pinned by digest
from a release lock made here, over tests/fixtures/config-sync-tree (a stand-in for the
upstream tree, which CI cannot fetch); archlift diff tells a v1.22.0 release from it."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.cli import run_archlift

from archlift.config.model import Config, load_config
from archlift.lock import ComponentRelease, ReleaseLock, Upstream
from archlift.refs import Digest, ImageRef
from archlift.steps.render import UpstreamFile, render

ROOT = Path(__file__).resolve().parents[2]
IMAGES_YAML = ROOT / "images.yaml"
TREE = Path(__file__).resolve().parents[1] / "fixtures" / "config-sync-tree"
URL = "https://github.com/GoogleContainerTools/config-sync.git"
VERSION, COMMIT = "v1.24.3", "68ef1fae716a108756cb249a4fca3ad1a533afc2"
OLD_VERSION, OLD_COMMIT = "v1.22.0", "b259f899954123f52668e61fe2092fe5d17be833"  # the release before the upgrade
PATCH_0002 = ROOT / "patches" / "config-sync" / "0002-helm-kustomize-for-target-platform.patch"
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
    "otel-collector": "docker.io/otel/opentelemetry-collector-contrib:0.152.0",
}
PLACEHOLDER_RE = re.compile(r"\b[A-Z][A-Z_]*_IMAGE_NAME\b")


@pytest.fixture(scope="module")
def config() -> Config:
    return load_config(IMAGES_YAML)


def test_validates() -> None:
    proc = run_archlift("validate", "images.yaml", cwd=ROOT, unset=("ARCHLIFT_REGISTRY", "CONFIG_SYNC_"), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "10 to build, 2 to mirror" in proc.stdout


def test_plan_lists_every_config_sync_image() -> None:
    proc = run_archlift(
        "plan", "images.yaml", "--json", cwd=ROOT, unset=("ARCHLIFT_REGISTRY", "CONFIG_SYNC_"), timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    plan = {c["name"]: c for c in json.loads(proc.stdout)["components"]}
    assert set(plan) == set(BUILT) | set(MIRRORED)
    patches = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "patches" / "config-sync").glob("*.patch"))
    assert len(patches) == 4
    for name in BUILT:
        c = plan[name]
        assert c["source"]["git"] == URL
        assert (c["source"]["ref"], c["source"]["commit"]) == (VERSION, COMMIT)
        assert c["patches"] == patches
        assert c["build"]["dockerfile"] == "build/all/Dockerfile"
        assert c["build"]["target"] == name
        assert c["platforms"] == ["linux/amd64", "linux/arm64"]
        assert c["image"] == f"ghcr.io/example/config-sync/{name}"
        assert "GOLANG_IMAGE" in c["build"]["args"] and "DEBIAN_BASE_IMAGE" in c["build"]["args"]
        assert c["build"]["args"]["GOLANG_IMAGE"] == "docker.io/library/golang:1.26.4"  # v1.24.3's go.mod: go 1.26
        assert (c["build"]["args"]["HELM_VERSION"], c["build"]["args"]["KUSTOMIZE_VERSION"]) == ("v3.21.1", "v5.4.2")
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


def make_lock(config: Config, *, old: bool = False) -> ReleaseLock:
    """A release of every component, by made-up digests (one per built version and mirrored
    image), as the build and mirror steps would write it; ``old``: the v1.22.0 release, when
    the collector was mirrored at 0.118.0 (git-sync has not changed)."""
    components = {}
    for name, comp in config.components.items():
        mirror = str(comp.mirror) if comp.mirror else None
        if old and mirror:
            mirror = mirror.replace(":0.152.0", ":0.118.0")
        version = (OLD_VERSION if old else comp.source.ref or "") if comp.source else mirror
        upstream = None
        if comp.source is not None:
            upstream = Upstream(
                comp.source.git or "", version or "", OLD_COMMIT if old else comp.source.commit or "", version or ""
            )
        components[name] = ComponentRelease(
            name=name,
            kind="mirrored" if mirror else "built",
            repository=comp.image.name,
            index_digest=Digest.of(f"index {name} {version}".encode()),
            platforms={str(p): Digest.of(f"{p} {name} {version}".encode()) for p in comp.platforms},
            tags=(version or "",) if comp.source else (ImageRef.parse(mirror).tag or "",) if mirror else (),
            upstream=upstream,
            source_image=mirror,
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


def _new_file(patch: Path, path: str) -> str:
    """The content of the file ``path`` that ``patch`` creates."""
    out, inside = [], False
    for line in patch.read_text().splitlines():
        if line.startswith("diff --git "):
            inside = line.endswith(f" b/{path}")
        elif inside and line.startswith("+") and not line.startswith("+++ "):
            out.append(line[1:])
    return "\n".join(out) + "\n"


def test_only_the_images_with_helm_or_kustomize_depend_on_the_third_party_stage() -> None:
    """Patch 0002: no `COPY --from=third-party` into the bins stage (every image builds from it);
    each COPY of helm, kustomize or their NOTICES that the four images that ship them made from
    bins now comes from the third-party stage, and nothing else does."""
    lines = PATCH_0002.read_text().splitlines()
    added = [x.removeprefix("+COPY --from=third-party /third_party/") for x in lines if x.startswith("+COPY --from")]
    removed = [x.removeprefix("-COPY --from=bins /workspace/.output/third_party/") for x in lines if x.startswith("-")]
    removed = [x for x in removed if not x.startswith("--")]
    assert added == removed and len(added) == 14  # hydration-controller, helm-sync, with-shell (4, 2, 4), nomos (4)
    assert {x.split()[0] for x in added} == {"helm/helm", "helm/NOTICES", "kustomize/kustomize", "kustomize/NOTICES"}
    assert not [x for x in lines if x.startswith("+") and ".output/third_party" in x]
    assert "+ARG TARGETOS TARGETARCH GOPROXY GOSUMDB HELM_VERSION=v3.21.1 KUSTOMIZE_VERSION=v5.4.2" in lines


def _run_third_party(tmp_path: Path, go: str, goproxy: str) -> subprocess.CompletedProcess[str]:
    """scripts/build-third-party.sh from patch 0002, with ``go`` (a shell script) as the Go toolchain."""
    script = tmp_path / "build-third-party.sh"
    script.write_text(_new_file(PATCH_0002, "scripts/build-third-party.sh"))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "go").write_text("#!/bin/sh\n" + go)
    (tmp_path / "bin" / "go").chmod(0o755)
    env = {
        "PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        "GOOS": "linux",
        "GOARCH": "arm64",
        "HELM_VERSION": "v3.21.1",
        "KUSTOMIZE_VERSION": "v5.4.2",
        "GOPROXY": goproxy,
        "GOSUMDB": "",
    }
    return subprocess.run(
        ["sh", str(script), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=60
    )


# `go env` as go answers it, then what go mod download -json prints when it cannot reach the proxy
# (the Error text is Go 1.24's, seen on this host with no network).
GO_ENV = 'case "$1 $2" in "env GOPROXY") echo "$GOPROXY"; exit ;; "env GOSUMDB") echo sum.golang.org; exit ;; esac\n'
GO_OFFLINE = (
    GO_ENV
    + """cat <<'EOF'
{
	"Path": "helm.sh/helm/v3",
	"Version": "v3.21.1",
	"Error": "helm.sh/helm/v3@v3.21.1: Get \\"https://goproxy.internal/helm.sh/helm/v3/@v/v3.21.1.info\\": dial tcp: \
lookup goproxy.internal: no such host"
}
EOF
exit 1
"""
)


def test_an_unreachable_goproxy_is_said_in_plain_words(tmp_path: Path) -> None:
    proc = _run_third_party(tmp_path, GO_OFFLINE, "https://goproxy.internal,direct")
    assert proc.returncode == 1
    assert "dial tcp: lookup goproxy.internal: no such host" in proc.stderr  # go's own words first
    assert (
        "cannot download the Go module helm.sh/helm/v3@v3.21.1 from GOPROXY=https://goproxy.internal,direct"
        in proc.stderr
    )
    assert "GOSUMDB=sum.golang.org" in proc.stderr and "Set GOPROXY" in proc.stderr
    assert "the other images build without the Go module proxy" in proc.stderr
    assert "sed:" not in proc.stderr and not (tmp_path / "out").exists()


def test_another_go_failure_is_not_blamed_on_the_proxy(tmp_path: Path) -> None:
    proc = _run_third_party(tmp_path, GO_ENV + "echo 'go: go.mod requires go >= 1.26.0' >&2\nexit 1\n", "https://x")
    assert proc.returncode == 1
    assert "go.mod requires go >= 1.26.0" in proc.stderr and "cannot download" not in proc.stderr


def test_diff_from_the_v1_22_0_release(config: Config, tmp_path: Path) -> None:
    """`archlift diff` of the v1.22.0 release and the v1.24.3 one (two locks made here): every built
    image and the collector change, git-sync does not; the rendered install changes where they appear."""
    files = [UpstreamFile(TREE / u.path, f"config-sync:{u.path}") for u in config.manifests.upstream]
    paths = {}
    for name, lock in (("v1.22.0", make_lock(config, old=True)), ("v1.24.3", make_lock(config))):
        paths[name] = tmp_path / f"release-{name}.json"
        lock.write(paths[name])
        render(lock, upstream=files, replacements=replacements(config)).write(tmp_path / f"manifests-{name}")
    proc = run_archlift(
        "diff",
        str(paths["v1.22.0"]),
        str(paths["v1.24.3"]),
        "--manifests-a",
        str(tmp_path / "manifests-v1.22.0"),
        "--manifests-b",
        str(tmp_path / "manifests-v1.24.3"),
        "--stat",
        cwd=ROOT,
        unset=("ARCHLIFT_REGISTRY", "CONFIG_SYNC_"),
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "images: 11 changed, 0 added, 0 removed, 1 unchanged" in out
    assert "~ reconciler" in out and "v1.22.0 -> v1.24.3" in out
    assert "~ otel-collector" in out and "0.118.0 -> 0.152.0" in out
    assert "~ git-sync" not in out  # the same v4.4.2 image in both
    assert "~ Deployment/config-management-system/reconciler-manager" in out
    assert "~ ConfigMap/config-management-system/reconciler-manager-cm" in out
