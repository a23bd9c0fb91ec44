"""Merge: per-platform partial locks -> one index per component -> tags -> the release lock.

Each native runner builds its platform and pushes by digest (``archlift build
--platform P``). ``merge`` combines the single-platform indexes of every
component into one index (platform manifests and their attestation manifests,
digests untouched, as ``docker buildx imagetools create`` does), pushes each
merged index by digest, checks it, and only when every component merged
moves the tags and writes the full ``dist/release.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime

from ..errors import BuildError, ConfigError
from ..lock import ComponentRelease, ReleaseLock
from ..oci import OCI_INDEX, Manifest, RegistryClient
from ..refs import Digest
from ..ui import Reporter, quiet
from .release import move_tags


def merge_locks(partials: Sequence[ReleaseLock], client: RegistryClient, report: Reporter = quiet) -> ReleaseLock:
    if not partials:
        raise ConfigError("merge needs at least one partial lock")
    for lock in partials:
        if not lock.partial_platform:
            raise ConfigError("merge takes partial locks (from 'archlift build --platform P'), not a full release")
    names = sorted({n for lock in partials for n in lock.components})
    merged = {
        name: _merge_one(name, [lk.components[name] for lk in partials if name in lk.components], client)
        for name in names
    }
    for rel in merged.values():
        report(rel.name, "", f"merged {', '.join(sorted(rel.platforms))} into {rel.index_digest.short()}")
    move_tags(client, list(merged.values()), report)
    created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return ReleaseLock(components=merged, config=partials[0].config, created_at=created)


def _merge_one(name: str, parts: list[ComponentRelease], client: RegistryClient) -> ComponentRelease:
    first = parts[0]
    if first.kind == "mirrored":
        if any(p.index_digest != first.index_digest for p in parts):
            raise BuildError(f"{name}: the partial locks copied different digests of {first.source_image}")
        return first
    _check_consistent(name, parts)
    platforms: dict[str, Digest] = {}
    for part in parts:
        clash = set(platforms) & set(part.platforms)
        if clash:
            raise BuildError(f"{name}: {', '.join(sorted(clash))} built by more than one partial lock")
        platforms.update(part.platforms)
    raw = merged_index(parts, client)
    digest = client.put_manifest(first.ref.with_digest(Digest.of(raw)), raw, OCI_INDEX)
    merged = Manifest.of(raw, OCI_INDEX)
    listed = {str(d.platform): d.digest for d in merged.descriptors() if d.platform and not d.is_attestation}
    if listed != platforms:
        raise BuildError(f"{name}: the merged index lists {sorted(listed)}, the partial locks {sorted(platforms)}")
    attestations: dict[str, Digest] = {}
    for part in parts:
        attestations.update(part.attestations)
    binaries = {p: b for part in parts for p, b in part.binaries.items()}  # each runner checked its platform
    inputs = hashlib.sha256("".join(sorted(p.inputs_hash for p in parts)).encode()).hexdigest()
    return ComponentRelease(
        name=name,
        kind="built",
        repository=first.repository,
        index_digest=digest,
        platforms=dict(sorted(platforms.items())),
        tags=first.tags,
        upstream=first.upstream,
        patches=first.patches,
        inputs_hash=inputs,
        built_at=max(p.built_at for p in parts),
        media_type=OCI_INDEX,
        attestations=attestations,
        binaries=dict(sorted(binaries.items())),
        replaces=first.replaces,
    )


def _check_consistent(name: str, parts: list[ComponentRelease]) -> None:
    first = parts[0]
    for part in parts[1:]:
        for what, a, b in (
            ("repository", first.repository, part.repository),
            ("upstream commit", first.upstream and first.upstream.commit, part.upstream and part.upstream.commit),
            ("patches", first.patches, part.patches),
            ("tags", first.tags, part.tags),
            ("replaced names", first.replaces, part.replaces),
        ):
            if a != b:
                raise BuildError(
                    f"{name}: the partial locks disagree on the {what} ({a} vs {b})",
                    hint="build every platform from the same commit of images.yaml and patches",
                )


def merged_index(parts: Sequence[ComponentRelease], client: RegistryClient) -> bytes:
    """One OCI index over the entries of every partial index, in the partial locks' order, each entry
    as it was (platform manifests, and the attestation manifests with the annotations that tie them
    to their subject): what ``docker buildx imagetools create`` makes of them, without a push."""
    entries: list[dict[str, object]] = []
    seen: set[str] = set()
    for part in parts:
        for entry in client.get_manifest(part.ref).json().get("manifests") or ():
            if isinstance(entry, dict) and str(entry.get("digest")) not in seen:
                seen.add(str(entry.get("digest")))
                entries.append(entry)
    doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    return json.dumps(doc, indent=2).encode()
