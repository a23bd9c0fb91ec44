"""The GitHub Actions workflows, checked structurally (actionlint and zizmor run on them in
``nox -s lint``, which .ci/run runs too), for what the linters do not insist on: every action is
pinned by a full commit SHA with a ``# vX`` comment, the token is read-only
unless a job says otherwise, checkouts do not persist credentials, and no
``${{ }}`` expression is expanded inside a ``run:`` script.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_name, step) for job_name, job in workflow["jobs"].items() for step in job.get("steps", [])]


def test_the_three_workflows_exist() -> None:
    assert {p.name for p in FILES} >= {"ci.yml", "release.yml", "release-split.yml"}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_actions_are_pinned_by_sha_with_a_version_comment(path: Path) -> None:
    for line in path.read_text().splitlines():
        m = re.search(r"uses:\s*(\S+)(.*)$", line)
        if not m:
            continue
        action, rest = m.groups()
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@[0-9a-f]{40}", action), f"{path.name}: '{action}' is not pinned by SHA"
        assert re.search(r"#\s*v\d+(\.\d+)*", rest), f"{path.name}: '{action}' has no '# vX' comment"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_least_privilege(path: Path) -> None:
    wf = load(path)
    assert wf["permissions"] == {"contents": "read"}, f"{path.name}: top-level permissions must be contents: read"
    for name, job in wf["jobs"].items():
        extra = {k: v for k, v in (job.get("permissions") or {}).items() if v != "read"}
        assert set(extra) <= {"packages", "id-token"}, f"{path.name}:{name} asks for {extra}"
        uses_secrets = "secrets." in yaml.safe_dump(job)
        if uses_secrets and path.name != "ci.yml":
            assert job.get("environment"), f"{path.name}:{name} uses secrets outside an environment"
    if path.name == "ci.yml":
        assert "secrets." not in path.read_text(), "CI on pull requests must not use secrets"
        assert all("permissions" not in job for job in wf["jobs"].values())


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_checkouts_do_not_persist_credentials(path: Path) -> None:
    checkouts = [s for _, s in steps(load(path)) if str(s.get("uses", "")).startswith("actions/checkout@")]
    assert checkouts
    for step in checkouts:
        assert step.get("with", {}).get("persist-credentials") is False


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_expressions_inside_run_scripts(path: Path) -> None:
    for job, step in steps(load(path)):
        assert "${{" not in str(step.get("run", "")), f"{path.name}:{job}: pass values to run: through env:"


def test_release_runs_nox_with_qemu_buildx_and_login() -> None:
    used = [str(s.get("uses", "")).split("@")[0] for _, s in steps(load(WORKFLOWS / "release.yml"))]
    for action in ("docker/setup-qemu-action", "docker/setup-buildx-action", "docker/login-action"):
        assert action in used
    runs = [str(s.get("run", "")) for _, s in steps(load(WORKFLOWS / "release.yml"))]
    assert "nox -s release" in runs
    assert load(WORKFLOWS / "release.yml")[True]["push"]["tags"] == ["v*"]  # PyYAML reads `on:` as True


def test_split_release_builds_natively_and_merges() -> None:
    wf = load(WORKFLOWS / "release-split.yml")
    build = wf["jobs"]["build"]
    matrix = build["strategy"]["matrix"]["include"]
    assert {(m["runner"], m["platform"]) for m in matrix} == {
        ("ubuntu-24.04", "linux/amd64"),
        ("ubuntu-24.04-arm", "linux/arm64"),
    }
    used = [str(s.get("uses", "")).split("@")[0] for _, s in steps(wf)]
    assert "docker/setup-qemu-action" not in used, "the split path builds natively, without QEMU"
    build_runs = " ".join(str(s.get("run", "")) for s in build["steps"])
    assert '--platform "$PLATFORM" --by-digest --lock "dist/partial-$ARCH.json"' in build_runs
    merge = wf["jobs"]["merge"]
    assert merge["needs"] == "build"
    merge_runs = [str(s.get("run", "")) for s in merge["steps"]]
    assert "archlift merge dist/partial-*.json" in merge_runs


def test_ci_sets_the_host_up_like_dot_ci_run() -> None:
    wf = load(WORKFLOWS / "ci.yml")
    assert set(wf[True]) == {"pull_request", "push"}
    runs = [str(s.get("run", "")) for _, s in steps(wf)]
    assert "bash scripts/setup-host.sh" in runs
    assert "nox -s lint" in runs and "nox -s tests" in runs


PLACEHOLDERS = {
    "$PLATFORM": "linux/arm64",
    "$ARCH": "arm64",
    "$ARCHLIFT_MANIFESTS_REPO": "registry.example/manifests",
    "$RELEASE_TAG": "v1.0.0",
    "dist/partial-*.json": "dist/partial-amd64.json dist/partial-arm64.json",
}


def test_archlift_commands_in_the_workflows_parse_with_this_cli() -> None:
    """Every `archlift ...` line the workflows run is accepted by the real argument parser."""
    import shlex

    from archlift.cli import _parser

    parser = _parser()
    seen = []
    for path in FILES:
        for _, step in steps(load(path)):
            for line in str(step.get("run", "")).splitlines():
                if not line.startswith("archlift "):
                    continue
                for key, value in PLACEHOLDERS.items():
                    line = line.replace(key, value)
                argv = shlex.split(line)[1:]
                try:
                    args = parser.parse_args(argv)
                except SystemExit:
                    pytest.fail(f"{path.name}: 'archlift {' '.join(argv)}' is refused by the CLI")
                assert getattr(args, "func", None), argv
                seen.append(argv[0])
    assert {"build", "merge", "render", "publish", "sign", "report"} <= set(seen)
