"""The OCI distribution client used by build, publish, mirror, verify and audit.

``RegistryClient`` (over ``archlift.oci.http``, urllib3; thread-safe, one
instance for every host) with ``Descriptor`` and ``Manifest`` values, validated
as they are read (``archlift.oci.model``), and ``archlift.oci.walk`` for manifest
trees. Credentials, per registry host, come from ``ARCHLIFT_AUTH_<HOST>``,
``ARCHLIFT_REGISTRY_HOST`` with ``ARCHLIFT_REGISTRY_USERNAME``/``_PASSWORD``,
or the docker config (``archlift.oci.auth``), and go only to their own origin.

Transport rules (HTTPS first, plain HTTP for loopback or ``insecure``, CA files
added to the system's roots, proxies, deadlines, bounded reads, retries) are
described in ``archlift.oci.client`` and ``archlift.oci.http``.
"""

from __future__ import annotations

from .client import BlobReader, DigestMismatch, InvalidAnswer, RegistryClient, RequestFailed, cosign_tag_of, is_loopback
from .model import (
    ACCEPT_MANIFESTS,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    InvalidManifest,
    Manifest,
)

__all__ = [
    "ACCEPT_MANIFESTS",
    "DOCKER_LIST",
    "DOCKER_MANIFEST",
    "INDEX_TYPES",
    "MANIFEST_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "BlobReader",
    "Descriptor",
    "DigestMismatch",
    "InvalidAnswer",
    "InvalidManifest",
    "Manifest",
    "RegistryClient",
    "RequestFailed",
    "cosign_tag_of",
    "is_loopback",
]
