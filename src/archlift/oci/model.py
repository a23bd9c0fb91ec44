"""Descriptors and manifests: the values the distribution API moves around."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from ..refs import Digest, Platform, RefError

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


MAX_SIZE = (1 << 63) - 1


class InvalidManifest(ValueError):
    """A manifest or descriptor that breaks the OCI image spec; the message says where and why."""


def _text(data: dict[str, Any], key: str, where: str, *, required: bool = False) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        what = "missing" if value is None else f"a {type(value).__name__}, not a string"
        raise InvalidManifest(f"{where}.{key} is {what}")
    return value


def _strings(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidManifest(f"{where} is not an object of strings")
    return dict(value)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    platform: Platform | None = None
    annotations: dict[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str = ""

    @classmethod
    def from_json(cls, data: Any, where: str = "descriptor") -> Descriptor:
        """A descriptor, checked: a string media type, a digest (sha256 or sha512, its hex in
        lower case and of the right length), a non-negative integer size; ``InvalidManifest``
        (naming ``where``) otherwise."""
        if not isinstance(data, dict):
            raise InvalidManifest(f"{where} is not a JSON object")
        media_type = _text(data, "mediaType", where, required=True)
        digest_text = _text(data, "digest", where, required=True)
        try:
            digest = Digest.parse(digest_text)
        except RefError:
            raise InvalidManifest(
                f"{where}.digest {digest_text[:80]!r} is not a digest (sha256:<64 hex> or sha512:<128 hex>)"
            ) from None
        size = data.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= MAX_SIZE:
            raise InvalidManifest(f"{where}.size {str(size)[:40]!r} is not a non-negative integer")
        plat = data.get("platform")
        if plat is not None:
            if not isinstance(plat, dict):
                raise InvalidManifest(f"{where}.platform is not a JSON object")
            for key in ("os", "architecture", "variant", "os.version"):
                _text(plat, key, f"{where}.platform", required=key in ("os", "architecture"))
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            platform=Platform.from_oci(plat) if isinstance(plat, dict) else None,
            annotations=_strings(data.get("annotations"), f"{where}.annotations"),
            artifact_type=_text(data, "artifactType", where),
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
        """A manifest from its bytes, checked (``InvalidManifest``): a JSON object, schema
        version 2, a string media type, and valid descriptors where the spec has them (an
        index's ``manifests``; an image's ``config`` and ``layers``; a ``subject``). The media
        type is the document's when it names one, else ``content_type``."""
        media_type = content_type.split(";", 1)[0].strip()
        try:
            doc = json.loads(raw)
        except (ValueError, RecursionError) as e:
            why = "nested too deeply" if isinstance(e, RecursionError) else "not valid JSON"
            raise InvalidManifest(f"the manifest is {why}") from None
        if not isinstance(doc, dict):
            raise InvalidManifest("the manifest is not a JSON object")
        if doc.get("schemaVersion") != 2 or isinstance(doc.get("schemaVersion"), bool):
            raise InvalidManifest(f"schemaVersion is {str(doc.get('schemaVersion'))[:20]}, not 2")
        if "mediaType" in doc:
            media_type = _text(doc, "mediaType", "the manifest")
        elif not media_type:
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        index = media_type in INDEX_TYPES or (media_type not in IMAGE_TYPES and "manifests" in doc)
        if index:
            _descriptor_list(doc, "manifests", required=False)
        else:
            if media_type in IMAGE_TYPES or "config" in doc:
                Descriptor.from_json(doc.get("config"), "config")
            _descriptor_list(doc, "layers", required=False)
        if "subject" in doc:
            Descriptor.from_json(doc["subject"], "subject")
        _strings(doc.get("annotations"), "annotations")
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
            return _descriptor_list(doc, "manifests")
        out = [Descriptor.from_json(doc["config"], "config")] if isinstance(doc.get("config"), dict) else []
        out += _descriptor_list(doc, "layers")
        return out

    @property
    def subject(self) -> Descriptor | None:
        sub = self.json().get("subject")
        return Descriptor.from_json(sub, "subject") if isinstance(sub, dict) else None

    @property
    def config(self) -> Descriptor | None:
        cfg = self.json().get("config")
        return Descriptor.from_json(cfg, "config") if isinstance(cfg, dict) and not self.is_index else None

    def descriptor(self) -> Descriptor:
        """This manifest as a descriptor (no platform)."""
        return Descriptor(self.media_type, self.digest, len(self.raw))


def _descriptor_list(doc: dict[str, Any], key: str, *, required: bool = False) -> list[Descriptor]:
    value = doc.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list):
        raise InvalidManifest(f"{key} is not a list")
    return [Descriptor.from_json(d, f"{key}[{i}]") for i, d in enumerate(value)]
