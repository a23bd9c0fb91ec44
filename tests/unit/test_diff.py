"""diff: images and manifest documents changed between two releases (no registry)."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from archlift.checks.diff import diff_locks, diff_manifests, diff_releases, format_text
from archlift.cli import main
from archlift.lock import ReleaseLock
from archlift.steps.render import render

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "render"
DEMO_TEMPLATES = ROOT / "examples" / "demo" / "manifests"
A, B = FIXTURES / "release-a.json", FIXTURES / "release-b.json"


@pytest.fixture()
def rendered(tmp_path: Path) -> tuple[Path, Path]:
    out = []
    for name, lock_file in (("a", A), ("b", B)):
        lock = ReleaseLock.read(lock_file)
        render(lock, templates=DEMO_TEMPLATES, values={"namespace": "archlift-demo"}).write(tmp_path / name)
        out.append(tmp_path / name)
    return out[0], out[1]


def test_a_changed_digest_and_version() -> None:
    a, b = ReleaseLock.read(A), ReleaseLock.read(B)
    changes = {c.component: c for c in diff_locks(a, b)}
    assert {n: c.change for n, c in changes.items()} == {
        "busybox": "unchanged",
        "hello": "changed",
        "toolbox": "unchanged",
    }
    text = format_text(diff_releases(a, b))
    assert "images: 1 changed, 0 added, 0 removed, 2 unchanged" in text
    assert "~ hello    v1.0.0 -> v1.1.0" in text
    assert f"{a.components['hello'].index_digest} -> {b.components['hello'].index_digest}" in text
    assert "toolbox" not in text


def test_added_and_removed_components() -> None:
    a = ReleaseLock.read(A)
    b = replace(a, components={k: v for k, v in a.components.items() if k != "toolbox"})
    c = replace(a, components={**a.components, "extra": replace(a.components["hello"], name="extra")})
    assert [(x.component, x.change) for x in diff_locks(a, b) if x.change != "unchanged"] == [("toolbox", "removed")]
    text = format_text(diff_releases(a, c))
    assert "0 changed, 1 added, 0 removed, 3 unchanged" in text
    assert f"+ extra    v1.0.0  {a.components['hello'].ref}" in text


def test_same_release_is_no_change(rendered: tuple[Path, Path]) -> None:
    a = ReleaseLock.read(A)
    result = diff_releases(a, a, (rendered[0], rendered[0]))
    assert not result.changed
    assert result.unchanged_documents == 5


def test_changed_documents_get_a_unified_diff(rendered: tuple[Path, Path]) -> None:
    changes, unchanged = diff_manifests(*rendered)
    assert unchanged == 3
    assert [(c.title, c.change) for c in changes] == [
        ("ConfigMap/archlift-demo/archlift-demo-release", "changed"),
        ("Deployment/archlift-demo/hello", "changed"),
    ]
    deployment = changes[1]
    assert deployment.diff.startswith("--- a/Deployment/archlift-demo/hello\n+++ b/Deployment/archlift-demo/hello\n")
    hello_a, hello_b = (ReleaseLock.read(f).components["hello"].ref for f in (A, B))
    assert f"-        image: {hello_a}\n" in deployment.diff
    assert f"+        image: {hello_b}\n" in deployment.diff
    assert (deployment.added, deployment.removed) == (3, 3)


def test_added_and_removed_documents(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    b = tmp_path / "b2"
    shutil.copytree(rendered[1], b)
    (b / "2_cronjob_archlift-demo_toolbox.yaml").unlink()
    (b / "extra.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: extra, namespace: x}\n")
    changes, _ = diff_manifests(rendered[0], b)
    assert [(c.title, c.change) for c in changes] == [
        ("ConfigMap/archlift-demo/archlift-demo-release", "changed"),
        ("Deployment/archlift-demo/hello", "changed"),
        ("ConfigMap/x/extra", "added"),
        ("CronJob/archlift-demo/toolbox", "removed"),
    ]
    assert changes[3].diff.splitlines()[1] == "+++ /dev/null"


def test_formatting_alone_is_no_change(rendered: tuple[Path, Path], tmp_path: Path) -> None:
    b = tmp_path / "reformatted"
    b.mkdir()
    # one file holding every document, with keys in another order
    docs = [p.read_text() for p in sorted(rendered[0].iterdir())]
    (b / "all.yml").write_text(
        "---\n".join(docs).replace("apiVersion: v1\nkind: Namespace", "kind: Namespace\napiVersion: v1")
    )
    changes, unchanged = diff_manifests(rendered[0], b)
    assert changes == [] and unchanged == 5


def test_cli_stat_json_and_exit_code(rendered: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    args = [str(A), str(B), "--manifests-a", str(rendered[0]), "--manifests-b", str(rendered[1])]
    assert main(["diff", *args, "--stat"]) == 0
    out = capsys.readouterr().out
    assert "manifests: 2 changed, 0 added, 0 removed, 3 unchanged" in out
    assert "  ~ Deployment/archlift-demo/hello (+3 -3)" in out
    assert "@@" not in out

    assert main(["diff", *args, "--json", "--exit-code"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["changed"] is True
    assert [i["component"] for i in data["images"]] == ["hello"]
    assert data["images"][0]["old"]["version"] == "v1.0.0" and data["images"][0]["new"]["version"] == "v1.1.0"
    assert data["unchanged_images"] == ["busybox", "toolbox"]
    assert {d["document"] for d in data["documents"]} == {
        "ConfigMap/archlift-demo/archlift-demo-release",
        "Deployment/archlift-demo/hello",
    }

    assert main(["diff", str(A), str(A), "--exit-code"]) == 0
    assert main(["diff", str(A), str(B), "--manifests-a", str(rendered[0])]) == 2
    assert "give both --manifests-a and --manifests-b" in capsys.readouterr().err
