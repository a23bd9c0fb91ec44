"""Patch: apply a component's queue to a work tree, in order; regenerate it.

``apply_queue(tree, patches, resolved)`` commits each patch (``git am --3way``
for mail-formatted patches, ``git apply --3way`` + commit for plain diffs).
A patch that does not apply raises :class:`PatchError` naming the patch file,
the failing hunk and the upstream commit. ``refresh`` writes the commits of a
work tree above the upstream commit back as the queue (``git format-patch``).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import PatchError
from ..proc import run
from .sources import GIT_ENV, ResolvedSource, git

_FAILED_RE = re.compile(r"patch failed: (?P<file>.+?):(?P<line>\d+)")


@dataclass(frozen=True)
class AppliedPatch:
    path: Path
    sha256: str


@dataclass(frozen=True)
class PatchedTree:
    path: Path
    resolved: ResolvedSource
    patches: tuple[AppliedPatch, ...]

    @property
    def patch_hash(self) -> str:
        return queue_hash(p.path for p in self.patches)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def queue_hash(paths: Iterable[Path]) -> str:
    """One hash over the bytes of a patch queue, in order."""
    h = hashlib.sha256()
    for p in paths:
        h.update(file_sha256(Path(p)).encode())
    return h.hexdigest()


def apply_queue(tree: Path, patches: tuple[Path, ...], resolved: ResolvedSource, who: str) -> PatchedTree:
    applied = []
    for patch in patches:
        _apply_one(tree, patch, resolved, who)
        applied.append(AppliedPatch(patch, file_sha256(patch)))
    return PatchedTree(tree, resolved, tuple(applied))


def _is_mail(patch: Path) -> bool:
    head = patch.read_text(errors="replace")[:2000]
    return head.startswith("From ") and "\nSubject:" in head


def _apply_one(tree: Path, patch: Path, resolved: ResolvedSource, who: str) -> None:
    if _is_mail(patch):
        result = run(["git", "am", "-q", "--3way", "--keep-cr", str(patch)], cwd=tree, env=GIT_ENV, check=False)
        if result.returncode == 0:
            return
        run(["git", "am", "--abort"], cwd=tree, env=GIT_ENV, check=False)
    else:
        result = run(["git", "apply", "--3way", "--index", str(patch)], cwd=tree, env=GIT_ENV, check=False)
        if result.returncode == 0:
            git("commit", "-q", "-m", f"archlift: {patch.name}", cwd=tree)
            return
        run(["git", "reset", "-q", "--hard"], cwd=tree, env=GIT_ENV, check=False)
    raise _failure(tree, patch, resolved, who)


def _failure(tree: Path, patch: Path, resolved: ResolvedSource, who: str) -> PatchError:
    check = run(["git", "apply", "--check", "-v", str(patch)], cwd=tree, env=GIT_ENV, check=False)
    lines = [x for x in check.stderr.splitlines() if x.startswith("error:")] or check.stderr.splitlines()[-3:]
    hunk = ""
    m = _FAILED_RE.search(check.stderr)
    if m:
        hunk = failing_hunk(patch, m.group("file"), int(m.group("line")))
    message = (
        f"{who}: {patch} does not apply to {resolved.url} at {resolved.commit}"
        f" ({resolved.version})\n" + "\n".join(lines)
    )
    if hunk:
        message += f"\nfailing hunk:\n{hunk}"
    return PatchError(
        message,
        hint=f"nothing of {who} was built or pushed; update the patch "
        f"('archlift patches checkout {who}', fix, commit, 'archlift patches refresh {who}')",
    )


def failing_hunk(patch: Path, file: str, line: int) -> str:
    """The hunk of ``patch`` for ``file`` that starts at old-file ``line`` (at most 20 lines)."""
    current, out = "", list[str]()
    for text in patch.read_text(errors="replace").splitlines():
        if out and (text.startswith(("@@", "diff --git", "-- ")) or len(out) >= 20):
            break
        if text.startswith("--- "):
            current = text[4:].removeprefix("a/")
        elif text.startswith("@@"):
            m = re.match(r"@@ -(\d+)", text)
            if current == file and m and int(m.group(1)) == line:
                out.append(text)
        elif out:
            out.append(text)
    return "\n".join(out)


def refresh(tree: Path, upstream_commit: str, out_dir: Path) -> list[Path]:
    """Write the commits of ``tree`` above ``upstream_commit`` as ``out_dir/NNNN-*.patch``."""
    if not (tree / ".git").exists():
        raise PatchError(f"{tree} is not a git work tree", hint="run 'archlift patches checkout COMPONENT DIR' first")
    count = git("rev-list", "--count", f"{upstream_commit}..HEAD", cwd=tree)
    if int(count) == 0:
        raise PatchError(f"{tree} has no commits above the upstream commit {upstream_commit}")
    status = git("status", "--porcelain", "--untracked-files=no", cwd=tree)
    if status:
        raise PatchError(f"{tree} has uncommitted changes:\n{status}", hint="commit them (git commit -a) first")
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.patch"):
        old.unlink()
    return format_patches(tree, upstream_commit, out_dir) or sorted(out_dir.glob("*.patch"))


def format_patches(tree: Path, base: str, out_dir: Path) -> list[Path]:
    """The commits of ``tree`` above ``base`` as mails in ``out_dir``, in order (one line of
    context: small patches that still apply with a three-way merge)."""
    names = git(
        "format-patch",
        "-U1",
        "--no-signature",
        "--zero-commit",
        "--no-stat",
        "-o",
        str(out_dir),
        f"{base}..HEAD",
        cwd=tree,
    )
    return [Path(n) for n in names.splitlines() if n]
