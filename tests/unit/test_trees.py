"""Upstream install manifests taken from a source's pinned, patched tree and pinned by digest."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from archlift.cli import main
from archlift.config.model import load_config
from archlift.localenv import make_git_repo
from archlift.lock import ComponentRelease, ReleaseLock, Upstream
from archlift.refs import Digest
from archlift.steps.trees import source_tree

DEPLOY = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: app, namespace: default}
spec:
  selector: {matchLabels: {app: app}}
  template:
    metadata: {labels: {app: app}}
    spec:
      containers:
      - name: app
        image: example.com/upstream/app:v1.0.0
"""
PATCH = """\
diff --git a/deploy.yaml b/deploy.yaml
--- a/deploy.yaml
+++ b/deploy.yaml
@@ -2,3 +2,3 @@
 kind: Deployment
-metadata: {name: app, namespace: default}
+metadata: {name: app, namespace: apps}
 spec:
"""


def test_render_takes_the_upstream_manifest_from_the_patched_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    upstream = tmp_path / "src"
    upstream.mkdir()
    (upstream / "Dockerfile").write_text("FROM scratch\n")
    (upstream / "deploy.yaml").write_text(DEPLOY)
    repo = make_git_repo(upstream, tmp_path / "app.git", tags=("v1.0.0",))
    (tmp_path / "patches" / "app").mkdir(parents=True)
    (tmp_path / "patches" / "app" / "0001-namespace.patch").write_text(PATCH)
    config = tmp_path / "images.yaml"
    config.write_text(
        "registry: registry.example.com/rel\n"
        "sources:\n  app: {git: app.git, ref: v1.0.0}\n"
        "components:\n  app:\n    source: app\n    replaces: [example.com/upstream/app]\n"
        "manifests:\n  upstream: [{source: app, path: deploy.yaml}]\n"
    )
    tree = source_tree(load_config(config), "app")
    assert "namespace: apps" in (tree / "deploy.yaml").read_text()
    assert source_tree(load_config(config), "app") == tree  # reused, not made again

    digest = Digest.of(b"index")
    lock = ReleaseLock(
        components={
            "app": ComponentRelease(
                name="app",
                kind="built",
                repository="registry.example.com/rel/app",
                index_digest=digest,
                platforms={"linux/amd64": Digest.of(b"a"), "linux/arm64": Digest.of(b"b")},
                tags=("v1.0.0",),
                upstream=Upstream(repo.url, "v1.0.0", repo.commit, "v1.0.0"),
            )
        }
    )
    lock.write(tmp_path / "release.json")
    out = tmp_path / "out"
    assert main(["render", str(config), "--lock", str(tmp_path / "release.json"), "--out", str(out)]) == 0
    docs = [yaml.safe_load(p.read_text()) for p in sorted(out.glob("*.yaml"))]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "apps"
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"registry.example.com/rel/app@{digest}"
