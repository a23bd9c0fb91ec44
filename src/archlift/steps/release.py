"""Release: build results -> moved tags and the release lock, only when every component succeeded.

If any component failed, no tag of the release moves and no lock is written. With
``by_digest`` (a platform of a split release, or "all") no tag moves either, and the lock
written is partial, for ``archlift merge``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from ..config.model import Config
from ..errors import ArchliftError, exit_status
from ..lock import ComponentRelease, ReleaseLock
from ..oci import RegistryClient
from ..refs import Digest
from ..ui import Reporter
from .build import BuildResult


@dataclass(frozen=True)
class RunResult:
    results: tuple[BuildResult, ...]
    lock: ReleaseLock | None
    tags_moved: int

    @property
    def ok(self) -> bool:
        return all(r.status != "failed" for r in self.results)

    @property
    def errors(self) -> list[tuple[str, ArchliftError]]:
        return [(r.name, r.error) for r in self.results if r.error is not None]

    @property
    def exit_code(self) -> int:
        """0; 2 when a component failed on bad input (nothing of it was pushed); else the first
        failure's own exit status (a source, patch, build or registry error)."""
        return exit_status(e for _, e in self.errors)


def move_tags(
    client: RegistryClient,
    releases: Sequence[ComponentRelease],
    report: Reporter,
    known: dict[Digest, bytes] | None = None,
) -> int:
    """Point every tag at its component's index (bytes from ``known`` when read already), components
    in parallel; returns how many tags moved."""

    def one(rel: ComponentRelease) -> int:
        moved, raw = 0, (known or {}).get(rel.index_digest)
        for ref in rel.tag_refs():
            current = client.head_manifest(ref)
            if current is not None and current.digest == rel.index_digest:
                continue
            if raw is None:
                raw = client.get_manifest(ref.with_digest(rel.index_digest)).raw
            client.put_manifest(ref, raw, rel.media_type)
            report(rel.name, "", f"tagged {ref.tag}")
            moved += 1
        return moved

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(one, releases))


def merge_lock(config: Config, previous: ReleaseLock | None, releases: Sequence[ComponentRelease]) -> ReleaseLock:
    """The new lock: this run's components, plus earlier entries of components still in images.yaml."""
    components = {}
    if previous:
        components = {n: c for n, c in previous.components.items() if n in config.components}
    components.update({r.name: r for r in releases})
    if previous and previous.components == components:
        return previous
    try:
        name = str(config.path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        name = str(config.path)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ReleaseLock(components=components, config=name, created_at=created)


def release(
    results: tuple[BuildResult, ...],
    *,
    config: Config,
    client: RegistryClient,
    previous: ReleaseLock | None,
    lock_path: Path,
    by_digest: str | None = None,
    report: Reporter,
) -> RunResult:
    """Move the tags and write the lock, only when every component succeeded."""
    if not all(r.release for r in results):
        return RunResult(results, None, 0)
    releases = [r.release for r in results if r.release]
    if by_digest:
        lock = dataclasses.replace(merge_lock(config, None, releases), partial_platform=by_digest)
        lock.write(lock_path)
        return RunResult(results, lock, 0)
    known = {r.release.index_digest: r.index for r in results if r.release and r.index}
    moved = move_tags(client, releases, report, known)
    lock = merge_lock(config, previous, releases)
    lock.write(lock_path)
    return RunResult(results, lock, moved)
