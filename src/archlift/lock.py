"""The release lock, ``dist/release.json``: what a release is, by digest.

Written by the build (and ``merge``); read by render, publish, mirror, verify.
Deterministic JSON: sorted keys, two-space indent, trailing newline.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .refs import Digest, ImageRef, Platform, RefError, is_tag

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class PatchRecord:
    file: str  # path relative to the images.yaml directory
    sha256: str


@dataclass(frozen=True)
class Upstream:
    url: str
    ref: str
    commit: str
    version: str


@dataclass(frozen=True)
class BinariesRecord:
    """What the binaries check found in one platform's image: how many ELF files, of which machines."""

    elf_files: int
    machines: dict[str, int]  # "aarch64" -> count


@dataclass(frozen=True)
class ComponentRelease:
    name: str
    kind: str  # "built" | "mirrored"
    repository: str  # registry/path, no tag
    index_digest: Digest
    platforms: dict[str, Digest]  # "linux/arm64" -> platform manifest digest
    tags: tuple[str, ...] = ()
    upstream: Upstream | None = None  # built components
    source_image: str | None = None  # mirrored components: the reference copied
    patches: tuple[PatchRecord, ...] = ()
    inputs_hash: str = ""
    built_at: str = ""
    media_type: str = "application/vnd.oci.image.index.v1+json"
    attestations: dict[str, Digest] = field(default_factory=dict)  # manifest digest -> attestation manifest
    binaries: dict[str, BinariesRecord] = field(default_factory=dict)  # platform -> what the check found
    # images.yaml's replaces: that are image references, as docker names them (placeholders left
    # out): names an install applied as is may pull the image by ("upstream" mirror layout)
    replaces: tuple[str, ...] = ()

    @property
    def ref(self) -> ImageRef:
        """The image pinned by digest."""
        return ImageRef.parse(self.repository).with_digest(self.index_digest)

    def tag_refs(self) -> list[ImageRef]:
        base = ImageRef.parse(self.repository)
        return [base.with_tag(t) for t in self.tags]


@dataclass(frozen=True)
class ReleaseLock:
    components: dict[str, ComponentRelease]
    config: str = "images.yaml"
    created_at: str = ""
    partial_platform: str | None = None  # set on a per-platform partial lock (archlift build --platform P --by-digest)
    schema_version: int = SCHEMA_VERSION

    def component(self, name: str) -> ComponentRelease:
        try:
            return self.components[name]
        except KeyError:
            raise ConfigError(f"the release lock has no component '{name}'") from None

    def images(self) -> list[ImageRef]:
        return [c.ref for c in self.components.values()]

    def relocated(self, where: Callable[[str], ImageRef]) -> ReleaseLock:
        """The same release with every repository moved by ``where`` (a mirror target's mapping);
        digests stay as they are, which is what a mirror preserves."""
        moved = {n: dataclasses.replace(c, repository=where(c.repository).name) for n, c in self.components.items()}
        return dataclasses.replace(self, components=moved)

    # --- serialisation -------------------------------------------------
    def to_json(self) -> str:
        return json.dumps(_dump_lock(self), indent=2, sort_keys=True) + "\n"

    def write(self, path: Path) -> None:
        write_atomic(path, self.to_json())

    @classmethod
    def read(cls, path: Path) -> ReleaseLock:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{path}: no release lock here", hint="run 'archlift build' (nox -s build-images) first"
            ) from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
        try:
            return _load_lock(data)
        except (KeyError, TypeError, ValueError, RefError) as e:
            raise ConfigError(f"{path}: not a valid archlift release lock: {e}") from None


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")  # (not tempfile: a costly import for this)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _dump_component(c: ComponentRelease) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": c.name,
        "kind": c.kind,
        "repository": c.repository,
        "index_digest": str(c.index_digest),
        "media_type": c.media_type,
        "platforms": {p: str(d) for p, d in sorted(c.platforms.items())},
        "tags": list(c.tags),
        "inputs_hash": c.inputs_hash,
        "built_at": c.built_at,
        "patches": [{"file": p.file, "sha256": p.sha256} for p in c.patches],
        "attestations": {k: str(v) for k, v in sorted(c.attestations.items())},
    }
    if c.upstream:
        out["upstream"] = {
            "url": c.upstream.url,
            "ref": c.upstream.ref,
            "commit": c.upstream.commit,
            "version": c.upstream.version,
        }
    if c.source_image:
        out["source_image"] = c.source_image
    if c.binaries:
        out["binaries"] = {
            p: {"elf_files": b.elf_files, "machines": dict(sorted(b.machines.items()))}
            for p, b in sorted(c.binaries.items())
        }
    if c.replaces:
        out["replaces"] = list(c.replaces)
    return out


def _dump_lock(lock: ReleaseLock) -> dict[str, Any]:
    out: dict[str, Any] = {
        "schema_version": lock.schema_version,
        "config": lock.config,
        "created_at": lock.created_at,
        "components": {n: _dump_component(c) for n, c in sorted(lock.components.items())},
    }
    if lock.partial_platform:
        out["partial_platform"] = lock.partial_platform
    return out


def _load_component(d: dict[str, Any]) -> ComponentRelease:
    up = d.get("upstream")
    for p in d["platforms"]:
        Platform.parse(p)
    ImageRef.parse(d["repository"])
    tags = d.get("tags", [])
    if not isinstance(tags, list):
        raise ValueError(f"component {d.get('name')!r}: tags is not a list")
    for tag in tags:
        if not isinstance(tag, str) or not is_tag(tag):
            raise ValueError(
                f"component {d.get('name')!r}: tag {str(tag)[:80]!r} is not a valid tag "
                "(ASCII letters, digits, '_', '.', '-', not starting with '.' or '-'; at most 128)"
            )
    replaces = d.get("replaces", [])
    if not isinstance(replaces, list) or not all(isinstance(n, str) for n in replaces):
        raise ValueError(f"component {d['name']!r}: 'replaces' is not a list of image names")
    for name in replaces:
        ImageRef.parse(name)
    return ComponentRelease(
        name=d["name"],
        kind=d["kind"],
        repository=d["repository"],
        index_digest=Digest.parse(d["index_digest"]),
        media_type=d.get("media_type", "application/vnd.oci.image.index.v1+json"),
        platforms={p: Digest.parse(v) for p, v in d["platforms"].items()},
        tags=tuple(tags),
        upstream=Upstream(up["url"], up["ref"], up["commit"], up["version"]) if up else None,
        source_image=d.get("source_image"),
        patches=tuple(PatchRecord(p["file"], p["sha256"]) for p in d.get("patches", ())),
        inputs_hash=d.get("inputs_hash", ""),
        built_at=d.get("built_at", ""),
        attestations={k: Digest.parse(v) for k, v in d.get("attestations", {}).items()},
        binaries={  # absent from locks written before the binaries check
            p: BinariesRecord(int(b["elf_files"]), {str(m): int(n) for m, n in b["machines"].items()})
            for p, b in d.get("binaries", {}).items()
        },
        replaces=tuple(replaces),
    )


def _load_lock(data: dict[str, Any]) -> ReleaseLock:
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema_version {version!r} is not supported (this archlift reads {SCHEMA_VERSION})")
    return ReleaseLock(
        components={n: _load_component(c) for n, c in data["components"].items()},
        config=data.get("config", "images.yaml"),
        created_at=data.get("created_at", ""),
        partial_platform=data.get("partial_platform"),
    )
