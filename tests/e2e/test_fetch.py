"""Fetching sources: once per run, only what the pin needs, git's whole error; shallow and partial
mirrors; a build's failure begins with its error; plan --check reads the lock build reads."""

from __future__ import annotations

import json
import logging
import secrets
from pathlib import Path

import pytest
from support.registry import LocalRegistry

from archlift.cli import main
from archlift.localenv import make_git_repo
from archlift.proc import run
from archlift.steps.sources import GIT_ENV

DOCKERFILE = "FROM scratch\nARG TARGETARCH\nCOPY hello.txt /hello-${TARGETARCH}.txt\n"


def _git(*args: str, cwd: Path) -> str:
    return run(["git", *args], cwd=cwd, env=GIT_ENV).stdout.strip()


def _upstream(tmp_path: Path) -> tuple[Path, str]:
    """A repository with a first commit (old.txt), then the tagged one (v1.0.0) that builds."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.txt").write_text("history\n")
    repo = make_git_repo(src, tmp_path / "upstream", tags=())
    (repo.path / "old.txt").unlink()
    (repo.path / "Dockerfile").write_text(DOCKERFILE)
    (repo.path / "hello.txt").write_text("hello\n")
    _git("add", "-A", cwd=repo.path)
    _git("commit", "-q", "-m", "build it", cwd=repo.path)
    _git("tag", "-a", "-m", "v1.0.0", "v1.0.0", cwd=repo.path)
    return repo.path, _git("rev-parse", "HEAD", cwd=repo.path)


def _config(tmp_path: Path, registry: LocalRegistry, git: Path, commit: str, names: tuple[str, ...] = ("one",)) -> Path:
    prefix = f"fetch-{secrets.token_hex(4)}"
    lines = [
        "archlift: 1",
        f"registry: {registry.host}/{prefix}",
        "attestations: {provenance: false, sbom: false}",
        "cache: {type: none}",
        "sources:",
        f"  up: {{git: {git}, ref: v1.0.0, commit: {commit}}}",
        "components:",
    ]
    lines += [f"  {n}: {{source: up}}" for n in names]
    path = tmp_path / "images.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, object]]:
    status = main(["build", str(config), "--json", *args])
    return status, json.loads(capsys.readouterr().out)


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("CI", "1")
    monkeypatch.chdir(tmp_path)


def test_a_broken_object_outside_the_pinned_history_does_not_stop_the_build(
    tmp_path: Path, docker_ready: None, registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    up, commit = _upstream(tmp_path)
    # a branch of the mirror holds a blob that is gone: fetching every head would fail
    _git("checkout", "-q", "-b", "side", cwd=up)
    (up / "side.txt").write_text("only on the side branch\n")
    _git("add", "side.txt", cwd=up)
    _git("commit", "-q", "-m", "side", cwd=up)
    blob = _git("rev-parse", "HEAD:side.txt", cwd=up)
    _git("checkout", "-q", "v1.0.0", cwd=up)
    (up / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    everything = run(["git", "clone", "-q", "--mirror", f"file://{up}", str(tmp_path / "probe")], check=False)
    assert everything.returncode != 0, "the broken object must break a fetch of every ref"

    status, result = _build(_config(tmp_path, registry, up, commit), capsys)
    assert status == 0, result
    assert [c["status"] for c in result["components"]] == ["built"]  # type: ignore[union-attr,index]


@pytest.mark.parametrize("kind", ["shallow", "partial"])
def test_a_shallow_or_partial_mirror_that_holds_the_pinned_commit_builds(
    kind: str, tmp_path: Path, docker_ready: None, registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    up, commit = _upstream(tmp_path)
    mirror = tmp_path / f"{kind}.git"
    if kind == "shallow":
        run(["git", "clone", "-q", "--bare", "--depth=1", "--branch=v1.0.0", f"file://{up}", str(mirror)])
        assert _git("rev-parse", "--is-shallow-repository", cwd=mirror) == "true"
    else:
        _git("config", "uploadpack.allowFilter", "true", cwd=up)
        run(["git", "clone", "-q", "--bare", "--filter=blob:none", f"file://{up}", str(mirror)])
        run(["git", "archive", "-o", str(tmp_path / "tree.tar"), commit], cwd=mirror)  # the pinned tree's blobs
        _git("remote", "set-url", "origin", str(tmp_path / "offline"), cwd=mirror)  # its promisor is gone
        old = _git("rev-parse", f"{commit}~1:old.txt", cwd=up)
        missing = run(["git", "cat-file", "-e", old], cwd=mirror, env=GIT_ENV, check=False)
        assert missing.returncode != 0, "the partial mirror must lack the history's blobs"
    status, result = _build(_config(tmp_path, registry, mirror, commit), capsys)
    assert status == 0, result


def test_a_mirror_without_the_pinned_commit_fails_once_with_gits_whole_message(
    tmp_path: Path, registry: LocalRegistry, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    up, _ = _upstream(tmp_path)
    missing = "0123456789abcdef0123456789abcdef01234567"
    config = _config(tmp_path, registry, up, missing, names=("one", "two", "three"))
    config.write_text(config.read_text().replace("ref: v1.0.0", f"ref: {missing}"))
    with caplog.at_level(logging.DEBUG, logger="archlift.proc"):
        status, result = _build(config, capsys)
    assert status == 2, result
    fetches = [r.message for r in caplog.records if r.message.startswith("+ git fetch")]
    assert len(fetches) == 2, fetches  # one source, fetched once per run: the ref, then its tip alone
    for comp in result["components"]:  # type: ignore[union-attr]
        error = comp["error"]  # type: ignore[index]
        assert f"cannot fetch commit {missing}" in error
        assert f"not our ref {missing}" in error  # git's own lines, every one of them
        assert error.count("\n") >= 2, error
        assert "a shallow or partial mirror will do" in comp["hint"]  # type: ignore[index]


def test_a_failed_build_begins_with_its_error(
    tmp_path: Path,
    docker_ready: None,
    registry: LocalRegistry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    up, _ = _upstream(tmp_path)
    (up / "Dockerfile").write_text("FROM scratch\nCOPY hello.txt /\nRUN exit 3\n")
    _git("commit", "-q", "-am", "broken", cwd=up)
    _git("tag", "-a", "-m", "v2", "v2.0.0", cwd=up)
    config = _config(tmp_path, registry, up, _git("rev-parse", "HEAD", cwd=up))
    text = config.read_text().replace("ref: v1.0.0", "ref: v2.0.0").replace("cache: {type: none}\n", "")
    config.write_text(text)  # a registry cache that does not exist yet: BuildKit prints its import first
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    status = main(["build", str(config)])
    out, err = capsys.readouterr()
    assert status == 5
    # under GitHub Actions: each step folded, the failure an annotation (one line, newlines escaped)
    assert "::group::build: bake, push by digest, verify\n" in err and "::endgroup::" in err
    annotation = next(line for line in err.splitlines() if line.startswith("::error "))
    assert annotation.startswith("::error title=one failed::one: process ") and "%0A" in annotation
    failure = err[err.index("\none failed:") + 1 :]
    first = failure.splitlines()[0]
    assert first.startswith("one failed: build: one: process") and "did not complete successfully" in first, first
    assert "step [" in failure and "RUN exit 3" in failure and "Dockerfile:3" in failure
    assert "importing cache manifest" not in failure
    assert "release NOT complete: one failed" in out


def test_plan_check_reads_the_lock_that_build_reads(
    tmp_path: Path,
    docker_ready: None,
    registry: LocalRegistry,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    up, _ = _upstream(tmp_path)
    config = _config(tmp_path, registry, up, "")
    config.write_text(config.read_text().replace(", commit: }", "}"))
    lock = tmp_path / "elsewhere" / "release.json"
    status, _ = _build(config, capsys, "--lock", str(lock))
    assert status == 0 and lock.is_file() and not Path("dist/release.json").exists()
    (up / "hello.txt").write_text("hello again\n")
    _git("commit", "-q", "-am", "again", cwd=up)
    _git("tag", "-f", "-a", "-m", "moved", "v1.0.0", "HEAD", cwd=up)  # the tag moves upstream
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "new-cache"))  # a new machine: nothing cached

    assert main(["plan", str(config), "--check", "--json"]) == 0  # dist/release.json: no lock, no pin
    first = json.loads(capsys.readouterr().out)["components"][0]["decision"]
    assert first["action"] == "build", first
    assert main(["plan", str(config), "--check", "--json", "--lock", str(lock)]) == 3  # as build exits
    decision = json.loads(capsys.readouterr().out)["components"][0]["decision"]
    status, result = _build(config, capsys, "--lock", str(lock))
    built = result["components"][0]  # type: ignore[index]
    assert status == 3 and decision["action"] == "fail" and "release lock records" in built["error"]
    assert decision["reason"] == built["error"]
    assert decision["hint"] == built["hint"]


def test_a_one_platform_build_without_attestations_is_a_bare_manifest_and_is_released(
    tmp_path: Path, docker_ready: None, registry: LocalRegistry, capsys: pytest.CaptureFixture[str]
) -> None:
    up, commit = _upstream(tmp_path)
    config = _config(tmp_path, registry, up, commit)
    config.write_text(config.read_text().replace("components:\n", "platforms: [linux/arm64]\ncomponents:\n"))
    status, result = _build(config, capsys)
    assert status == 0, result
    comp = result["components"][0]  # type: ignore[index]
    assert list(comp["platforms"]) == ["linux/arm64"]  # read from the image's config
    assert comp["image"].endswith(comp["platforms"]["linux/arm64"])  # the manifest is the image itself
