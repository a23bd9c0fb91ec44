"""Patched source trees: the work trees a build run uses (``WorkTrees``), and the trees kept
in the cache for steps that read upstream files (render takes an upstream's own install
manifests from its pinned tree: ``source_tree(config, name)`` resolves the source, checks it
out and applies its patch queue once per (commit, queue); later calls reuse the tree).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..config.model import Config, Source
from ..errors import ConfigError
from ..memo import Once
from .patches import PatchedTree, apply_queue, queue_hash
from .sources import Resolver, cache_root, checkout, resolve

_COMPLETE = ".archlift-tree-complete"


def _find(config: Config, name: str) -> Source:
    if name in config.sources:
        return config.sources[name]
    comp = config.components.get(name)
    if comp and comp.source:
        return comp.source
    raise ConfigError(f"{config.path}: no source named '{name}'", hint="name one of 'sources:' or a built component")


def source_tree(config: Config, name: str, *, locked_commit: str | None = None) -> Path:
    """The pinned, patched tree of source ``name`` (a shared source or a component's own)."""
    source = _find(config, name)
    resolved = resolve(source, locked_commit=locked_commit)
    if resolved.repo is None:  # a local directory is used as it is
        return Path(resolved.url)
    final = cache_root() / "trees" / f"{source.name}-{resolved.commit[:12]}-{queue_hash(source.patches)[:12]}"
    if (final / _COMPLETE).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".tree-", dir=final.parent))
    try:
        tree = checkout(resolved, work / "tree")
        apply_queue(tree, source.patches, resolved, name)
        (tree / _COMPLETE).write_text(resolved.commit + "\n")
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tree, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


class WorkTrees:
    """The patched work trees of one run (under the cache's ``worktrees/``, removed by ``close``):
    one per source and patch queue, checked out and patched once, shared by the components built
    from it. Thread-safe."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        parent = cache_root() / "worktrees"
        parent.mkdir(parents=True, exist_ok=True)
        self.root = Path(tempfile.mkdtemp(prefix="run-", dir=parent))
        self._once: Once[PatchedTree] = Once()

    def tree(self, source: Source, who: str) -> PatchedTree:
        """The tree of ``source`` with its queue applied (``who``: the component, for messages)."""
        resolved = self.resolver.resolve(source)
        key = f"{source.name}-{queue_hash(source.patches)[:12]}"

        def make() -> PatchedTree:
            return apply_queue(checkout(resolved, self.root / key), source.patches, resolved, who)

        return self._once.get(key, make)

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
