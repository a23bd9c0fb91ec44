"""Image references, digests and platforms: parsed once, into values.

Follows the grammar of distribution/reference (docker's normalisation:
no domain means docker.io, a one-part path on docker.io gets ``library/``).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"  # docker reads it as docker.io
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
# ASCII only, matched whole (``fullmatch``: ``$`` alone would let a trailing newline through)
_PATH_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_DOMAIN_RE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)(?:\.(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?))*"
    r"(?::[0-9]+)?|\[[0-9a-fA-F:]+\](?::[0-9]+)?"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # docker's tag grammar (no Unicode \w)
_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")


class RefError(ValueError):
    """A string that is not a valid reference; the message says why."""


@dataclass(frozen=True, order=True)
class Digest:
    value: str  # "sha256:<hex>"

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not _DIGEST_RE.fullmatch(text):
            raise RefError(f"'{text}' is not a digest (expected sha256: and 64 lowercase hex digits)")
        return cls(text)

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @property
    def algorithm(self) -> str:
        return self.value.split(":", 1)[0]

    @property
    def hex(self) -> str:
        return self.value.split(":", 1)[1]

    def short(self, n: int = 12) -> str:
        return self.hex[:n]

    def __str__(self) -> str:
        return self.value


def _split_domain(name: str) -> tuple[str, str]:
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        return first, rest
    return DEFAULT_DOMAIN, name


@dataclass(frozen=True)
class ImageRef:
    """``registry/repository[:tag][@digest]``, normalised."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> ImageRef:
        if not text or text != text.strip():
            raise RefError(f"'{text}' is not an image reference (empty or surrounded by spaces)")
        rest, _, digest_text = text.partition("@")
        digest = Digest.parse(digest_text) if digest_text else None
        name, tag = rest, None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            name, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise RefError(
                    f"'{text}': tag '{tag}' is not valid (ASCII letters, digits, '_', '.', '-', not starting "
                    "with '.' or '-'; at most 128)"
                )
        registry, repository = _split_domain(name)
        if not _DOMAIN_RE.fullmatch(registry):
            raise RefError(f"'{text}': '{registry}' is not a registry host")
        if registry == DEFAULT_DOMAIN and "/" not in repository:
            repository = "library/" + repository
        if not _PATH_RE.fullmatch(repository):
            raise RefError(
                f"'{text}': repository '{repository}' is not valid "
                "(lowercase letters, digits and separators '.', '_', '__', '-', '/')"
            )
        return cls(registry, repository, tag, digest)

    @property
    def name(self) -> str:
        """registry/repository, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar(self) -> str:
        """docker's short form (reference.FamiliarString): ``docker.io/`` and an official
        image's ``library/`` dropped, tag and digest kept: ``alpine:3.19``, ``gcr.io/x/y:1``."""
        text = self.name
        if self.registry == DEFAULT_DOMAIN:
            official = self.repository.startswith("library/") and self.repository.count("/") == 1
            text = self.repository.removeprefix("library/") if official else self.repository
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    def with_digest(self, digest: Digest) -> ImageRef:
        return ImageRef(self.registry, self.repository, None, digest)

    def with_tag(self, tag: str) -> ImageRef:
        return ImageRef(self.registry, self.repository, tag, None)

    def in_registry(self, registry: str, prefix: str = "") -> ImageRef:
        """The same repository path under another registry (and path prefix)."""
        repo = f"{prefix.strip('/')}/{self.repository}" if prefix.strip("/") else self.repository
        return ImageRef(registry, repo, self.tag, self.digest)

    @property
    def reference(self) -> str:
        """What goes after /manifests/ in the distribution API."""
        if self.digest:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def context_name(text: str) -> str:
    """The name BuildKit looks a named build context up by, for a ``FROM`` name or a context key.

    The Dockerfile frontend parses the name as docker does (no registry means ``docker.io``,
    an official image gets ``library/``, no tag means ``:latest``), writes it back in the
    familiar form and drops a final ``:latest``: ``gcr.io/distroless/static:latest``,
    ``docker.io/library/alpine`` and ``alpine:latest`` are looked up as
    ``gcr.io/distroless/static``, ``alpine`` and ``alpine``. Raises :class:`RefError` for a
    name docker cannot parse (BuildKit cannot look it up either)."""
    return normalized(text).familiar.removesuffix(":latest")


def normalized(text: str) -> ImageRef:
    """``text`` as docker names it (distribution/reference ``ParseNormalizedNamed``): no registry
    means ``docker.io``, ``index.docker.io`` is ``docker.io``, an official image gets ``library/``:
    ``busybox``, ``index.docker.io/busybox`` and ``docker.io/library/busybox`` are one name.
    Raises :class:`RefError` for a name docker cannot parse."""
    if text.startswith(LEGACY_DEFAULT_DOMAIN + "/"):
        text = DEFAULT_DOMAIN + text.removeprefix(LEGACY_DEFAULT_DOMAIN)
    return ImageRef.parse(text)


def is_tag(text: str) -> bool:
    return bool(_TAG_RE.fullmatch(text))


KNOWN_PLATFORMS = (
    "linux/amd64",
    "linux/arm64",
    "linux/arm/v7",
    "linux/arm/v6",
    "linux/386",
    "linux/ppc64le",
    "linux/s390x",
    "linux/riscv64",
    "linux/mips64le",
    "windows/amd64",
    "windows/arm64",
    "darwin/amd64",
    "darwin/arm64",
)
_ALIASES = {"linux/arm64/v8": "linux/arm64", "linux/x86_64": "linux/amd64", "linux/aarch64": "linux/arm64"}


@dataclass(frozen=True, order=True)
class Platform:
    os: str
    architecture: str
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        norm = _ALIASES.get(text.strip().lower(), text.strip().lower())
        if norm not in KNOWN_PLATFORMS:
            raise RefError(f"'{text}' is not a known platform (known: {', '.join(KNOWN_PLATFORMS)})")
        parts = norm.split("/")
        return cls(parts[0], parts[1], parts[2] if len(parts) > 2 else "")

    @classmethod
    def from_oci(cls, desc_platform: dict[str, str]) -> Platform:
        variant = desc_platform.get("variant", "")
        if desc_platform.get("architecture") == "arm64" and variant == "v8":
            variant = ""
        return cls(desc_platform.get("os", ""), desc_platform.get("architecture", ""), variant)

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)
