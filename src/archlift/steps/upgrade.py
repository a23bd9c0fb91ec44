"""Upgrade: move a source to a new upstream ref and replay its patch queue there.

``locate(config, name)`` -> :class:`Target` (the source, its queue, and where its pin stands
in the text of images.yaml); ``upgrade(request)`` -> :class:`UpgradeReport`. The queue is
first applied as commits on the current pin, then replayed in order on the new ref: each
patch applies (perhaps at an offset), is already upstream (it reverse-applies, or a
three-way merge leaves nothing to commit) and is dropped, applies with a three-way merge
(``git cherry-pick`` of its commit), or conflicts, naming each hunk that fails and the
upstream commits between the two refs that touched its lines.

Only when nothing conflicts are ``ref:`` and ``commit:`` rewritten in images.yaml (as text:
every other byte stays) and the queue regenerated against the new commit, under the names
it had. A conflict leaves a work tree with the queue replayed up to it and the conflicting
commit being cherry-picked (``git cherry-pick --continue`` goes on with the rest), and a
note in it that ``archlift patches refresh`` reads to finish the job (:func:`finish`).
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..config.loader import _ENV_RE, Field, closest
from ..config.model import Config, Source, load_config
from ..errors import ConfigError, PatchError, SourceError, SourceInputError, UsageError
from ..proc import run
from .patches import apply_queue, format_patches
from .sources import GIT_ENV, ResolvedSource, checkout, fetch_between, git, remote_refs

Progress = Callable[[str], None]
PENDING = "archlift-upgrade.json"  # in the .git of a work tree left with a conflict
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SAFE_PLAIN = re.compile(r"^[A-Za-z0-9._/+@-]+$")
_OFFSET_RE = re.compile(r"^Hunk #\d+ succeeded at \d+ \(offset -?\d+ lines?\)\.$", re.M)
_HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_REJECTS_RE = re.compile(r"^Applying patch (?P<file>.+?) with \d+ rejects?\.\.\.$")
_FILE_ERROR_RE = re.compile(r"^error: (?P<file>[^:]+): (?P<why>.+)$")
_RELEASE_RE = re.compile(r"^v?\d+(\.\d+)*$")


class Outcome(enum.StrEnum):
    APPLIES = "applies"
    OFFSETS = "applies with offsets"
    MERGED = "applies with a three-way merge"
    UPSTREAM = "already upstream: dropped"
    CONFLICT = "conflicts"
    NOT_TRIED = "not replayed (after the conflict)"

    @property
    def kept(self) -> bool:
        return self in (Outcome.APPLIES, Outcome.OFFSETS, Outcome.MERGED)


@dataclass(frozen=True)
class Commit:
    sha: str
    subject: str

    def to_json(self) -> dict[str, str]:
        return {"commit": self.sha, "subject": self.subject}


@dataclass(frozen=True)
class FailedHunk:
    """A hunk of a patch that does not apply on the new ref (or a whole file: ``header`` says why)."""

    file: str
    header: str  # "@@ -17,2 +17,8 @@ ..." or "No such file or directory"
    text: str  # the hunk itself ("" for a whole file)
    commits: tuple[Commit, ...]  # upstream commits between the two refs that touched those lines

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "hunk": self.header,
            "text": self.text,
            "upstream_commits": [c.to_json() for c in self.commits],
        }


@dataclass(frozen=True)
class PatchResult:
    patch: Path
    subject: str
    outcome: Outcome
    detail: str = ""
    failed: tuple[FailedHunk, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "patch": str(self.patch),
            "subject": self.subject,
            "outcome": self.outcome.value,
            "detail": self.detail,
            "failed": [h.to_json() for h in self.failed],
        }


@dataclass(frozen=True)
class Pin:
    ref: str
    commit: str
    version: str

    def to_json(self) -> dict[str, str]:
        return {"ref": self.ref, "commit": self.commit, "version": self.version}


@dataclass(frozen=True)
class Span:
    """A scalar (or a list item) of images.yaml: character offsets and its 1-based line."""

    start: int
    end: int
    line: int


@dataclass(frozen=True)
class Target:
    """What an upgrade of one source reads and writes."""

    config: Path
    source: Source
    queue: tuple[Path, ...]
    explicit: bool  # the queue is a `patches:` list in images.yaml (not the default directory)
    ref: Span
    commit: Span | None
    items: tuple[Span, ...]  # the `patches:` list items, in order (explicit queues)
    list_span: Span | None  # the whole `patches:` list


@dataclass(frozen=True)
class TextChange:
    line: int
    old: str
    new: str


@dataclass(frozen=True)
class UpgradeRequest:
    config: Path
    source: str
    to: str
    dry_run: bool = False
    work_tree: Path | None = None  # where a conflict is left (default .cache/patches/SOURCE)


@dataclass(frozen=True)
class UpgradeReport:
    source: str
    url: str
    old: Pin
    new: Pin
    upstream_commits: int  # commits in old..new
    results: tuple[PatchResult, ...]
    dry_run: bool
    changed: bool  # images.yaml and the queue were rewritten
    config: Path
    changes: tuple[TextChange, ...] = ()  # the lines of images.yaml rewritten
    written: tuple[Path, ...] = ()  # the regenerated queue
    dropped: tuple[Path, ...] = ()  # patch files removed
    work_tree: Path | None = None  # left with the conflict
    checked: str = ""  # how the regenerated queue was checked
    notes: tuple[str, ...] = ()
    conflict_files: tuple[str, ...] = ()

    @property
    def same(self) -> bool:
        """Already there: the same ref at the same commit."""
        return self.old.commit == self.new.commit and self.old.ref == self.new.ref

    @property
    def conflicts(self) -> tuple[PatchResult, ...]:
        return tuple(r for r in self.results if r.outcome is Outcome.CONFLICT)

    @property
    def ok(self) -> bool:
        return not self.conflicts

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "url": self.url,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "upstream_commits": self.upstream_commits,
            "patches": [r.to_json() for r in self.results],
            "dry_run": self.dry_run,
            "changed": self.changed,
            "config": str(self.config),
            "config_lines": [dataclasses.asdict(c) for c in self.changes],
            "written": [str(p) for p in self.written],
            "dropped": [str(p) for p in self.dropped],
            "work_tree": str(self.work_tree) if self.work_tree else None,
            "checked": self.checked,
            "notes": list(self.notes),
        }


# --- where the source stands in images.yaml --------------------------------


def read_text(path: Path) -> str:
    """The file as it is (line endings kept), for edits that leave every other byte alone."""
    return path.read_bytes().decode("utf-8")


def _span(f: Field) -> Span:
    return Span(f.node.start_mark.index, f.node.end_mark.index, f.node.start_mark.line + 1)


def locate(config_path: Path, name: str) -> Target:
    """The source named ``name`` (under ``sources:``, or a component's inline source) and
    where its ``ref:``, ``commit:`` and ``patches:`` stand in the file."""
    config = load_config(config_path)
    composed = yaml.compose(read_text(config_path), Loader=yaml.SafeLoader)
    assert composed is not None  # load_config read the same file
    root = Field(composed, "", config_path)
    top = root.mapping()
    if name in config.sources:
        source = config.sources[name]
        node = top["sources"].mapping()[name]
        own = sorted(
            c.name
            for c in config.components.values()
            if c.source is not None and c.source.name == name and c.source.patches != source.patches
        )
        if own:
            raise ConfigError(
                f"{config_path}: component(s) {', '.join(own)} build from source '{name}' with a patch queue of "
                "their own; an upgrade replays one queue per source",
                hint="give those components a source of their own, or move them by hand "
                "(archlift patches checkout, move 'ref:', archlift patches refresh)",
            )
        patches_field = node.mapping().get("patches")
    elif name in config.components:
        comp = config.components[name]
        if comp.source is None:
            raise ConfigError(
                f"{config_path}: component '{name}' is mirrored ({comp.mirror}), not built from a source",
                hint="change the tag of its 'mirror:' by hand",
            )
        fields = top["components"].mapping()[name].mapping()
        node = fields["source"]
        if not node.is_mapping():
            raise ConfigError(
                f"{config_path}: component '{name}' builds from the shared source '{comp.source.name}'; upgrading it "
                "moves every component built from it",
                hint=f"run: archlift upgrade {comp.source.name} --to REF",
            )
        source = comp.source
        patches_field = fields.get("patches") or node.mapping().get("patches")
    else:
        names = [*config.sources, *(c.name for c in config.components.values() if _inline(config, c.name))]
        raise ConfigError(
            f"{config_path}: no source named '{name}' (a name under 'sources:' or a component with an inline source)",
            hint=closest(name, names) or (f"sources here: {', '.join(names)}" if names else "this file has no sources"),
        )
    if source.git is None:
        raise ConfigError(
            f"{config_path}: source '{name}' is a local directory ({source.path}); it has no upstream ref to move",
            hint="edit the directory in place",
        )
    fields = node.mapping()
    items: tuple[Span, ...] = ()
    list_span = None
    if patches_field is not None:
        items = tuple(_span(item) for item in patches_field.sequence())
        list_span = _span(patches_field)
    return Target(
        config=config_path,
        source=source,
        queue=source.patches,
        explicit=patches_field is not None,
        ref=_span(fields["ref"]),
        commit=_span(fields["commit"]) if "commit" in fields else None,
        items=items,
        list_span=list_span,
    )


def _inline(config: Config, name: str) -> bool:
    comp = config.components[name]
    return comp.source is not None and comp.source.name == name and name not in config.sources


def _scalar_text(raw: str, value: str, what: str, where: str) -> str:
    """The new text of a scalar whose text is ``raw``: ``value`` in the same style, or, for
    ``${VAR:-default}``, the same variable with ``value`` as its default."""
    found = list(_ENV_RE.finditer(raw))
    if found:
        if len(found) != 1 or found[0].group(2) is None:
            raise ConfigError(
                f"{where}: '{what}: {raw}' comes from the environment without a default, "
                "and upgrade rewrites only defaults",
                hint=f"write it as ${{VAR:-{value}}}, or set the variable to {value} yourself",
            )
        if not _SAFE_PLAIN.match(value):
            raise ConfigError(f"{where}: '{value}' cannot stand as the default of {raw}")
        start, end = found[0].span(2)
        return raw[:start] + value + raw[end:]
    if raw.startswith("'"):
        return "'" + value.replace("'", "''") + "'"
    if raw.startswith('"'):
        return json.dumps(value)
    if _SAFE_PLAIN.match(value) and isinstance(yaml.safe_load(value), str):
        return value
    return json.dumps(value)


def overridden(text: str, target: Target) -> list[str]:
    """The variables of ``ref:``/``commit:`` that are set in the environment (they, not the
    defaults an upgrade writes, decide what is built)."""
    spans = [s for s in (target.ref, target.commit) if s is not None]
    return [m.group(1) for s in spans for m in _ENV_RE.finditer(text[s.start : s.end]) if os.environ.get(m.group(1))]


def pin_edits(text: str, target: Target, ref: str, commit: str) -> list[tuple[Span, str]]:
    """The two replacements that move the pin (``commit:`` only where the file has one)."""
    where = str(target.config)
    edits = [
        (target.ref, _scalar_text(text[target.ref.start : target.ref.end], ref, "ref", f"{where}:{target.ref.line}"))
    ]
    if target.commit is not None:
        raw = text[target.commit.start : target.commit.end]
        edits.append((target.commit, _scalar_text(raw, commit, "commit", f"{where}:{target.commit.line}")))
    return edits


def drop_edits(text: str, target: Target, dropped: Sequence[Path]) -> list[tuple[Span, str]]:
    """Edits that remove dropped patches from an explicit `patches:` list: the item's whole line
    in a block list, the item and its comma in a flow list; ``[]`` when none is left."""
    if not target.explicit or not dropped:
        return []
    gone = {i for i, p in enumerate(target.queue) if p in set(dropped)}
    if len(gone) == len(target.items):
        assert target.list_span is not None
        whole = target.list_span
        end = whole.start + len(text[whole.start : whole.end].rstrip())  # a block list ends past its newline
        return [(Span(whole.start, end, whole.line), "[]")]
    edits = []
    flow = text[target.list_span.start] == "[" if target.list_span else False
    for i in sorted(gone):
        item = target.items[i]
        if flow:
            nxt = text.find(",", item.end)
            if i + 1 < len(target.items) and nxt != -1:
                end = target.items[i + 1].start
                edits.append((Span(item.start, end, item.line), ""))
            else:
                prev = text.rfind(",", 0, item.start)
                edits.append((Span(prev, item.end, item.line), ""))
        else:
            start = text.rfind("\n", 0, item.start) + 1
            end = text.find("\n", item.end)
            edits.append((Span(start, len(text) if end == -1 else end + 1, item.line), ""))
    return edits


def apply_edits(text: str, edits: Sequence[tuple[Span, str]]) -> str:
    for span, new in sorted(edits, key=lambda e: e[0].start, reverse=True):
        text = text[: span.start] + new + text[span.end :]
    return text


def changed_lines(old: str, new: str) -> tuple[TextChange, ...]:
    a, b = old.splitlines(), new.splitlines()
    out = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        for k in range(max(i2 - i1, j2 - j1)):
            out.append(TextChange(i1 + k + 1, a[i1 + k] if i1 + k < i2 else "", b[j1 + k] if j1 + k < j2 else ""))
    return tuple(out)


# --- resolving both ends ------------------------------------------------------


def _release_key(tag: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", tag))


def newest_releases(names: Sequence[str], n: int = 3) -> list[str]:
    """The newest release tags (vX.Y.Z, no -rc or other suffix) among ``names``, newest first."""
    return sorted((t for t in names if _RELEASE_RE.match(t)), key=_release_key, reverse=True)[:n]


def fetch_pins(source: Source, to: str, progress: Progress) -> tuple[ResolvedSource, ResolvedSource]:
    """The current pin and ``to``, with the history between them. Bad input fails at once
    (exit 2): an upstream that cannot be reached, no such tag or branch there."""
    assert source.git is not None and source.ref is not None
    who = f"cannot upgrade '{source.name}'"
    try:
        remote = remote_refs(source.git, f"source '{source.name}'")
    except SourceError as e:
        raise SourceInputError(f"{who}: {e.message}", hint=e.hint) from None
    if not _HEX40.match(to) and to not in remote:
        newest = newest_releases(list(remote))
        near = closest(to, list(remote))
        hint = " ".join(
            x for x in (near, f"The newest release tags there: {', '.join(newest)}." if newest else "") if x
        )
        raise SourceInputError(
            f"{who}: {source.git} has no tag or branch '{to}'",
            hint=hint or "give an existing tag, branch or full commit id with --to",
        )
    old_commit = source.commit or (source.ref if _HEX40.match(source.ref) else remote.get(source.ref))
    if old_commit is None:
        raise SourceInputError(
            f"{who}: its current ref '{source.ref}' is no longer in {source.git}, and images.yaml pins no commit",
            hint="pin the commit you build today with 'commit:' in images.yaml, then upgrade",
        )
    progress(f"fetching {source.ref} ({old_commit[:12]}) and {to} with the history between them from {source.git}")
    try:
        repo, new_commit = fetch_between(source, old_commit, to, remote)
    except SourceError as e:
        raise SourceInputError(f"{who} to '{to}': {e.message}", hint=e.hint) from None

    def pinned(ref: str, commit: str) -> ResolvedSource:
        when = int(git("show", "-s", "--format=%ct", commit, cwd=repo))
        version = ref if not _HEX40.match(ref) else commit[:12]
        return ResolvedSource(
            dataclasses.replace(source, ref=ref, commit=commit), source.git or "", commit, version, when, repo
        )

    return pinned(source.ref, old_commit), pinned(to, new_commit)


# --- replaying the queue ----------------------------------------------------------


@dataclass(frozen=True)
class Replay:
    results: tuple[PatchResult, ...]
    queue_commits: tuple[str | None, ...]  # each patch as a commit on the current pin (None: no change)
    conflict: int | None  # index of the patch that conflicts


def _git(tree: Path, *args: str) -> tuple[int, str, str]:
    r = run(["git", *args], cwd=tree, env=GIT_ENV, check=False)
    return r.returncode, r.stdout, r.stderr


def replay(tree: Path, target: Target, old: ResolvedSource, new: ResolvedSource, progress: Progress) -> Replay:
    """Apply the queue as commits on ``old`` in ``tree``, then replay them in order on ``new``
    (branch ``archlift-patches``; the queue on the old pin stays as ``archlift-queue-old``)."""
    name = target.source.name
    checkout(old, tree)
    git("checkout", "-q", "-B", "archlift-queue-old", cwd=tree)
    commits: list[str | None] = []
    for patch in target.queue:
        before = git("rev-parse", "HEAD", cwd=tree)
        try:
            apply_queue(tree, (patch,), old, name)
        except PatchError as e:
            raise PatchError(
                f"the queue of '{name}' does not apply to its current pin, so there is nothing to carry over:\n"
                + e.message,
                hint=f"fix the queue at the current pin first (archlift patches checkout {name}), then upgrade",
            ) from None
        after = git("rev-parse", "HEAD", cwd=tree)
        commits.append(after if after != before else None)
    git("checkout", "-q", "-B", "archlift-patches", new.commit, cwd=tree)
    results: list[PatchResult] = []
    for i, (patch, commit) in enumerate(zip(target.queue, commits, strict=True)):
        progress(f"replaying {patch.name} on {new.version}")
        subject = git("log", "-1", "--format=%s", commit, cwd=tree) if commit else _mail_subject(patch)
        if commit is None:
            results.append(PatchResult(patch, subject, Outcome.UPSTREAM, "it changes nothing at the current pin"))
            continue
        rc, _, err = _git(tree, "apply", "--check", "-v", str(patch))
        if rc == 0:
            git("apply", "--index", str(patch), cwd=tree)
            git("commit", "-q", "--no-verify", "-C", commit, cwd=tree)
            moved, hunks = len(_OFFSET_RE.findall(err)), _count_hunks(patch)
            if moved:
                results.append(PatchResult(patch, subject, Outcome.OFFSETS, f"{moved} of {hunks} hunk(s) moved"))
            else:
                results.append(PatchResult(patch, subject, Outcome.APPLIES))
            continue
        if _git(tree, "apply", "--check", "--reverse", str(patch))[0] == 0:
            results.append(PatchResult(patch, subject, Outcome.UPSTREAM, f"it reverse-applies: {new.version} has it"))
            continue
        rc, _, err = _git(tree, "cherry-pick", "--no-commit", commit)
        if rc == 0:
            if _git(tree, "diff", "--cached", "--quiet")[0] == 0:
                _clean(tree)
                detail = "the three-way merge leaves nothing to commit"
                results.append(PatchResult(patch, subject, Outcome.UPSTREAM, detail))
            else:
                git("commit", "-q", "--no-verify", "-C", commit, cwd=tree)
                results.append(PatchResult(patch, subject, Outcome.MERGED))
            continue
        unmerged = git("diff", "--name-only", "--diff-filter=U", cwd=tree).splitlines()
        _clean(tree)
        base = next((c for c in reversed(commits[:i]) if c), old.commit)
        failed = _failed_hunks(tree, patch, base, old.commit, new.commit)
        files = sorted({*unmerged, *(h.file for h in failed)})
        results.append(PatchResult(patch, subject, Outcome.CONFLICT, f"in {', '.join(files)}", failed))
        results += [
            PatchResult(p, git("log", "-1", "--format=%s", c, cwd=tree) if c else _mail_subject(p), Outcome.NOT_TRIED)
            for p, c in zip(target.queue[i + 1 :], commits[i + 1 :], strict=True)
        ]
        return Replay(tuple(results), tuple(commits), i)
    return Replay(tuple(results), tuple(commits), None)


def _clean(tree: Path) -> None:
    _git(tree, "cherry-pick", "--quit")
    git("reset", "-q", "--hard", cwd=tree)
    git("clean", "-fdq", cwd=tree)


def _count_hunks(patch: Path) -> int:
    return sum(1 for line in patch.read_text(errors="replace").splitlines() if line.startswith("@@ "))


def _mail_subject(patch: Path) -> str:
    m = re.search(r"^Subject: (?:\[PATCH[^\]]*\] )?(.*(?:\n .*)*)", patch.read_text(errors="replace"), re.M)
    return " ".join(m.group(1).split()) if m else patch.name


def _failed_hunks(tree: Path, patch: Path, base: str, old: str, new: str) -> tuple[FailedHunk, ...]:
    """The hunks of ``patch`` that do not apply at HEAD (``git apply --reject`` says which), each
    with the upstream commits in old..new that touched its lines. Leaves the tree clean."""
    _, out, err = _git(tree, "apply", "--reject", "-v", str(patch))
    failed: list[FailedHunk] = []
    for line in (err + "\n" + out).splitlines():
        m = _REJECTS_RE.match(line)
        if m:
            rej = tree / f"{m.group('file')}.rej"
            hunks = _split_hunks(rej.read_text(errors="replace")) if rej.is_file() else []
            for header, text in hunks:
                lines = _HUNK_RE.match(header)
                assert lines is not None
                start = int(lines.group(1))
                length = int(lines.group(2) or "1")
                commits = _touching(tree, m.group("file"), base, old, new, start, start + max(length, 1) - 1)
                failed.append(FailedHunk(m.group("file"), header, text, commits))
            continue
        m = _FILE_ERROR_RE.match(line)
        if m and m.group("file") != "patch failed" and m.group("why") != "patch does not apply":
            if any(h.file == m.group("file") for h in failed):
                continue
            log = git("log", "--format=%H%x09%s", f"{old}..{new}", "--", m.group("file"), cwd=tree)
            failed.append(FailedHunk(m.group("file"), m.group("why"), "", _commits(log)))
    _clean(tree)
    return tuple(failed)


def _split_hunks(rej: str) -> list[tuple[str, str]]:
    out: list[tuple[str, list[str]]] = []
    for line in rej.splitlines():
        if line.startswith("@@"):
            out.append((line, [line]))
        elif out:
            out[-1][1].append(line)
    return [(header, "\n".join(body)) for header, body in out]


def _commits(log: str) -> tuple[Commit, ...]:
    out = []
    for line in log.splitlines():
        sha, _, subject = line.partition("\t")
        if _HEX40.match(sha):
            out.append(Commit(sha, subject))
    return tuple(out)


def _touching(tree: Path, file: str, base: str, old: str, new: str, start: int, end: int) -> tuple[Commit, ...]:
    """Upstream commits in old..new that changed what are lines start..end of ``file`` at ``base``
    (``git log -L`` over those lines, mapped onto the new ref)."""
    if _git(tree, "cat-file", "-e", f"{new}:{file}")[0] != 0:  # gone upstream: whoever removed it
        return _commits(git("log", "--format=%H%x09%s", f"{old}..{new}", "--", file, cwd=tree))
    diff = git("diff", "--no-color", "--no-ext-diff", "-U0", base, new, "--", file, cwd=tree)
    a, b = map_lines(diff, start, end)
    size = len(git("show", f"{new}:{file}", cwd=tree).splitlines())
    if size == 0:
        return _commits(git("log", "--format=%H%x09%s", f"{old}..{new}", "--", file, cwd=tree))
    a, b = min(max(a, 1), size), min(max(b, 1), size)
    log = git("log", "--format=%H%x09%s", "-s", f"-L{min(a, b)},{max(a, b)}:{file}", f"{old}..{new}", cwd=tree)
    return _commits(log)


def map_lines(diff: str, start: int, end: int) -> tuple[int, int]:
    """Where lines ``start``..``end`` of the old side of a ``-U0`` diff of one file stand on its
    new side (a range inside a changed region widens to the whole new region)."""

    def where(x: int, last: bool) -> int:
        shift = 0
        for line in diff.splitlines():
            m = _HUNK_RE.match(line)
            if not m:
                continue
            s, n_old = int(m.group(1)), int(m.group(2) or "1")
            t, n_new = int(m.group(3)), int(m.group(4) or "1")
            s, t = s + (n_old == 0), t + (n_new == 0)  # an empty side names the line before it
            if x < s:
                break
            if x < s + n_old:  # inside a changed region
                return t + n_new - 1 if last and n_new else t
            shift = (t + n_new) - (s + n_old)
        return x + shift

    a, b = where(start, False), where(end, True)
    return a, max(a, b)


# --- the queue and images.yaml ---------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """An upgrade left with a conflict, recorded in its work tree for ``patches refresh``."""

    config: Path
    source: str
    url: str
    old: Pin
    new: Pin
    patches: tuple[tuple[Path, str], ...]  # (patch file, subject) of every patch that may still be kept
    dropped: tuple[Path, ...]  # found upstream before the conflict

    def write(self, tree: Path) -> None:
        data = {
            "config": str(self.config),
            "source": self.source,
            "url": self.url,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "patches": [[str(p), s] for p, s in self.patches],
            "dropped": [str(p) for p in self.dropped],
        }
        (tree / ".git" / PENDING).write_text(json.dumps(data, indent=2) + "\n")

    @classmethod
    def read(cls, tree: Path) -> Pending | None:
        path = tree / ".git" / PENDING
        if not path.is_file():
            return None
        try:
            d = json.loads(path.read_text())
            return cls(
                config=Path(d["config"]),
                source=d["source"],
                url=d["url"],
                old=Pin(**d["old"]),
                new=Pin(**d["new"]),
                patches=tuple((Path(p), s) for p, s in d["patches"]),
                dropped=tuple(Path(p) for p in d["dropped"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise UsageError(f"{path}: not an upgrade record archlift wrote ({e})", hint="remove it") from None


@dataclass(frozen=True)
class Written:
    changes: tuple[TextChange, ...]
    written: tuple[Path, ...]
    dropped: tuple[Path, ...]
    checked: str


def write_upgrade(
    target: Target, tree: Path, new: ResolvedSource, kept: Sequence[tuple[Path, str]], progress: Progress
) -> Written:
    """Regenerate the queue from the commits of ``tree`` above ``new.commit`` under the names of
    ``kept`` (matched by subject, in order), check that it applies on a fresh checkout of the
    new commit, then rewrite images.yaml's pin (and an explicit list's dropped items)."""
    if _git(tree, "rev-parse", "-q", "--verify", "CHERRY_PICK_HEAD")[0] == 0 or (tree / ".git" / "sequencer").exists():
        raise PatchError(
            f"{tree}: a cherry-pick is still in progress",
            hint="resolve the conflicts, 'git add' the files and run 'git cherry-pick --continue' there first",
        )
    status = git("status", "--porcelain", "--untracked-files=no", cwd=tree)
    if status:
        raise PatchError(f"{tree} has uncommitted changes:\n{status}", hint="commit them (git commit -a) first")
    subjects = git("log", "--reverse", "--format=%s", f"{new.commit}..HEAD", cwd=tree).splitlines()
    names = _names(target, kept, subjects)
    dropped = tuple(p for p in target.queue if p not in set(names))
    staging = Path(tempfile.mkdtemp(prefix="archlift-upgrade-queue-"))
    try:
        made = format_patches(tree, new.commit, staging) if subjects else []
        checked = _check_queue(new, made, target.source.name, progress)
        text = read_text(target.config)
        edits = pin_edits(text, target, new.source.ref or new.commit, new.commit)
        new_text = apply_edits(text, [*edits, *drop_edits(text, target, dropped)])
        _install(target, dict(zip(names, (p.read_bytes() for p in made), strict=True)), dropped, new_text)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return Written(changed_lines(text, new_text), tuple(names), dropped, checked)


def _install(target: Target, files: dict[Path, bytes], dropped: Sequence[Path], config_text: str) -> None:
    """Write the new queue, then images.yaml (validated before it replaces the file); if anything
    fails, the queue is put back as it was."""
    saved = {p: p.read_bytes() for p in target.queue if p.is_file()}
    candidate = target.config.with_name(f".{target.config.name}.upgrade")
    try:
        for p in dropped:
            p.unlink(missing_ok=True)
        for path, data in files.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        candidate.write_bytes(config_text.encode("utf-8"))
        load_config(candidate)
        os.replace(candidate, target.config)
    except BaseException:
        candidate.unlink(missing_ok=True)
        for path in files:
            if path not in saved:
                path.unlink(missing_ok=True)
        for path, data in saved.items():
            path.write_bytes(data)
        raise


def _names(target: Target, kept: Sequence[tuple[Path, str]], subjects: Sequence[str]) -> list[Path]:
    """The file of each commit above the new base: the kept patch of the same subject, in order."""
    free = list(kept)
    names = []
    for subject in subjects:
        match = next((k for k in free if k[1] == subject), None)
        if match is None:
            raise PatchError(
                f"the commit '{subject}' above the new base is none of the queue's patches; archlift keeps each "
                "patch's file name and cannot name a new one",
                hint="give it a patch file yourself afterwards: 'archlift patches refresh' without the upgrade "
                f"record ({PENDING} in the work tree's .git) writes every commit under git's own names",
            )
        free = free[free.index(match) + 1 :]  # order is kept: later matches only
        names.append(match[0])
    if not target.explicit and names != sorted(names, key=lambda p: p.name):
        raise PatchError("the work tree's commits are not in the queue's order", hint="reorder them (git rebase -i)")
    return names


def _check_queue(new: ResolvedSource, made: Sequence[Path], who: str, progress: Progress) -> str:
    """Apply the regenerated queue to a fresh checkout of the new commit, as a build will."""
    if not made:
        return f"the queue is empty at {new.commit[:12]}"
    progress(f"checking the regenerated queue on a fresh checkout of {new.commit[:12]}")
    with tempfile.TemporaryDirectory(prefix="archlift-upgrade-check-") as tmp:
        tree = checkout(new, Path(tmp) / "tree")
        for patch in made:
            rc, _, err = _git(tree, "apply", "--check", str(patch))
            if rc != 0:
                raise PatchError(
                    f"the regenerated {patch.name} does not pass git apply --check on {new.commit}:\n{err}"
                )
            apply_queue(tree, (patch,), new, who)
    return f"each of the {len(made)} patch(es) passes git apply --check, in order, on {new.commit}"


# --- the whole step ----------------------------------------------------------------


def default_work_tree(name: str) -> Path:
    return Path(".cache") / "patches" / name


def _unfinished(tree: Path) -> str:
    if not (tree / ".git").exists():
        return ""
    if Pending.read(tree) is not None:
        return "an upgrade left with a conflict"
    if (tree / ".git" / "sequencer").exists() or (tree / ".git" / "rebase-apply").exists():
        return "a cherry-pick or git am in progress"
    rc, out, _ = _git(tree, "status", "--porcelain", "--untracked-files=no")
    return "uncommitted changes" if rc == 0 and out.strip() else ""


def upgrade(request: UpgradeRequest, progress: Progress = lambda _: None) -> UpgradeReport:
    target = locate(request.config, request.source)
    source = target.source
    assert source.git is not None
    text = read_text(request.config)
    pin_edits(text, target, request.to, "0" * 40)  # a pin that cannot be rewritten fails before any work
    work_tree = request.work_tree or default_work_tree(source.name)
    if not request.dry_run:
        busy = _unfinished(work_tree)
        if busy:
            raise UsageError(
                f"{work_tree} holds {busy}",
                hint=f"finish it (archlift patches refresh {source.name} {work_tree}), remove it, "
                "or give another --work-tree",
            )
    old, new = fetch_pins(source, request.to, progress)
    count = int(git("rev-list", "--count", f"{old.commit}..{new.commit}", cwd=old.repo))
    report = UpgradeReport(
        source=source.name,
        url=source.git,
        old=Pin(source.ref or old.commit, old.commit, old.version),
        new=Pin(request.to, new.commit, new.version),
        upstream_commits=count,
        results=(),
        dry_run=request.dry_run,
        changed=False,
        config=request.config,
        notes=tuple(
            f"${name} is set in your environment and overrides the default in {request.config}"
            for name in overridden(text, target)
        ),
    )
    if report.same:
        return report
    scratch = Path(tempfile.mkdtemp(prefix="archlift-upgrade-"))
    tree = scratch / "tree" if request.dry_run else work_tree
    keep_tree = False
    try:
        done = replay(tree, target, old, new, progress)
        report = dataclasses.replace(report, results=done.results)
        if request.dry_run:
            return report
        if done.conflict is not None:
            keep_tree = True
            return _leave_conflict(report, tree, done)
        kept = [(r.patch, r.subject) for r in done.results if r.outcome.kept]
        written = write_upgrade(target, tree, new, kept, progress)
        return dataclasses.replace(
            report,
            changed=True,
            changes=written.changes,
            written=written.written,
            dropped=written.dropped,
            checked=written.checked,
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not keep_tree and not request.dry_run:
            shutil.rmtree(tree, ignore_errors=True)


def _leave_conflict(report: UpgradeReport, tree: Path, done: Replay) -> UpgradeReport:
    """Start the cherry-pick of the conflicting commit and every later one (it stops at the
    conflict; ``git cherry-pick --continue`` goes on), and record the upgrade for refresh."""
    assert done.conflict is not None
    i = done.conflict
    first = done.queue_commits[i]
    last = next(c for c in reversed(done.queue_commits) if c)
    assert first is not None
    for key, value in (("user.name", GIT_ENV["GIT_COMMITTER_NAME"]), ("user.email", GIT_ENV["GIT_COMMITTER_EMAIL"])):
        if _git(tree, "config", key)[0] != 0:  # so that 'git cherry-pick --continue' works with no identity set
            git("config", key, value, cwd=tree)
    _git(tree, "cherry-pick", f"{first}^..{last}")
    files = tuple(git("diff", "--name-only", "--diff-filter=U", cwd=tree).splitlines())
    results = report.results
    Pending(
        config=report.config.resolve(),
        source=report.source,
        url=report.url,
        old=report.old,
        new=report.new,
        patches=tuple(
            (r.patch, r.subject)
            for r in results
            if r.outcome.kept or r.outcome in (Outcome.CONFLICT, Outcome.NOT_TRIED)
        ),
        dropped=tuple(r.patch for r in results if r.outcome is Outcome.UPSTREAM),
    ).write(tree)
    return dataclasses.replace(report, work_tree=tree, conflict_files=files)


def finish(tree: Path, name: str, config_path: Path, progress: Progress = lambda _: None) -> tuple[Pending, Written]:
    """``archlift patches refresh`` of a work tree an upgrade left with a conflict: write the queue
    against the new commit and move the pin in images.yaml."""
    pending = Pending.read(tree)
    assert pending is not None
    if pending.source != name or pending.config != config_path.resolve():
        raise UsageError(
            f"{tree} holds the upgrade of '{pending.source}' in {pending.config}, not of '{name}' in {config_path}",
            hint=f"run: archlift patches refresh {pending.source} {tree} --config {pending.config}",
        )
    target = locate(config_path, name)
    if target.source.commit and target.source.commit != pending.old.commit:
        raise UsageError(
            f"{config_path} no longer pins '{name}' at {pending.old.commit[:12]} (it pins {target.source.commit[:12]})",
            hint="start the upgrade again: archlift upgrade",
        )
    if _git(tree, "merge-base", "--is-ancestor", pending.new.commit, "HEAD")[0] != 0:
        raise PatchError(
            f"{tree}: HEAD is not above {pending.new.ref} ({pending.new.commit[:12]}), the commit it was upgraded to",
            hint="start the upgrade again: archlift upgrade",
        )
    source = dataclasses.replace(target.source, ref=pending.new.ref, commit=pending.new.commit)
    new = ResolvedSource(source, pending.url, pending.new.commit, pending.new.version, 0, tree)
    written = write_upgrade(target, tree, new, pending.patches, progress)
    (tree / ".git" / PENDING).unlink()
    return pending, written
