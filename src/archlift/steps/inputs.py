"""What a component's image is made of, hashed; and where the result is recorded.

The inputs hash covers the upstream commit (or a local tree's files), the
bytes of every patch, the build definition, the platforms, the attestation
settings and the digest of every external image the Dockerfile pulls. A
*build record* is a tiny OCI artifact tagged ``inputs-<hash>`` in the cache
repository (or ``archlift-inputs-<hash>`` in the image repository when the
cache is off); its annotations name the image index it produced. When the
registry holds a record and the image it names, the component is not rebuilt.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config.model import Component, Config
from ..lock import write_atomic
from ..oci import OCI_MANIFEST, RegistryClient
from ..refs import Digest, ImageRef
from .patches import file_sha256
from .sources import ResolvedSource, cache_root

HASH_VERSION = "archlift-inputs/2"  # 2: SOURCE_DATE_EPOCH and rewritten layer timestamps
RECORD_TYPE = "application/vnd.archlift.steps.build-record.v1+json"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY = {"mediaType": EMPTY_TYPE, "digest": str(Digest.of(EMPTY_BLOB)), "size": 2}
ANNOTATION = "dev.archlift.record"


@dataclass(frozen=True)
class Inputs:
    hash: str
    bases: dict[str, str]  # external image -> digest it resolved to
    args: dict[str, str]  # build args after template expansion

    @property
    def short(self) -> str:
        return self.hash[:12]


@dataclass(frozen=True)
class BuildRecord:
    """What one build produced, as stored in the registry and the local cache."""

    inputs_hash: str
    index_digest: Digest
    media_type: str
    platforms: dict[str, Digest]
    attestations: dict[str, Digest]
    built_at: str

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs_hash": self.inputs_hash,
            "index_digest": str(self.index_digest),
            "media_type": self.media_type,
            "platforms": {k: str(v) for k, v in sorted(self.platforms.items())},
            "attestations": {k: str(v) for k, v in sorted(self.attestations.items())},
            "built_at": self.built_at,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BuildRecord:
        return cls(
            inputs_hash=d["inputs_hash"],
            index_digest=Digest.parse(d["index_digest"]),
            media_type=d["media_type"],
            platforms={k: Digest.parse(v) for k, v in d["platforms"].items()},
            attestations={k: Digest.parse(v) for k, v in d.get("attestations", {}).items()},
            built_at=d["built_at"],
        )


def tag_values(comp: Component, resolved: ResolvedSource, patch_hash: str, inputs_short: str) -> dict[str, str]:
    dirty = resolved.dirty or bool(comp.source and comp.source.patches)
    return {
        "version": resolved.version,
        "commit": resolved.commit,
        "short_commit": resolved.short_commit,
        "state": "dirty" if dirty else "clean",
        "component": comp.name,
        "inputs": inputs_short,
        "patches": patch_hash[:12],
    }


def expand(template: str, values: dict[str, str]) -> str:
    """Fill ``{field}`` for the known tag fields only; other braces stay as they are."""
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def compute(
    comp: Component,
    config: Config,
    resolved: ResolvedSource,
    patch_hash: str,
    bases: dict[str, str],
    args: dict[str, str],
) -> Inputs:
    assert comp.build is not None
    build = comp.build
    local_dockerfile = file_sha256(build.dockerfile_local) if build.dockerfile_local else None
    doc = {
        "version": HASH_VERSION,
        "upstream": resolved.tree_hash or resolved.commit,
        "patches": patch_hash,
        "context": build.context,
        "dockerfile": build.dockerfile if not local_dockerfile else None,
        "dockerfile_local": local_dockerfile,
        "target": build.target,
        "args": dict(sorted(args.items())),
        "contexts": dict(sorted(build.named_contexts.items())),
        "platforms": sorted(str(p) for p in comp.platforms),
        "bases": dict(sorted(bases.items())),
        "provenance": config.provenance,
        "sbom": config.sbom,
        "reproducible": config.reproducible,
        "image": comp.image.name,
    }
    digest = hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
    return Inputs(digest, bases, args)


def record_ref(comp: Component, config: Config, inputs_hash: str) -> ImageRef:
    cache = config.cache.ref_for(comp.image)
    if cache is not None:
        return cache.with_tag(f"inputs-{inputs_hash}")
    return comp.image.with_tag(f"archlift-inputs-{inputs_hash}")


def _local_path(inputs_hash: str) -> Path:
    return cache_root() / "records" / f"{inputs_hash}.json"


def find_record(client: RegistryClient, comp: Component, config: Config, inputs_hash: str) -> BuildRecord | None:
    """The record for ``inputs_hash`` when the registry still serves the image it names."""
    record = None
    local = _local_path(inputs_hash)
    if local.is_file():
        record = BuildRecord.from_json(json.loads(local.read_text()))
    else:
        ref = record_ref(comp, config, inputs_hash)
        if client.head_manifest(ref) is None:
            return None
        annotations = client.get_manifest(ref).json().get("annotations", {})
        if ANNOTATION not in annotations:
            return None
        record = BuildRecord.from_json(json.loads(annotations[ANNOTATION]))
    if client.head_manifest(comp.image.with_digest(record.index_digest)) is None:
        return None
    if not local.is_file():
        write_atomic(local, json.dumps(record.to_json(), sort_keys=True))
    return record


def save_record(client: RegistryClient, comp: Component, config: Config, record: BuildRecord) -> None:
    """Push the record artifact (by tag ``inputs-<hash>``) and keep a local copy."""
    ref = record_ref(comp, config, record.inputs_hash)
    repo = ImageRef(ref.registry, ref.repository)
    if not client.blob_exists(repo, Digest.parse(str(EMPTY["digest"]))):
        client.put_blob(repo, EMPTY_BLOB)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": RECORD_TYPE,
        "config": EMPTY,
        "layers": [EMPTY],
        "annotations": {ANNOTATION: json.dumps(record.to_json(), sort_keys=True)},
    }
    client.put_manifest(ref, json.dumps(manifest, sort_keys=True).encode(), OCI_MANIFEST)
    write_atomic(_local_path(record.inputs_hash), json.dumps(record.to_json(), sort_keys=True))
