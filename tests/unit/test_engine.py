"""The BuildKit progress parser, fed with saved real ``docker buildx bake --progress=plain`` output."""

from __future__ import annotations

import json
from pathlib import Path

from archlift.config.model import Component
from archlift.refs import Digest, ImageRef, Platform
from archlift.steps.engine import BuildJob, _Watch, failure_text, target_platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "buildkit"


def _job(name: str) -> BuildJob:
    comp = Component(
        name, ImageRef.parse(f"registry.invalid/{name}"), None, None, None, (Platform.parse("linux/amd64"),), ()
    )
    return BuildJob(comp, None, None, Path("/nonexistent"))  # type: ignore[arg-type]


def test_each_target_is_reported_as_soon_as_its_oci_export_is_done() -> None:
    exported: list[tuple[str, Digest]] = []
    watch = _Watch(
        {"one": _job("one"), "two": _job("two")}, lambda *_: None, False, lambda j, d: exported.append((j.comp.name, d))
    )
    for line in (FIXTURES / "bake-two-targets.plain.txt").read_text().splitlines():
        watch.line(line)
    metadata = json.loads((FIXTURES / "bake-two-targets.metadata.json").read_text())
    # "two" (one platform: a bare manifest) finished first, "one" (an index over two platforms) second
    assert exported == [(t, Digest.parse(metadata[t]["containerimage.digest"])) for t in ("two", "one")]


def test_step_lines_go_to_the_live_display_under_their_own_component() -> None:
    seen: list[tuple[str, str, str]] = []
    watch = _Watch({"one": _job("one"), "two": _job("two")}, lambda *a: seen.append(a), True, None)
    for line in (FIXTURES / "bake-two-targets.plain.txt").read_text().splitlines():
        watch.line(line)
    assert seen, "no step was reported"
    assert {c for c, _, _ in seen} <= {"one", "two"}
    assert all(p in ("linux/amd64", "linux/arm64") for _, p, _ in seen), seen


def test_a_failure_begins_with_buildkits_error_then_the_failing_step_and_the_dockerfile() -> None:
    text = failure_text((FIXTURES / "bake-failed.plain.txt").read_text().splitlines())
    lines = text.splitlines()
    assert lines[0] == 'process "/bin/sh -c exit 3" did not complete successfully: exit code: 1'
    assert lines[1] == "  step [stage-1 1/1] RUN exit 3:"
    assert "runc run failed" in lines[2]
    assert "  Dockerfile:4" in lines and any(">>> RUN exit 3" in x for x in lines)
    assert "cache" not in text  # the registry cache's import warnings are left out


def test_output_that_is_not_buildkits_is_shown_as_it_ends() -> None:
    text = failure_text(["ERROR? no", "open /tmp/x.json: no such file or directory"])
    assert text.startswith("docker buildx bake failed:") and text.endswith("no such file or directory")


def test_a_cross_compiling_step_is_shown_under_the_platform_it_builds_for() -> None:
    assert target_platform("linux/amd64->arm64") == "linux/arm64"
    assert target_platform("linux/amd64->linux/arm/v7") == "linux/arm/v7"
    assert target_platform("linux/arm64") == "linux/arm64"
    seen: list[tuple[str, str, str]] = []
    watch = _Watch({"hello": _job("hello")}, lambda *a: seen.append(a), True, None)
    watch.line("#12 [hello linux/amd64->arm64 build 2/3] RUN go build -o /out/hello .")
    assert seen == [("hello", "linux/arm64", "build 2/3 RUN go build -o /out/hello .")]
