"""Untrusted text (issue 12 item 6): templates render in jinja2's immutable sandbox, and
YAML is read with a budget (aliases, recursion, depth), so that a template or a few hundred
bytes of YAML from a pull request can neither reach Python nor cost minutes or gigabytes.
Each refusal is one located error, exit status 2, no traceback, nothing written."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archlift.cli import main
from archlift.config.loader import ALIAS_BUDGET, MAX_DEPTH

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "render"

# The classic "billion laughs": 9 levels of 9 aliases, 9**9 (387 million) strings, 342 bytes.
BOMB = "".join(
    f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
    for prev, name in zip(["", *"abcdefgh"], "abcdefghi", strict=True)
)


def test_the_bomb_is_small_and_would_be_huge() -> None:
    assert len(BOMB) < 400
    assert BOMB.count("*") == 8 * 9  # each level names the one before it nine times


def _project(tmp_path: Path, templates: dict[str, str], *, upstream: str = "", values: str = "") -> Path:
    """images.yaml with manifests (templates, an upstream file, values) and a release lock."""
    (tmp_path / "manifests").mkdir(parents=True)
    for name, text in templates.items():
        (tmp_path / "manifests" / name).write_text(textwrap.dedent(text))
    upstream_line = "  upstream: [{path: install.yaml}]\n" if upstream else ""
    if upstream:
        (tmp_path / "install.yaml").write_text(upstream)
    (tmp_path / "images.yaml").write_text(
        "registry: registry.example.com/demo\n"
        "components:\n"
        "  hello: {source: {path: .}}\n"
        "  toolbox: {source: {path: .}}\n"
        "  busybox: {mirror: 'busybox:1.35'}\n"
        "manifests:\n"
        "  templates: manifests/\n" + upstream_line + (values or "  values: {namespace: demo}\n")
    )
    (tmp_path / "dist").mkdir()
    shutil.copy(FIXTURES / "release-a.json", tmp_path / "dist" / "release.json")
    return tmp_path


CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata: {{name: probe, namespace: demo}}
data:
  out: "{expression}"
"""


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert captured.err.startswith("archlift: invalid input: ")
    return captured.err


# --- templates -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "access to attribute '__class__' of 'str' object is unsafe"),
        (
            "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
            "access to attribute '__init__' of 'type' object is unsafe",
        ),
        (
            "{{ lipsum.__globals__['os'].system('touch MARKER') }}",
            "access to attribute '__globals__' of 'function' object is unsafe",
        ),
        ("{{ values.update({'namespace': 'x'}) }}", "access to attribute 'update' of 'dict' object is unsafe"),
        ("{{ release.hello.tags.append('x') }}", "access to attribute 'append' of 'list' object is unsafe"),
        ("{{ '{0.__class__}'.format(values) }}", "access to attribute '__class__' of 'dict' object is unsafe"),
    ],
    ids=["mro-subclasses", "cycler-popen", "lipsum-system", "mutate-values", "mutate-release", "format-string"],
)
def test_a_template_cannot_reach_python_or_run_a_command(
    expression: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, {"probe.yaml.j2": CONFIGMAP.format(expression=expression)}))
    err = _refused(capsys, ["render"])
    assert f"manifests/probe.yaml.j2:5: {problem}" in err, err
    assert not (tmp_path / "MARKER").exists()  # no command ran
    assert not (tmp_path / "dist" / "manifests").exists()  # nothing written


def test_the_sandbox_refusal_from_a_real_process(tmp_path: Path) -> None:
    expression = "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}"
    project = _project(tmp_path, {"probe.yaml.j2": CONFIGMAP.format(expression=expression)})
    proc = subprocess.run(
        [sys.executable, "-m", "archlift", "render"], cwd=project, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert proc.stderr == (
        "archlift: invalid input: 1 template problem(s) in manifests:\n"
        "  manifests/probe.yaml.j2:5: access to attribute '__init__' of 'type' object is unsafe.\n"
        "  templates see release.<component>.{ref,digest,repository,tags,version,platforms}, values.<key> "
        "and image('<component>')\n"
    )
    assert not (project / "MARKER").exists()
    assert not (project / "dist" / "manifests").exists()


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("{{ 'x' * 1000000000 }}", "manifests/probe.yaml.j2:5: '*' would make 1000000000 items (at most 1048576)"),
        ("{{ [0] * 1000000000 }}", "manifests/probe.yaml.j2:5: '*' would make 1000000000 items (at most 1048576)"),
        ("{{ 10 ** 1000000000 }}", "manifests/probe.yaml.j2:5: the exponent 1000000000 is larger than 1024"),
        (
            "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxxxx{% endfor %}{% endfor %}",
            "manifests/probe.yaml.j2: the template produces more than 16777216 characters; refused",
        ),
    ],
    ids=["string", "list", "power", "output"],
)
def test_a_template_cannot_ask_for_gigabytes(
    expression: str, problem: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, {"probe.yaml.j2": CONFIGMAP.format(expression=expression)}))
    assert problem in _refused(capsys, ["render"])


def test_what_templates_legitimately_do_still_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    expression = "{{ values.namespace | upper }} {{ release.hello.tags | join(',') }} {{ '-' * 3 }} {{ 2 ** 10 }}"
    monkeypatch.chdir(_project(tmp_path, {"probe.yaml.j2": CONFIGMAP.format(expression=expression)}))
    assert main(["render"]) == 0, capsys.readouterr().err
    out = (tmp_path / "dist" / "manifests" / "2_configmap_demo_probe.yaml").read_text()
    assert "  out: DEMO v1.0.0 --- 1024\n" in out


def test_a_template_or_include_cannot_lead_outside_the_templates_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token: s3cr3t\n")
    project = _project(tmp_path / "p", {"probe.yaml.j2": CONFIGMAP.format(expression="{% include '_in.j2' %}")})
    (project / "manifests" / "_in.j2").symlink_to(secret)
    (project / "manifests" / "leak.yaml").symlink_to(secret)
    monkeypatch.chdir(project)
    err = _refused(capsys, ["render"])
    assert "'_in.j2' leads outside the templates directory" in err
    assert "manifests/leak.yaml: leads outside the templates directory (a symbolic link)" in err
    assert "s3cr3t" not in err


# --- YAML --------------------------------------------------------------------------------------------
def test_an_alias_bomb_in_an_upstream_manifest_is_refused_by_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, {}, upstream=BOMB))
    err = _refused(capsys, ["render"])
    assert err.startswith(
        f"archlift: invalid input: install.yaml: line 6: aliases expand this YAML beyond {ALIAS_BUDGET} nodes "
        "(at *e); archlift refuses it (an alias bomb?)"
    ), err
    assert not (tmp_path / "dist" / "manifests").exists()


def test_an_alias_bomb_in_a_template_is_refused_by_render(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(_project(tmp_path, {"bomb.yaml": BOMB, "bomb2.yaml.j2": BOMB}))
    err = _refused(capsys, ["render"])
    assert "manifests/bomb.yaml: line 6: aliases expand this YAML beyond" in err
    assert "manifests/bomb2.yaml.j2 (rendered): rendered line 6: aliases expand this YAML beyond" in err


@pytest.mark.parametrize("where", ["file", "string"])
def test_an_alias_bomb_is_refused_by_audit(
    where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "install.yaml"
    if where == "file":
        path.write_text(BOMB)
        err = _refused(capsys, ["audit", str(path)])
        assert err.startswith(f"archlift: invalid input: {path}:6:8: aliases expand this YAML beyond"), err
        return
    # YAML inside a string (a ConfigMap carrying a Deployment) is read with the same budget: a bomb
    # there is not YAML to look into, and the file's own images are still found
    path.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: a, image: 'busybox:1.36'}]\n"
        "---\nkind: ConfigMap\ndata:\n  d: |\n    image: x\n" + textwrap.indent(BOMB, "    ")
    )
    from archlift.checks.audit import images_in_yaml

    assert [image for image, _ in images_in_yaml(path.read_text(), str(path))] == ["busybox:1.36"]


def test_an_alias_bomb_in_images_yaml_values_is_refused_at_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = "  values:\n" + textwrap.indent(BOMB, "    ")
    project = _project(tmp_path, {}, values=values)
    err = _refused(capsys, ["validate", str(project / "images.yaml")])
    assert err == (
        f"archlift: invalid input: {project / 'images.yaml'}:14:12: aliases expand this YAML beyond "
        f"{ALIAS_BUDGET} nodes (at *e); archlift refuses it (an alias bomb?)\n"
        "  write the YAML out without anchors and aliases\n"
    )


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ("a: &a [1, *a]\n", "alias *a refers to the node that contains it\n  write the YAML out without", 1),
        ("a:\n  b: &x {c: *x}\n", "alias *x refers to the node that contains it", 2),
        ("x: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n", f"deeper than {MAX_DEPTH} levels\n  flatten", 1),
    ],
    ids=["recursive", "recursive-nested", "deep"],
)
def test_recursive_and_deep_yaml_is_refused(
    text: str, problem: str, line: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "install.yaml"
    path.write_text(text)
    assert problem.split("\n")[0] in _refused(capsys, ["audit", str(path)])
    config = tmp_path / "images.yaml"
    config.write_text(text)
    err = _refused(capsys, ["validate", str(config)])
    assert f"{config}:{line}:" in err and problem in err


def test_anchors_and_merge_keys_within_the_budget_still_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "images.yaml"
    config.write_text(
        "x-defaults: &defaults {platforms: [linux/amd64]}\n"
        "components:\n"
        "  a: {<<: *defaults, mirror: 'busybox:1.36'}\n"
        "  b: {<<: *defaults, mirror: 'busybox:1.37'}\n"
    )
    err = _refused(capsys, ["validate", str(config)])
    assert "unknown key 'x-defaults'" in err  # read past the anchors: only the key is wrong
    config.write_text(
        "components:\n  a: &a {platforms: &p [linux/amd64], mirror: 'busybox:1.36'}\n"
        "  b: {platforms: *p, mirror: 'busybox:1.37'}\n"
    )
    assert main(["validate", str(config)]) == 0, capsys.readouterr().err
    (tmp_path / "t").mkdir()
    config.write_text(
        "components: {a: {mirror: 'busybox:1.36'}}\n"
        "manifests: {templates: t, values: {common: &c {team: x}, web: {<<: *c, port: 80}, db: *c}}\n"
    )
    from archlift.config.model import load_config

    values = load_config(config).manifests.values
    assert values == {"common": {"team": "x"}, "web": {"team": "x", "port": 80}, "db": {"team": "x"}}
