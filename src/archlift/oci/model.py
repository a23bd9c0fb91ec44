"""Descriptors and manifests: the values the distribution API moves around."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..refs import Digest, Platform

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
IMAGE_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
MANIFEST_TYPES = INDEX_TYPES | IMAGE_TYPES
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# BuildKit stores provenance/SBOM as an image manifest inside the index.
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"
ATTESTATION_VALUE = "attestation-manifest"
ATTESTATION_FOR = "vnd.docker.reference.digest"


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Descriptor:
        plat = data.get("platform")
        return cls(
            media_type=str(data.get("mediaType", "")),
            digest=Digest.parse(str(data["digest"])),
            size=int(data["size"]),
            platform=Platform.from_oci(plat) if isinstance(plat, dict) else None,
            annotations={str(k): str(v) for k, v in (data.get("annotations") or {}).items()},
            artifact_type=str(data.get("artifactType", "")),
        )

    @property
    def is_manifest(self) -> bool:
        return self.media_type in MANIFEST_TYPES

    @property
    def is_attestation(self) -> bool:
        """A BuildKit attestation manifest (platform unknown/unknown)."""
        if self.annotations.get(ATTESTATION_ANNOTATION) == ATTESTATION_VALUE:
            return True
        return self.platform is not None and (self.platform.os, self.platform.architecture) == ("unknown", "unknown")


@dataclass(frozen=True)
class Manifest:
    raw: bytes
    media_type: str
    digest: Digest

    @classmethod
    def of(cls, raw: bytes, content_type: str = "") -> Manifest:
        """A manifest from its bytes; the media type from the document when it names one."""
        media_type = content_type.split(";", 1)[0].strip()
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if isinstance(doc, dict) and isinstance(doc.get("mediaType"), str):
            media_type = doc["mediaType"]
        elif isinstance(doc, dict) and not media_type:
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        return cls(raw, media_type, Digest.of(raw))

    def json(self) -> dict[str, Any]:
        doc = json.loads(self.raw)
        if not isinstance(doc, dict):
            raise ValueError("a manifest is a JSON object")
        return doc

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES or (self.media_type not in IMAGE_TYPES and "manifests" in self.json())

    def descriptors(self) -> list[Descriptor]:
        """The children: manifests of an index, or config then layers of an image."""
        doc = self.json()
        if self.is_index:
            return [Descriptor.from_json(d) for d in doc.get("manifests") or ()]
        out = [Descriptor.from_json(doc["config"])] if isinstance(doc.get("config"), dict) else []
        out += [Descriptor.from_json(d) for d in doc.get("layers") or ()]
        return out

    @property
    def subject(self) -> Descriptor | None:
        sub = self.json().get("subject")
        return Descriptor.from_json(sub) if isinstance(sub, dict) else None

    @property
    def config(self) -> Descriptor | None:
        cfg = self.json().get("config")
        return Descriptor.from_json(cfg) if isinstance(cfg, dict) and not self.is_index else None

    def descriptor(self) -> Descriptor:
        """This manifest as a descriptor (no platform)."""
        return Descriptor(self.media_type, self.digest, len(self.raw))
