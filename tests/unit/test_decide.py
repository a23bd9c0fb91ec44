"""Decide without Docker or a registry: plan and resolved facts -> build, skip, copy or fail, and why.

Sources are local git repositories made in the test; the registry is a small fake that answers
HEAD for the digests a test gives it (decide asks nothing else of it)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from archlift.config.model import load_config
from archlift.errors import SourceInputError
from archlift.localenv import make_git_repo
from archlift.lock import ComponentRelease, ReleaseLock, Upstream
from archlift.oci import Descriptor, Manifest
from archlift.plan import make_plan
from archlift.refs import Digest, ImageRef
from archlift.steps.decide import Decision, decide, locked_commits
from archlift.steps.inputs import ANNOTATION, BuildRecord, record_ref
from archlift.steps.sources import Resolver
from archlift.steps.trees import WorkTrees

BASE = "registry.invalid/base/busybox"
BASE_DIGEST = Digest("sha256:" + "b" * 64)
INDEX = Digest("sha256:" + "1" * 64)


class FakeRegistry:
    """HEAD answers for the references a test puts in ``have``; records by their tag."""

    def __init__(self) -> None:
        self.have: dict[str, Descriptor] = {}
        self.records: dict[str, bytes] = {}
        self.asked: list[str] = []

    def head_manifest(self, ref: ImageRef) -> Descriptor | None:
        self.asked.append(str(ref))
        return self.have.get(str(ref))

    def get_manifest(self, ref: ImageRef) -> Manifest:
        return Manifest.of(self.records[str(ref)])


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "Dockerfile").write_text(f"ARG BASE={BASE}:1\nFROM ${{BASE}}\nCOPY app /app\n")
    (src / "app").write_text("app\n")
    make_git_repo(src, tmp_path / "up.git", tags=("v1.0.0",))
    (tmp_path / "images.yaml").write_text(
        "archlift: 1\n"
        "registry: registry.invalid/acme\n"
        "sources:\n"
        "  up: {git: up.git, ref: v1.0.0}\n"
        "components:\n"
        "  one: {source: up}\n"
        "  two: {source: up, build: {args: {EXTRA: x}}}\n"
        "  third: {mirror: 'registry.invalid/vendor/third:1'}\n"
    )
    return tmp_path / "images.yaml"


def _decide(config_path: Path, registry: FakeRegistry, **kwargs: Any) -> dict[str, Decision]:
    config = load_config(config_path)
    resolver = Resolver(locked=locked_commits(config, kwargs.pop("lock", None)))
    trees = WorkTrees(resolver)
    try:
        found = decide(make_plan(config), client=registry, resolver=resolver, trees=trees, **kwargs)  # type: ignore[arg-type]
    finally:
        trees.close()
    return {d.name: d for d in found}


def _with_base(registry: FakeRegistry) -> FakeRegistry:
    registry.have[f"{BASE}:1"] = Descriptor("application/vnd.oci.image.index.v1+json", BASE_DIGEST, 100)
    return registry


def test_nothing_in_the_registry_means_build_and_a_mirror_means_copy(project: Path) -> None:
    decisions = _decide(project, _with_base(FakeRegistry()))
    assert [d.action for d in decisions.values()] == ["build", "build", "copy"]
    one, two = decisions["one"], decisions["two"]
    assert one.inputs and two.inputs and one.inputs.hash != two.inputs.hash  # build args are inputs
    assert one.inputs.bases == {f"{BASE}:1": str(BASE_DIGEST)}  # the base, by the digest it resolved to
    assert one.reason == f"no image in the registry for inputs {one.inputs.short}"
    assert one.resolved and one.resolved.version == "v1.0.0"


def test_a_record_of_the_same_inputs_means_skip(project: Path) -> None:
    registry = _with_base(FakeRegistry())
    first = _decide(project, registry)["one"]
    assert first.inputs is not None
    config = load_config(project)
    comp = config.components["one"]
    record = BuildRecord(
        first.inputs.hash, INDEX, "application/vnd.oci.image.index.v1+json", {}, {}, "2026-01-01T00:00:00Z"
    )
    tag = record_ref(comp, config, first.inputs.hash)
    registry.have[str(tag)] = Descriptor("application/vnd.oci.image.manifest.v1+json", Digest.of(b"r"), 1)
    empty = {"mediaType": "application/vnd.oci.empty.v1+json", "digest": str(Digest.of(b"{}")), "size": 2}
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": empty,
        "layers": [empty],
        "annotations": {ANNOTATION: json.dumps(record.to_json())},
    }
    registry.records[str(tag)] = json.dumps(manifest).encode()
    registry.have[str(comp.image.with_digest(INDEX))] = Descriptor("application/vnd.oci.image.index.v1+json", INDEX, 1)
    again = _decide(project, registry)
    assert again["one"].action == "skip" and again["one"].record == record
    assert again["one"].reason == f"unchanged: inputs {first.inputs.short} built as {INDEX.short()}"
    assert again["two"].action == "build"
    assert _decide(project, registry, force=True)["one"].action == "build"


def test_a_base_image_that_does_not_exist_fails_the_component_with_its_reason(project: Path) -> None:
    decisions = _decide(project, FakeRegistry())
    assert decisions["one"].action == "fail" and decisions["third"].action == "copy"
    assert f"base image '{BASE}:1' does not exist" in decisions["one"].reason


def test_a_ref_that_does_not_exist_keeps_its_error_object_and_the_source_is_asked_once(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    project.write_text(project.read_text().replace("ref: v1.0.0", "ref: v9"))
    with caplog.at_level(logging.DEBUG, logger="archlift.proc"):
        decisions = _decide(project, _with_base(FakeRegistry()))
    for name in ("one", "two"):
        error = decisions[name].error
        assert isinstance(error, SourceInputError) and error.exit_code == 2
        assert "ref 'v9' does not exist" in error.message and "existing tag" in error.hint
        assert decisions[name].to_json()["hint"] == error.hint
    asked = [r.message for r in caplog.records if r.message.startswith("+ git ls-remote")]
    assert len(asked) == 1, asked  # one source, resolved once for both components


def test_a_tag_that_moved_since_the_lock_fails_only_with_that_lock(project: Path) -> None:
    first = _decide(project, _with_base(FakeRegistry()))["one"]
    assert first.resolved is not None
    url = first.resolved.url
    moved = "0123456789abcdef0123456789abcdef01234567"
    entry = ComponentRelease(
        "one", "built", "registry.invalid/acme/one", INDEX, {}, upstream=Upstream(url, "v1.0.0", moved, "v1.0.0")
    )
    decisions = _decide(project, _with_base(FakeRegistry()), lock=ReleaseLock({"one": entry}))
    for name in ("one", "two"):  # the lock pins the source, whichever component recorded it
        assert decisions[name].action == "fail" and "release lock records" in decisions[name].reason
