"""Fetch: upstream sources into a cache reused across runs, resolved to commits.

``resolve(source)`` -> :class:`ResolvedSource` (fetches only what is missing);
``checkout(resolved, dest)`` -> a fresh work tree at that commit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config.model import Source
from ..errors import SourceError, SourceInputError
from ..memo import Once
from ..proc import run

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
GIT_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "archlift",
    "GIT_AUTHOR_EMAIL": "archlift@localhost",
    "GIT_COMMITTER_NAME": "archlift",
    "GIT_COMMITTER_EMAIL": "archlift@localhost",
}


def cache_root() -> Path:
    """``$ARCHLIFT_CACHE_DIR``, else ``$XDG_CACHE_HOME/archlift``, else ``~/.cache/archlift``."""
    if os.environ.get("ARCHLIFT_CACHE_DIR"):
        return Path(os.environ["ARCHLIFT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "archlift"


@dataclass(frozen=True)
class ResolvedSource:
    source: Source
    url: str
    commit: str
    version: str  # the tag, else `git describe --tags --always`
    commit_time: int  # committer time, seconds since the epoch (SOURCE_DATE_EPOCH)
    repo: Path | None  # the bare cache clone (git sources)
    dirty: bool = False  # a local directory with uncommitted changes
    tree_hash: str = ""  # local directories: hash of the files as they are

    @property
    def short_commit(self) -> str:
        return self.commit[:9]


def git(*args: str, cwd: Path | None = None, context: str = "", check: bool = True) -> str:
    return run(["git", *args], cwd=cwd, env=GIT_ENV, error=SourceError, context=context, check=check).stdout.strip()


def _repo_dir(url: str) -> Path:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", url.rstrip("/").rsplit("/", 1)[-1])[:40]
    return cache_root() / "git" / f"{name}-{hashlib.sha256(url.encode()).hexdigest()[:12]}.git"


def _ensure_clone(url: str, context: str) -> Path:
    """The bare cache clone of ``url``, made once (atomically: concurrent runs may race here)."""
    repo = _repo_dir(url)
    if (repo / "HEAD").exists():
        return repo
    repo.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{repo.name}.", dir=repo.parent))
    try:
        git("init", "--bare", "-q", str(tmp), context=context)
        git("remote", "add", "origin", url, cwd=tmp, context=context)
        try:
            os.rename(tmp, repo)
        except OSError:
            if not (repo / "HEAD").exists():  # not another run's clone: a real failure
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return repo


@dataclass(frozen=True)
class Refs:
    """A repository's refs, read with one ``git show-ref -d`` (tags peeled to commits)."""

    tags: dict[str, str]
    branches: dict[str, str]

    @classmethod
    def read(cls, repo: Path) -> Refs:
        out = run(["git", "show-ref", "-d"], cwd=repo, env=GIT_ENV, check=False).stdout
        tags: dict[str, str] = {}
        branches: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, name = line.partition(" ")
            if name.startswith("refs/tags/"):
                tag = name.removeprefix("refs/tags/")
                if tag.endswith("^{}"):
                    tags[tag[:-3]] = sha  # the peeled commit wins over the tag object
                else:
                    tags.setdefault(tag, sha)
            elif name.startswith("refs/remotes/origin/"):
                branches[name.removeprefix("refs/remotes/origin/")] = sha
        return cls(tags, branches)

    def commit(self, repo: Path, ref: str) -> str | None:
        if ref in self.tags:
            return self.tags[ref]
        if ref in self.branches:
            return self.branches[ref]
        if _HEX40.match(ref):
            has = run(["git", "cat-file", "-e", f"{ref}^{{commit}}"], cwd=repo, env=GIT_ENV, check=False)
            return ref if has.returncode == 0 else None
        return None


def remote_refs(url: str, context: str) -> dict[str, str]:
    """The tags and branches of the repository at ``url`` (``git ls-remote``; tags peeled to
    commits), without fetching anything. An unreachable URL raises :class:`SourceError` with
    git's whole message."""
    result = run(
        ["git", "ls-remote", "--tags", "--heads", url],
        env=GIT_ENV,
        check=False,
        timeout=120,
        error=SourceError,
        context=context,
    )
    if result.returncode != 0:
        raise SourceError(
            f"{context}: cannot reach {url}; git said:\n{_indent(result.stderr)}",
            hint="check the URL and your network or credentials; a path must be a git repository",
        )
    refs: dict[str, str] = {}
    for line in result.stdout.splitlines():
        sha, _, name = line.partition("\t")
        for prefix in ("refs/tags/", "refs/heads/"):
            if name.startswith(prefix):
                short = name.removeprefix(prefix)
                if short.endswith("^{}"):
                    refs[short[:-3]] = sha  # the peeled commit wins over the tag object
                else:
                    refs.setdefault(short, sha)
    return refs


def fetch_between(source: Source, old_commit: str, to: str, remote: dict[str, str]) -> tuple[Path, str]:
    """For ``archlift upgrade``: ``old_commit`` and ``to`` with the history between them, in a
    repository of the upgrade's own (the build's clone cache is left alone). The old commit is
    fetched alone (``--depth=1``), then ``to``, which brings old..new and nothing older than the
    current pin: a mirror that lacks old objects still works. ``remote`` is :func:`remote_refs`
    of the URL. Returns the repository and the commit of ``to``."""
    assert source.git is not None
    context = f"source '{source.name}'"
    repo = cache_root() / "upgrade" / _repo_dir(source.git).name
    if not (repo / "HEAD").exists():
        repo.parent.mkdir(parents=True, exist_ok=True)
        git("init", "--bare", "-q", str(repo), context=context)
        git("remote", "add", "origin", source.git, cwd=repo, context=context)

    def fetch(sha: str, *how: str) -> None:
        result = run(
            ["git", "fetch", "-q", "--no-tags", *how, "origin", sha],
            cwd=repo,
            env=GIT_ENV,
            check=False,
            timeout=600,
            error=SourceError,
            context=context,
        )
        if result.returncode != 0:
            raise SourceError(
                f"{context}: cannot fetch {sha} from {source.git}; git said:\n{_indent(result.stderr)}",
                hint="check the URL and your network or credentials; a mirror must hold both commits",
            )

    if not Refs.read(repo).commit(repo, old_commit):
        fetch(old_commit, "--depth=1")
    want = to if _HEX40.match(to) else remote[to]
    if want != old_commit:  # a shallow repository asks for no parent of what it has: only old..new comes
        fetch(want)
    new = git("rev-parse", "--verify", f"{want}^{{commit}}", cwd=repo, context=context)
    git("update-ref", "refs/heads/archlift/old", old_commit, cwd=repo, context=context)
    git("update-ref", "refs/heads/archlift/new", new, cwd=repo, context=context)
    return repo, new


def _fetch(repo: Path, url: str, ref: str, context: str) -> None:
    """Fetch just ``ref`` (a tag, a branch or a full commit id) from ``url``: not every head and tag
    of the remote, so a broken object elsewhere in a mirror's history does not matter. A fetch that
    fails with the whole history is tried once more for the ref's tip alone (``--depth=1``), which
    is what a shallow or partial mirror holding the pinned commit can serve."""
    if _HEX40.match(ref):
        refspecs = [ref]
    else:
        kind = _remote_kind(repo, url, ref, context)
        refspecs = [
            f"+refs/tags/{ref}:refs/tags/{ref}" if kind == "tag" else f"+refs/heads/{ref}:refs/remotes/origin/{ref}"
        ]
    # --update-shallow: a shallow mirror's refs are taken (git silently refuses them otherwise)
    argv = ["git", "fetch", "-q", "--force", "--no-tags", "--update-shallow", "origin", *refspecs]
    result = run(argv, cwd=repo, env=GIT_ENV, check=False, timeout=600)
    if result.returncode != 0:
        result = run([*argv[:3], "--depth=1", *argv[3:]], cwd=repo, env=GIT_ENV, check=False, timeout=600)
    if result.returncode != 0:
        what = f"commit {ref}" if _HEX40.match(ref) else f"'{ref}'"
        missing = "not our ref" in result.stderr or "couldn't find remote ref" in result.stderr
        raise (SourceInputError if missing else SourceError)(
            f"{context}: cannot fetch {what} from {url}; git said:\n{_indent(result.stderr)}",
            hint="check the URL, the ref and your network or credentials; a mirror must hold the pinned "
            "commit (a shallow or partial mirror will do)",
        )


def _remote_kind(repo: Path, url: str, ref: str, context: str) -> str:
    """Whether ``ref`` is a tag or a branch of the remote (one ``git ls-remote``, no objects)."""
    result = run(
        ["git", "ls-remote", "origin", f"refs/tags/{ref}", f"refs/heads/{ref}"],
        cwd=repo,
        env=GIT_ENV,
        check=False,
        timeout=120,
    )
    if result.returncode != 0:
        raise SourceInputError(
            f"{context}: cannot reach {url}; git said:\n{_indent(result.stderr)}",
            hint="check the URL and your network or credentials; a path must be a git repository",
        )
    names = {line.split("\t", 1)[-1] for line in result.stdout.splitlines()}
    if f"refs/tags/{ref}" in names:
        return "tag"
    if f"refs/heads/{ref}" in names:
        return "branch"
    raise SourceInputError(
        f"{context}: ref '{ref}' does not exist in {url}",
        hint="give an existing tag, branch or full commit id in images.yaml",
    )


def _indent(text: str) -> str:
    lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()] or ["(no output)"]
    return "\n".join(f"    {line}" for line in lines)


def resolve(source: Source, *, refresh: bool = False, locked_commit: str | None = None) -> ResolvedSource:
    """Resolve ``source`` to a commit, fetching only what the cache lacks.

    A branch is always fetched (it moves); a tag or commit only when missing
    or with ``refresh``. A commit that differs from ``source.commit`` (the pin
    in images.yaml) or from ``locked_commit`` (the release lock) is an error.
    """
    if source.path is not None:
        return _resolve_local(source)
    assert source.git is not None and source.ref is not None
    context = f"source '{source.name}'"
    repo = _ensure_clone(source.git, context)
    refs = Refs.read(repo)
    commit = None if refresh else refs.commit(repo, source.ref)
    if commit is None or (source.ref in refs.branches and source.ref not in refs.tags):
        _fetch(repo, source.git, source.ref, context)
        refs = Refs.read(repo)
        commit = refs.commit(repo, source.ref)
    if commit is None:
        raise SourceInputError(
            f"{context}: ref '{source.ref}' does not exist in {source.git}",
            hint="give an existing tag, branch or full commit id in images.yaml",
        )
    _check_pins(source, commit, locked_commit)
    version, when = _commit_facts(repo, commit, source.ref if source.ref in refs.tags else None, context)
    return ResolvedSource(source, source.git, commit, version, when, repo)


def _commit_facts(repo: Path, commit: str, tag: str | None, context: str) -> tuple[str, int]:
    """(version, committer time) of a commit; cached on disk, since commits never change."""
    cached = cache_root() / "commits" / f"{commit}.json"
    if cached.is_file():
        facts = json.loads(cached.read_text())
    else:
        describe = git("describe", "--tags", "--always", commit, cwd=repo, context=context)
        when = int(git("show", "-s", "--format=%ct", commit, cwd=repo, context=context))
        facts = {"describe": describe, "time": when}
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(facts))
    return tag or str(facts["describe"]), int(facts["time"])


def _check_pins(source: Source, commit: str, locked_commit: str | None) -> None:
    if source.commit and commit != source.commit:
        raise SourceError(
            f"source '{source.name}': '{source.ref}' now resolves to {commit}, but images.yaml pins {source.commit}",
            hint="the upstream tag moved: check what changed upstream, then update 'commit:' deliberately",
        )
    if locked_commit and commit != locked_commit and not _HEX40.match(source.ref or ""):
        raise SourceError(
            f"source '{source.name}': '{source.ref}' now resolves to {commit}, "
            f"but the release lock records {locked_commit}",
            hint="the upstream tag moved since the last release; pin 'commit:' in images.yaml "
            "or remove dist/release.json to accept the new commit",
        )


def _resolve_local(source: Source) -> ResolvedSource:
    assert source.path is not None
    path = source.path
    digest = _hash_tree(path)
    commit, version, when, dirty = "0" * 40, "local", 0, True
    inside = run(["git", "rev-parse", "--is-inside-work-tree"], cwd=path, check=False).stdout.strip() == "true"
    if inside:
        commit = git("rev-parse", "HEAD", cwd=path)
        version = git("describe", "--tags", "--always", "--dirty", cwd=path)
        when = int(git("show", "-s", "--format=%ct", "HEAD", cwd=path))
        dirty = bool(git("status", "--porcelain", "--untracked-files=normal", cwd=path))
    return ResolvedSource(source, str(path), commit, version, when, None, dirty=dirty, tree_hash=digest)


def _hash_tree(root: Path) -> str:
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes() if not p.is_symlink() else os.readlink(p).encode())
    return h.hexdigest()


def checkout(resolved: ResolvedSource, dest: Path) -> Path:
    """A fresh work tree of ``resolved`` at ``dest`` (a git repository, detached at the commit)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.parent.mkdir(parents=True, exist_ok=True)
    context = f"source '{resolved.source.name}'"
    if resolved.repo is None:
        shutil.copytree(resolved.url, dest, symlinks=True, ignore=shutil.ignore_patterns(".git"))
        git("init", "-q", str(dest), context=context)
        git("add", "-A", cwd=dest, context=context)
        git("commit", "-q", "--allow-empty", "-m", "local tree", cwd=dest, context=context)
        return dest
    git("clone", "-q", "--shared", "--no-checkout", str(resolved.repo), str(dest), context=context)
    git("checkout", "-q", "--detach", resolved.commit, cwd=dest, context=context)
    return dest


class Resolver:
    """Resolves each source once per run, for every component built from it: the result, or the
    error, is kept and given again (a failing fetch is tried once, not once per component).

    ``locked`` maps a source name to the commit the previous release lock records for it (a tag
    that moved since then is an error). Thread-safe: components are decided concurrently."""

    def __init__(self, *, refresh: bool = False, locked: Mapping[str, str] | None = None) -> None:
        self.refresh = refresh
        self.locked = dict(locked or {})
        self._once: Once[ResolvedSource] = Once()

    def resolve(self, source: Source) -> ResolvedSource:
        locked = self.locked.get(source.name)
        key = f"{source.location}\0{source.ref}\0{source.commit}\0{locked}"
        return self._once.get(key, lambda: resolve(source, refresh=self.refresh, locked_commit=locked))
