"""The OCI distribution client used by build, publish, mirror, verify and audit.

``RegistryClient`` (http.client, thread-safe, one instance for every host) with
``Descriptor`` and ``Manifest`` values. Credentials, per registry host, first
match wins:

1. ``ARCHLIFT_AUTH_<HOST>=user:password``: ``<HOST>`` is the host and port,
   upper-cased, every other character than letters and digits replaced by
   ``_`` (``registry.local:5000`` -> ``ARCHLIFT_AUTH_REGISTRY_LOCAL_5000``);
2. ``ARCHLIFT_REGISTRY_USERNAME`` / ``ARCHLIFT_REGISTRY_PASSWORD`` (any host);
3. the docker config, ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``
   (or ``RegistryClient(docker_config=...)``): ``credHelpers``, ``auths``
   (``auth``, ``identitytoken``), ``credsStore``.

Transport rules (HTTPS first, plain HTTP for loopback or ``insecure``, CA files,
retries) are described in ``archlift.oci.client``.
"""

from __future__ import annotations

from .client import DigestMismatch, RegistryClient, RequestFailed, cosign_tag_of, is_loopback
from .model import (
    ACCEPT_MANIFESTS,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
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
    "Descriptor",
    "DigestMismatch",
    "Manifest",
    "RegistryClient",
    "RequestFailed",
    "cosign_tag_of",
    "is_loopback",
]
