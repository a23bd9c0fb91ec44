"""What an upgrade from one release to another changes: images by digest, manifest documents.

Pure: two locks (and optionally two directories of rendered manifests) in, a
:class:`ReleaseDiff` out. Documents are matched by what the API server keys them
by (group, kind, namespace, name) and compared in the canonical form render
writes (keys sorted), so formatting alone never shows up as a change.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..lock import ComponentRelease, ReleaseLock
from ..steps.render import Document, component_version, dump_document, load_documents


@dataclass(frozen=True)
class ImageChange:
    component: str
    change: str  # "added" | "removed" | "changed" | "unchanged"
    old: ComponentRelease | None
    new: ComponentRelease | None

    def to_json(self) -> dict[str, Any]:
        def side(c: ComponentRelease | None) -> dict[str, Any] | None:
            if c is None:
                return None
            return {
                "repository": c.repository,
                "digest": str(c.index_digest),
                "version": component_version(c),
                "platforms": sorted(c.platforms),
                "kind": c.kind,
            }

        return {"component": self.component, "change": self.change, "old": side(self.old), "new": side(self.new)}


@dataclass(frozen=True)
class DocumentChange:
    title: str  # Kind/namespace/name
    change: str  # "added" | "removed" | "changed"
    diff: str  # unified diff of the canonical YAML
    added: int  # lines
    removed: int

    def to_json(self) -> dict[str, Any]:
        return {
            "document": self.title,
            "change": self.change,
            "added_lines": self.added,
            "removed_lines": self.removed,
            "diff": self.diff,
        }


@dataclass(frozen=True)
class ReleaseDiff:
    images: tuple[ImageChange, ...]
    documents: tuple[DocumentChange, ...] | None  # None: no manifests compared
    unchanged_documents: int = 0

    @property
    def changed(self) -> bool:
        return any(i.change != "unchanged" for i in self.images) or bool(self.documents)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "changed": self.changed,
            "images": [i.to_json() for i in self.images if i.change != "unchanged"],
            "unchanged_images": sorted(i.component for i in self.images if i.change == "unchanged"),
        }
        if self.documents is not None:
            out["documents"] = [d.to_json() for d in self.documents]
            out["unchanged_documents"] = self.unchanged_documents
        return out


def diff_locks(a: ReleaseLock, b: ReleaseLock) -> list[ImageChange]:
    out = []
    for name in sorted(set(a.components) | set(b.components)):
        old, new = a.components.get(name), b.components.get(name)
        if old is None:
            change = "added"
        elif new is None:
            change = "removed"
        elif old.index_digest != new.index_digest or old.repository != new.repository:
            change = "changed"
        else:
            change = "unchanged"
        out.append(ImageChange(name, change, old, new))
    return out


def load_manifests(directory: Path) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    """identity -> (title, canonical YAML) for every document in the YAML files under ``directory``."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a directory of rendered manifests")
    out: dict[tuple[str, str, str, str], tuple[str, str]] = {}
    for path in sorted(p for p in directory.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()):
        rel = path.relative_to(directory).as_posix()
        for index, body in load_documents(path.read_text(), str(path)):
            if not isinstance(body, dict):
                raise ConfigError(f"{path}: document {index + 1} is not a mapping")
            doc = Document(rel, index, body)
            if doc.identity in out:
                raise ConfigError(f"{directory}: {doc.where} appears twice")
            out[doc.identity] = (doc.title, dump_document(body).decode())
    return out


def diff_manifests(a: Path, b: Path) -> tuple[list[DocumentChange], int]:
    """Changed, added and removed documents (in a stable order), and how many are unchanged."""
    old, new = load_manifests(a), load_manifests(b)
    changes = []
    unchanged = 0
    for key in sorted(set(old) | set(new)):
        title = (new.get(key) or old[key])[0]
        before = old[key][1] if key in old else ""
        after = new[key][1] if key in new else ""
        if before == after:
            unchanged += 1
            continue
        lines = list(
            difflib.unified_diff(
                before.splitlines(keepends=True),
                after.splitlines(keepends=True),
                fromfile=f"a/{title}" if key in old else "/dev/null",
                tofile=f"b/{title}" if key in new else "/dev/null",
            )
        )
        added = sum(1 for line in lines if line.startswith("+") and not line.startswith("+++"))
        removed = sum(1 for line in lines if line.startswith("-") and not line.startswith("---"))
        change = "added" if key not in old else "removed" if key not in new else "changed"
        changes.append(DocumentChange(title, change, "".join(lines), added, removed))
    order = {"changed": 0, "added": 1, "removed": 2}
    changes.sort(key=lambda c: (order[c.change], c.title))
    return changes, unchanged


def diff_releases(a: ReleaseLock, b: ReleaseLock, manifests: tuple[Path, Path] | None = None) -> ReleaseDiff:
    images = tuple(diff_locks(a, b))
    if manifests is None:
        return ReleaseDiff(images, None)
    docs, unchanged = diff_manifests(*manifests)
    return ReleaseDiff(images, tuple(docs), unchanged)


# --- text ------------------------------------------------------------------------------------
_MARK = {"added": "+", "removed": "-", "changed": "~"}


def _counts(items: Mapping[str, int], unchanged: int) -> str:
    parts = [f"{items.get(k, 0)} {k}" for k in ("changed", "added", "removed")]
    return ", ".join([*parts, f"{unchanged} unchanged"])


def format_text(d: ReleaseDiff, *, stat: bool = False) -> str:
    lines = []
    tally: dict[str, int] = {}
    for i in d.images:
        tally[i.change] = tally.get(i.change, 0) + 1
    lines.append(f"images: {_counts(tally, tally.get('unchanged', 0))}")
    width = max((len(i.component) for i in d.images), default=0)
    for i in d.images:
        if i.change == "unchanged":
            continue
        mark = _MARK[i.change]
        if i.old and i.new:
            v_old, v_new = component_version(i.old), component_version(i.new)
            version = f"{v_old} -> {v_new}" if v_old != v_new else f"{v_new} (same version)"
            lines.append(f"  {mark} {i.component:<{width}}  {version}")
            same = i.old.repository == i.new.repository
            repo = i.new.repository if same else f"{i.old.repository} -> {i.new.repository}"
            lines.append(f"      {repo}")
            lines.append(f"      {i.old.index_digest} -> {i.new.index_digest}")
        else:
            c = i.new or i.old
            assert c is not None
            lines.append(f"  {mark} {i.component:<{width}}  {component_version(c)}  {c.ref}")
    if d.documents is not None:
        doc_tally: dict[str, int] = {}
        for doc in d.documents:
            doc_tally[doc.change] = doc_tally.get(doc.change, 0) + 1
        lines.append(f"manifests: {_counts(doc_tally, d.unchanged_documents)}")
        for doc in d.documents:
            lines.append(f"  {_MARK[doc.change]} {doc.title} (+{doc.added} -{doc.removed})")
        if not stat:
            for doc in d.documents:
                lines.append("")
                lines.append(doc.diff.rstrip("\n"))
    return "\n".join(lines) + "\n"
