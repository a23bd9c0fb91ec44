"""archlift upgrade: a source moved to a new upstream ref, its patch queue replayed there.

Every test runs the CLI (archlift.cli.main) against a real git upstream made here: v1.0.0 and,
on a branch of its own from it, one tag per outcome:

- v1.1.0 moves lines (a header on top of every file): 0001 applies, 0002 and 0003 apply with offsets;
- v1.2.0 takes 0002's change itself: 0002 is already upstream and dropped;
- v1.3.0 moves config.txt to etc/config.txt: 0003 applies only with a three-way merge;
- v1.4.0 says "hi" where 0002 says "hello, world": 0002 conflicts, on the line that
  v1.4.0's commit "Greet with hi" changed (not the one that "Document the usage" did).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from archlift.cli import main
from archlift.localenv import make_git_repo, write_files
from archlift.steps.patches import format_patches
from archlift.steps.sources import git
from archlift.steps.upgrade import Target, apply_edits, drop_edits, locate, map_lines, pin_edits

APP = "".join(f"step {i}\n" for i in range(1, 9)) + "echo hello\n" + "".join(f"step {i}\n" for i in range(9, 15))
CONFIG = "# app config\nname=app\nport=80\nworkers=2\nlog=info\n"
DOCKERFILE = 'FROM base\nCOPY . /src\nRUN GOARCH=amd64 make\nCMD ["/app"]\n'
HEADER = "# header 1\n# header 2\n# header 3\n"

QUEUE = (  # (file name, subject, changes against v1.0.0)
    (
        "0001-cross-compile.patch",
        "build: cross-compile for the target",
        {"Dockerfile": DOCKERFILE.replace("RUN GOARCH=amd64", "ARG TARGETARCH\nRUN GOARCH=$TARGETARCH")},
    ),
    ("0002-greeting.patch", "app: greet the world", {"app.sh": APP.replace("echo hello", 'echo "hello, world"')}),
    ("0003-port.patch", "config: listen on 8080", {"config.txt": CONFIG.replace("port=80", "port=8080")}),
)

IMAGES_YAML = """\
# A test distribution: every comment, blank line and quote here must survive an upgrade.
archlift: 1
registry: 127.0.0.1:1/test   # never contacted

sources:
  upstream:
    git: ${{APP_GIT}}          # the upstream made by the test
    ref: v1.0.0      # the release we ship
    commit: {commit}
    build: {{dockerfile: Dockerfile}}

components:
  app:
    source: upstream   # shared source
  tool:
    # an inline source, its ref through a variable with a default
    source: {{git: "${{APP_GIT}}", ref: "${{TOOL_REF:-v1.0.0}}", commit: '{commit}'}}
"""


@dataclass(frozen=True)
class Upstream:
    path: Path
    commits: dict[str, str]  # subject -> commit of the upstream changes
    v1: str


def _commit(repo: Path, subject: str, files: dict[str, str | None]) -> str:
    write_files(repo, files)
    git("add", "--all", cwd=repo)
    git("commit", "-q", "--no-verify", "-m", subject, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


def _release(repo: Path, tag: str, changes: list[tuple[str, dict[str, str | None]]], commits: dict[str, str]) -> None:
    git("checkout", "-q", "-b", f"branch-{tag}", "v1.0.0", cwd=repo)
    for subject, files in changes:
        commits[subject] = _commit(repo, subject, files)
    git("tag", "-a", "-m", tag, tag, cwd=repo)


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Upstream:
    root = tmp_path_factory.mktemp("upstream")
    src = write_files(root / "src", {"app.sh": APP, "config.txt": CONFIG, "Dockerfile": DOCKERFILE, "README": "app\n"})
    repo = make_git_repo(src, root / "app", tags=("v1.0.0",)).path
    commits: dict[str, str] = {}
    headed = {"app.sh": HEADER + APP, "config.txt": HEADER + CONFIG}
    _release(repo, "v1.1.0", [("Add headers", dict(headed))], commits)
    _release(repo, "v1.2.0", [("Greet the world upstream", {"app.sh": QUEUE[1][2]["app.sh"]})], commits)
    _release(repo, "v1.3.0", [("Move the config to etc/", {"config.txt": None, "etc/config.txt": CONFIG})], commits)
    _release(
        repo,
        "v1.4.0",
        [
            ("Document the usage", {"app.sh": APP + "# usage: app.sh\n"}),
            ("Greet with hi", {"app.sh": APP.replace("echo hello", "echo hi") + "# usage: app.sh\n"}),
        ],
        commits,
    )
    git("checkout", "-q", "main", cwd=repo)
    return Upstream(repo, commits, git("rev-parse", "v1.0.0^{commit}", cwd=repo))


def _queue(upstream: Upstream, out: Path, work: Path) -> list[Path]:
    """The queue as archlift writes it (git format-patch -U1), made against v1.0.0 in ``work``."""
    git("clone", "-q", str(upstream.path), str(work))
    git("checkout", "-q", "--detach", "v1.0.0", cwd=work)
    for _, subject, files in QUEUE:
        _commit(work, subject, dict(files))
    made = format_patches(work, upstream.v1, work / "out")
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for path, (name, _, _) in zip(made, QUEUE, strict=True):
        paths.append(out / name)
        path.rename(out / name)
    return paths


@pytest.fixture()
def dist(upstream: Upstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "dist"
    root.mkdir()
    (root / "images.yaml").write_text(IMAGES_YAML.format(commit=upstream.v1))
    _queue(upstream, root / "patches" / "upstream", tmp_path / "make-upstream")
    _queue(upstream, root / "patches" / "tool", tmp_path / "make-tool")
    monkeypatch.setenv("APP_GIT", str(upstream.path))
    monkeypatch.delenv("TOOL_REF", raising=False)
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(root)
    yield root


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".cache" not in p.relative_to(root).parts
    }


def upgrade(*args: str) -> int:
    return main(["upgrade", *args, "--config", "images.yaml"])


def queue_names(root: Path, name: str = "upstream") -> list[str]:
    return sorted(p.name for p in (root / "patches" / name).glob("*.patch"))


def check_queue_applies(root: Path, tmp: Path, name: str = "upstream") -> str:
    """The queue on disk, applied by `archlift patches checkout` to the pin images.yaml names."""
    tree = tmp / f"check-{name}"
    assert main(["patches", "checkout", name, str(tree), "--config", "images.yaml"]) == 0
    return git("log", "--format=%s", "--reverse", "-n", "9", cwd=tree)


def changed_lines(before: bytes, after: bytes) -> list[tuple[str, str]]:
    a, b = before.decode().splitlines(keepends=True), after.decode().splitlines(keepends=True)
    assert len(a) == len(b), "an upgrade changes lines, it never adds or removes one"
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


# --- the outcomes --------------------------------------------------------------------


def test_every_patch_applies_and_the_pin_moves(
    dist: Path, upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(dist)
    assert upgrade("upstream", "--to", "v1.1.0") == 0
    out = capsys.readouterr().out
    v11 = git("rev-parse", "v1.1.0^{commit}", cwd=upstream.path)
    assert "0001-cross-compile.patch  applies\n" in out
    assert "0002-greeting.patch       applies with offsets: 1 of 1 hunk(s) moved" in out
    assert "0003-port.patch           applies with offsets: 1 of 1 hunk(s) moved" in out
    assert f"upgrade upstream: v1.0.0 ({upstream.v1[:12]}) -> v1.1.0 ({v11[:12]}), 1 upstream commit(s)" in out
    assert "archlift plan images.yaml --check" in out and "archlift diff" in out and "archlift build" in out

    after = snapshot(dist)
    # images.yaml: exactly the two lines of the pin changed, every other byte is as it was
    assert changed_lines(before["images.yaml"], after["images.yaml"]) == [
        ("    ref: v1.0.0      # the release we ship\n", "    ref: v1.1.0      # the release we ship\n"),
        (f"    commit: {upstream.v1}\n", f"    commit: {v11}\n"),
    ]
    # the queue: same names, regenerated against the new commit (the hunks' new line numbers)
    assert queue_names(dist) == ["0001-cross-compile.patch", "0002-greeting.patch", "0003-port.patch"]
    assert after["patches/upstream/0002-greeting.patch"] != before["patches/upstream/0002-greeting.patch"]
    assert "@@ -11,3 +11,3 @@" in after["patches/upstream/0002-greeting.patch"].decode()
    assert "Subject: [PATCH 2/3] app: greet the world" in after["patches/upstream/0002-greeting.patch"].decode()
    assert after["patches/tool/0002-greeting.patch"] == before["patches/tool/0002-greeting.patch"]  # not its queue
    assert not (dist / ".cache" / "patches" / "upstream").exists()  # no work tree left behind
    assert check_queue_applies(dist, tmp_path).splitlines()[-3:] == [s for _, s, _ in QUEUE]


def test_a_patch_already_upstream_is_dropped(
    dist: Path, upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upgrade("upstream", "--to", "v1.2.0") == 0
    out = capsys.readouterr().out
    assert "0002-greeting.patch       already upstream: dropped: it reverse-applies: v1.2.0 has it" in out
    assert "2 patch(es) regenerated" in out and "1 dropped" in out
    assert queue_names(dist) == ["0001-cross-compile.patch", "0003-port.patch"]
    assert "Subject: [PATCH 2/2] config: listen on 8080" in (dist / "patches/upstream/0003-port.patch").read_text()
    assert check_queue_applies(dist, tmp_path).splitlines()[-2:] == [QUEUE[0][1], QUEUE[2][1]]


def test_a_patch_of_a_moved_file_applies_with_a_three_way_merge(
    dist: Path, upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert upgrade("upstream", "--to", "v1.3.0") == 0
    out = capsys.readouterr().out
    assert "0003-port.patch           applies with a three-way merge" in out
    patch = (dist / "patches/upstream/0003-port.patch").read_text()
    assert "--- a/etc/config.txt\n+++ b/etc/config.txt" in patch and "+port=8080" in patch
    check_queue_applies(dist, tmp_path)
    assert "port=8080" in (tmp_path / "check-upstream" / "etc" / "config.txt").read_text()


def test_a_conflict_changes_nothing_and_leaves_a_work_tree(
    dist: Path, upstream: Upstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(dist)
    assert upgrade("upstream", "--to", "v1.4.0") == 1
    out = capsys.readouterr().out
    assert snapshot(dist) == before  # images.yaml and patches/ untouched
    assert "0001-cross-compile.patch  applies\n" in out
    assert "0002-greeting.patch       conflicts: in app.sh" in out
    assert "0003-port.patch           not replayed (after the conflict)" in out
    # the hunk, and the one upstream commit that touched its lines (not the other one on app.sh)
    assert "app.sh: @@ -8,3 +8,3 @@" in out
    hi, usage = upstream.commits["Greet with hi"], upstream.commits["Document the usage"]
    assert f"      {hi[:12]} Greet with hi" in out
    assert usage[:12] not in out
    assert "archlift patches refresh upstream .cache/patches/upstream --config images.yaml" in out

    tree = dist / ".cache" / "patches" / "upstream"
    v14 = git("rev-parse", "v1.4.0^{commit}", cwd=upstream.path)
    assert git("log", "--format=%s", f"{v14}..HEAD", cwd=tree) == QUEUE[0][1]  # the queue up to the conflict
    assert git("diff", "--name-only", "--diff-filter=U", cwd=tree) == "app.sh"  # 0002 being cherry-picked
    assert "<<<<<<<" in (tree / "app.sh").read_text()

    # finish it as the output says: resolve, continue (0003 follows), refresh
    (tree / "app.sh").write_text(APP.replace("echo hello", 'echo "hi, world"') + "# usage: app.sh\n")
    git("add", "app.sh", cwd=tree)
    git("-c", "core.editor=true", "cherry-pick", "--continue", cwd=tree)
    assert git("log", "--format=%s", "--reverse", f"{v14}..HEAD", cwd=tree).splitlines() == [s for _, s, _ in QUEUE]
    assert main(["patches", "refresh", "upstream", str(tree), "--config", "images.yaml"]) == 0
    out = capsys.readouterr().out
    assert f"finished the upgrade of upstream to v1.4.0 ({v14[:12]})" in out
    after = snapshot(dist)
    assert changed_lines(before["images.yaml"], after["images.yaml"]) == [
        ("    ref: v1.0.0      # the release we ship\n", "    ref: v1.4.0      # the release we ship\n"),
        (f"    commit: {upstream.v1}\n", f"    commit: {v14}\n"),
    ]
    assert queue_names(dist) == ["0001-cross-compile.patch", "0002-greeting.patch", "0003-port.patch"]
    assert '+echo "hi, world"' in after["patches/upstream/0002-greeting.patch"].decode()
    check_queue_applies(dist, tmp_path)


def test_dry_run_changes_nothing(dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(dist)
    assert upgrade("upstream", "--to", "v1.2.0", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "already upstream: dropped" in out and "dry run: nothing was changed" in out
    assert upgrade("upstream", "--to", "v1.4.0", "--dry-run") == 1
    assert "conflicts: in app.sh" in capsys.readouterr().out
    assert snapshot(dist) == before
    assert not (dist / ".cache").exists()


def test_an_inline_source_with_its_ref_in_a_variable(
    dist: Path, upstream: Upstream, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TOOL_REF", "v1.0.0")  # set, it wins over the default: the output says so
    before = (dist / "images.yaml").read_bytes()
    assert upgrade("tool", "--to", "v1.1.0") == 0
    v11 = git("rev-parse", "v1.1.0^{commit}", cwd=upstream.path)
    line = f'    source: {{git: "${{APP_GIT}}", ref: "${{TOOL_REF:-v1.0.0}}", commit: \'{upstream.v1}\'}}\n'
    assert changed_lines(before, (dist / "images.yaml").read_bytes()) == [
        (line, line.replace("TOOL_REF:-v1.0.0", "TOOL_REF:-v1.1.0").replace(upstream.v1, v11))
    ]
    out = capsys.readouterr().out
    assert "applies with offsets" in out
    assert "note: $TOOL_REF is set in your environment and overrides the default in images.yaml" in out
    assert queue_names(dist, "tool") == queue_names(dist)  # its own queue, same names


def test_json_report(dist: Path, upstream: Upstream, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert upgrade("upstream", "--to", "v1.4.0", "--dry-run", "--json") == 1
    data = json.loads(capsys.readouterr().out)
    assert [p["outcome"] for p in data["patches"]] == ["applies", "conflicts", "not replayed (after the conflict)"]
    failed = data["patches"][1]["failed"]
    assert [(f["file"], [c["subject"] for c in f["upstream_commits"]]) for f in failed] == [
        ("app.sh", ["Greet with hi"])
    ]
    assert data["changed"] is False and data["new"]["commit"] == git("rev-parse", "v1.4.0^{commit}", cwd=upstream.path)


# --- bad input: exit 2, one paragraph, nothing changed ---------------------------------


def _one_paragraph(err: str) -> str:
    assert err.startswith("archlift: ") and "Traceback" not in err
    assert "\n\n" not in err.strip(), err
    return err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("upstrem", "--to", "v1.1.0"), ["no source named 'upstrem'", "did you mean 'upstream'?"]),
        (("app", "--to", "v1.1.0"), ["builds from the shared source 'upstream'", "archlift upgrade upstream --to REF"]),
        (("upstream", "--to", "v1.1"), ["has no tag or branch 'v1.1'", "did you mean 'v1.1.0'?"]),
        (
            ("upstream", "--to", "v9.9.9"),
            ["has no tag or branch 'v9.9.9'", "newest release tags there: v1.4.0, v1.3.0"],
        ),
    ],
    ids=["unknown-source", "shared-source-by-component", "near-tag", "no-such-tag"],
)
def test_bad_input_is_exit_2(
    dist: Path, args: tuple[str, ...], expected: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(dist)
    assert upgrade(*args) == 2
    err = _one_paragraph(capsys.readouterr().err)
    for text in expected:
        assert text in err
    assert snapshot(dist) == before


def test_an_unreachable_url_is_exit_2(
    dist: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("APP_GIT", str(tmp_path / "gone.git"))
    before = snapshot(dist)
    assert upgrade("upstream", "--to", "v1.1.0") == 2
    err = _one_paragraph(capsys.readouterr().err)
    assert f"cannot reach {tmp_path / 'gone.git'}" in err and "does not appear to be a git repository" in err
    assert snapshot(dist) == before


def test_unfinished_work_in_the_work_tree_is_not_overwritten(dist: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert upgrade("upstream", "--to", "v1.4.0") == 1
    capsys.readouterr()
    assert upgrade("upstream", "--to", "v1.1.0") == 2
    err = _one_paragraph(capsys.readouterr().err)
    assert "holds an upgrade left with a conflict" in err and "give another --work-tree" in err
    assert upgrade("upstream", "--to", "v1.1.0", "--work-tree", "elsewhere") == 0


# --- the text edits, without git --------------------------------------------------------


def test_map_lines_follows_insertions_and_deletions() -> None:
    diff = "@@ -0,0 +1,3 @@\n+a\n+b\n+c\n@@ -5,2 +7,0 @@\n-x\n-y\n@@ -9 +10,2 @@\n-z\n+Z\n+W\n"
    assert map_lines(diff, 1, 2) == (4, 5)  # after the 3 lines inserted on top
    assert map_lines(diff, 5, 6) == (8, 8)  # deleted: where they were
    assert map_lines(diff, 7, 8) == (8, 9)
    assert map_lines(diff, 9, 9) == (10, 11)  # changed into two lines
    assert map_lines(diff, 12, 12) == (14, 14)
    assert map_lines("", 3, 4) == (3, 4)


def _target(tmp_path: Path, text: str, name: str = "s") -> tuple[Target, str]:
    (tmp_path / "images.yaml").write_text(text)
    return locate(tmp_path / "images.yaml", name), text


def test_pin_edits_keep_quotes_and_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REF", "")
    text = (
        "sources:\n"
        "  s: {git: https://example.com/a.git, ref: 'v1', commit: \"" + "a" * 40 + '"}\n'
        "  t:\n    git: https://example.com/b.git\n    ref: ${REF:-v1}   # c\n"
        "components:\n  x: {source: s}\n  y: {source: t}\n"
    )
    target, text = _target(tmp_path, text)
    assert apply_edits(text, pin_edits(text, target, "v2", "b" * 40)).splitlines()[1] == (
        "  s: {git: https://example.com/a.git, ref: 'v2', commit: \"" + "b" * 40 + '"}'
    )
    target = locate(tmp_path / "images.yaml", "t")
    assert target.commit is None
    assert apply_edits(text, pin_edits(text, target, "v2", "b" * 40)).splitlines()[4] == "    ref: ${REF:-v2}   # c"


def test_a_ref_from_a_variable_without_default_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from archlift.errors import ConfigError

    monkeypatch.setenv("REF", "v1")
    target, text = _target(
        tmp_path, "sources:\n  s:\n    git: https://example.com/a.git\n    ref: ${REF}\ncomponents:\n  x: {source: s}\n"
    )
    with pytest.raises(ConfigError, match="comes from the environment without a default"):
        pin_edits(text, target, "v2", "b" * 40)


def test_dropped_patches_leave_an_explicit_list(tmp_path: Path) -> None:
    for name in ("a.patch", "b.patch", "c.patch"):
        (tmp_path / name).write_text("")
    block = (
        "sources:\n  s:\n    git: https://example.com/a.git\n    ref: v1\n"
        "    patches:\n      - a.patch   # first\n      - b.patch\n      - c.patch\ncomponents:\n  x: {source: s}\n"
    )
    target, text = _target(tmp_path, block)
    out = apply_edits(text, drop_edits(text, target, [tmp_path / "b.patch"]))
    assert out == block.replace("      - b.patch\n", "")
    out = apply_edits(text, drop_edits(text, target, [tmp_path / n for n in ("a.patch", "b.patch", "c.patch")]))
    assert "    patches:\n      []\ncomponents:" in out

    flow = "sources:\n  s: {git: https://example.com/a.git, ref: v1, patches: [a.patch, b.patch, c.patch]}\n"
    target, text = _target(tmp_path, flow + "components:\n  x: {source: s}\n")
    for gone, left in (("a", "[b.patch, c.patch]"), ("b", "[a.patch, c.patch]"), ("c", "[a.patch, b.patch]")):
        out = apply_edits(text, drop_edits(text, target, [tmp_path / f"{gone}.patch"]))
        assert f"patches: {left}}}" in out, out


def test_help_lists_upgrade(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "upgrade" in capsys.readouterr().out
