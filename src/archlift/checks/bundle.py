"""A bundle checked offline, with no registry: what ``archlift import`` checks before its first
request to the target, and what ``archlift verify-bundle`` reports before the bundle goes on the
media. One place for both (``check_bundle``); ``archlift.steps.airgap.open_bundle`` calls it once
the archive itself is checked (members, digests, checksum list: ``archlift.oci.archive``).

1. Every tag the lock and ``index.json`` name is a valid tag.
2. Every image tree is complete: every manifest the lock, the artifacts and ``index.json`` name is
   there, and everything below it, at the size its descriptor says; for a differential bundle,
   complete together with what its ``archlift/base.json`` leaves out (which only the target can
   show: ``archlift import`` asks it, ``verify-bundle`` reports the base the bundle needs).
3. Platforms: each index lists the platform manifests (and attestations) the lock records.
4. Signatures, with a public key: each image's cosign signature (its ``sha256-<hex>.sig`` tag)
   verifies against the key (``cosign verify-blob`` over the simple-signing payload and the
   signature annotation) and its payload names the image's digest.
5. The binary-architecture check (``archlift.checks.binaries.check_bundled``): each platform's ELF
   files are what the lock recorded when the build checked them (count and machines); platforms the
   lock records no binaries for (built before the check) are reported unchecked.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RegistryError
from ..lock import ComponentRelease, ReleaseLock
from ..oci.archive import ArchiveReader
from ..oci.layout import Entry
from ..oci.model import Descriptor, Manifest
from ..oci.store import Opener
from ..oci.walk import walk
from ..refs import Digest, ImageRef, Platform, RefError, is_tag
from ..steps.differential import SIMPLE_SIGNING, BaseRecord
from ..steps.mirror import Artifact
from .binaries import check_bundled

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
MAX_PAYLOAD = 1 << 20  # a simple-signing payload is a few hundred bytes
LOCK_NAME = "archlift/release.json"
ARTIFACTS_NAME = "archlift/artifacts.json"

BlobReader = Callable[[Descriptor], Opener]
"""How the binary check reads a blob of the bundle: ``reader(desc)()`` -> (chunks, close)."""


@dataclass(frozen=True)
class ImageCheck:
    name: str
    index: Digest
    in_bundle: bool  # False: the bundle leaves the image's index out (its base holds it)
    platforms: tuple[str, ...]
    signature: str  # "verified" | "not checked" | "in the base" (differential, unchanged image)
    binaries: str  # "ok" | "not recorded in the lock" | "in the base" | "partly in the base"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "index": str(self.index),
            "in_bundle": self.in_bundle,
            "platforms": list(self.platforms),
            "signature": self.signature,
            "binaries": self.binaries,
        }


@dataclass(frozen=True)
class BundleReport:
    path: str
    parts: int  # 0: one file
    size: int
    members: int
    manifests: int  # in the bundle
    blobs: int  # in the bundle, not manifests
    images: tuple[ImageCheck, ...]
    base: BaseRecord | None
    key: str | None

    def to_json(self) -> dict[str, Any]:
        base = None
        if self.base is not None:
            manifests, blobs = self.base.counts()
            base = {
                **self.base.to_json()["base"],
                "left_out": {"manifests": manifests, "blobs": blobs, "bytes": self.base.left_out_bytes},
            }
        return {
            "bundle": self.path,
            "ok": True,
            "parts": self.parts,
            "bytes": self.size,
            "members": self.members,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "differential": self.base is not None,
            "base": base,
            "signatures": "checked" if self.key else "not checked",
            "key": self.key,
            "images": [i.to_json() for i in self.images],
        }

    def summary(self) -> str:
        split = f" ({self.parts} part{'s' if self.parts > 1 else ''})" if self.parts else ""
        lines = [
            f"{self.path}{split}: good: {self.members} member(s) match their digests and the checksum list "
            f"({self.size / 1e6:.1f} MB); {self.manifests} manifest(s) and {self.blobs} blob(s)"
        ]
        for i in self.images:
            where = "in the bundle" if i.in_bundle else "left out (in the base)"
            lines.append(
                f"  {i.name}: {i.index.short()} {where}; {', '.join(i.platforms) or '-'}; signature {i.signature}; "
                f"binaries {i.binaries}"
            )
        if self.base is not None:
            manifests, blobs = self.base.counts()
            lines.append(
                f"differential: leaves out {manifests} manifest(s) and {blobs} blob(s) "
                f"({self.base.left_out_bytes / 1e6:.1f} MB) "
                f"that the target must already hold: {self.base.describe()}; 'archlift import' checks the target "
                "for them before it pushes anything"
            )
        lines.append(
            f"signatures: verified against {self.key}"
            if self.key
            else "signatures: not checked (give --key COSIGN_PUB to check them)"
        )
        unrecorded = [i.name for i in self.images if i.binaries == "not recorded in the lock"]
        if unrecorded:
            lines.append(
                f"binaries: not checked for {', '.join(unrecorded)} (the lock records no binaries for them: built "
                "before the check, or with --no-binaries-check)"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------- the checks
def check_bundle(
    archive: ArchiveReader,
    lock: ReleaseLock,
    artifacts: Sequence[Artifact] = (),
    base: BaseRecord | None = None,
    *,
    key: str | None = None,
) -> BundleReport:
    """Every check a bundle gets before it is used (see the module); a failing one is a
    ``ConfigError`` (exit 2) naming the member or image."""
    if key:
        from .sign import check_public_key

        check_public_key(key)
    walked = check_trees(archive, lock, artifacts, base)
    left = base.left_out if base else {}
    images = []
    for comp in sorted(lock.components.values(), key=lambda c: c.name):
        if comp.index_digest in left:
            platforms = tuple(sorted(comp.platforms))
            # a signature made since (cosign adds it to the .sig manifest) travels; else it is the base's
            signature = _check_signature(archive, comp, key) if key and _signatures(archive, comp) else "in the base"
            images.append(ImageCheck(comp.name, comp.index_digest, False, platforms, signature, "in the base"))
            continue
        index = archive.read_manifest(comp.index_digest)
        found = _check_platforms(archive, comp, index)
        signature = _check_signature(archive, comp, key) if key else "not checked"
        repo = ImageRef.parse(comp.repository)

        def read_blob(desc: Descriptor, repo: ImageRef = repo) -> Opener:
            return archive.blob(repo, desc)

        binaries = "ok"
        for platform, digest in sorted(found.items()):
            recorded = comp.binaries.get(platform)
            if digest in left:
                continue
            if recorded is None:  # built without the check (an older lock, --no-binaries-check)
                binaries = "not recorded in the lock"
                continue
            manifest = index if digest == index.digest else archive.read_manifest(digest)
            if any(d.digest in left for d in manifest.descriptors()):  # layers the site holds already
                binaries = "partly in the base"
                continue
            problems = check_bundled(f"{comp.repository}@{digest}", platform, manifest, read_blob, recorded)
            if problems:
                raise archive.refuse(f"component '{comp.name}', {platform} ({digest}): " + "; ".join(problems))
        images.append(ImageCheck(comp.name, comp.index_digest, True, tuple(sorted(found)), signature, binaries))
    manifests = len(walked)
    blob_members = sum(1 for n in archive.members if n.startswith("blobs/"))
    return BundleReport(
        str(archive.path),
        len(archive.file.parts),
        archive.file.size,
        len(archive.members),
        manifests,
        blob_members - manifests,
        tuple(images),
        base,
        key,
    )


def check_trees(
    archive: ArchiveReader, lock: ReleaseLock, artifacts: Sequence[Artifact], base: BaseRecord | None
) -> set[Digest]:
    """Every tag valid; every manifest that ``index.json``, the lock and the artifacts name is in
    the bundle (or left out by its base), and everything below it, at the size its descriptor says.
    Returns the manifests of the bundle it walked."""
    left = base.left_out if base else {}
    roots: dict[Digest, str] = {}
    for comp in sorted(lock.components.values(), key=lambda c: c.name):
        what = f"component '{comp.name}' of its {LOCK_NAME}"
        for tag in comp.tags:
            if not is_tag(tag):
                raise archive.refuse(
                    f"{what} has the tag '{tag}', which is not a valid tag "
                    "(letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
                )
        roots.setdefault(comp.index_digest, what)
        for digest in (*comp.platforms.values(), *comp.attestations.values()):
            roots.setdefault(digest, what)
    for art in artifacts:
        assert art.ref.digest is not None  # Artifact.from_json checks
        roots.setdefault(art.ref.digest, f"the artifact {art.ref} of its {ARTIFACTS_NAME}")
    for n, entry in enumerate(archive.entries()):
        archive.blob_member(entry.desc)  # there, of its size
        roots.setdefault(entry.desc.digest, f"index.json, manifests[{n}]")
    seen: set[Digest] = {d for d, x in left.items() if x.piece.manifest}
    walked: set[Digest] = set()
    for digest, what in sorted(roots.items()):
        if digest in left:
            if not left[digest].piece.manifest:
                raise archive.refuse(f"{what} names the manifest {digest}, which its base.json leaves out as a blob")
            continue
        if not archive.has_manifest(digest):
            also = ", and its base.json does not leave it out" if base else ""
            raise archive.refuse(f"it lacks {archive.blob_name(digest)}, the manifest {what} names{also}")
        try:
            tree = walk(archive.read_manifest, archive.read_manifest(digest), seen)
            for manifest in tree.manifests:  # every child (manifest or blob) there, of its size
                walked.add(manifest.digest)
                for desc in manifest.descriptors():
                    if desc.digest in left:
                        if left[desc.digest].piece.size != desc.size:
                            raise archive.refuse(
                                f"its base.json leaves out {desc.digest} as {left[desc.digest].piece.size} bytes; "
                                f"the manifest {manifest.digest} that names it says {desc.size}"
                            )
                        continue
                    archive.blob_member(desc)
        except (ValueError, KeyError, TypeError) as e:
            raise archive.refuse(f"a manifest under {digest} ({what}) is not valid ({e})") from None
        except RegistryError as e:
            raise archive.refuse(f"{e.message} ({what})") from None
    return walked


def _check_platforms(archive: ArchiveReader, comp: ComponentRelease, index: Manifest) -> dict[str, Digest]:
    """The index's platforms, which must be the lock's (and hold the lock's attestations)."""
    what = f"component '{comp.name}': its index {comp.index_digest}"
    try:
        if index.is_index:
            found: dict[str, Digest] = {}
            attestations: set[Digest] = set()
            for d in index.descriptors():
                if d.is_attestation:
                    attestations.add(d.digest)
                elif d.platform is not None:
                    found.setdefault(str(d.platform), d.digest)
        else:
            found, attestations = _bare_platform(archive, index), set()
    except (ValueError, KeyError, TypeError, RefError) as e:
        raise archive.refuse(f"{what} is not valid ({e})") from None
    if found != comp.platforms:
        diff = [
            f"{p}: the lock says {comp.platforms.get(p, 'nothing')}, the index has {found.get(p, 'nothing')}"
            for p in sorted(set(found) | set(comp.platforms))
            if found.get(p) != comp.platforms.get(p)
        ]
        raise archive.refuse(f"{what} does not hold the platforms its {LOCK_NAME} records ({'; '.join(diff)})")
    for manifest, attestation in sorted(comp.attestations.items()):
        if attestation not in attestations:
            raise archive.refuse(f"{what} lacks the attestation {attestation} (for {manifest}) its lock records")
    return found


def _bare_platform(archive: ArchiveReader, manifest: Manifest) -> dict[str, Digest]:
    """A single image manifest's one platform, from its config (as the registry client reads it)."""
    config = manifest.config
    if config is None:
        return {}
    doc = json.loads(archive.read(archive.blob_name(config.digest)))
    if not isinstance(doc, dict) or not doc.get("os"):
        return {}
    plat = Platform.from_oci({k: str(doc.get(k, "")) for k in ("os", "architecture", "variant") if doc.get(k)})
    return {str(plat): manifest.digest}


def _signatures(archive: ArchiveReader, comp: ComponentRelease) -> list[Entry]:
    """The bundle's cosign signature tags (``sha256-<hex>.sig``) of the component's index."""
    repo = ImageRef.parse(comp.repository)
    tag = f"{comp.index_digest.algorithm}-{comp.index_digest.hex}.sig"
    return [e for e in archive.entries() if e.tag == tag and e.of(repo)]


def _check_signature(archive: ArchiveReader, comp: ComponentRelease, key: str) -> str:
    """The image's cosign signature in the bundle, verified against ``key`` offline."""
    from .sign import verify_blob

    entries = _signatures(archive, comp)
    tag = f"{comp.index_digest.algorithm}-{comp.index_digest.hex}.sig"
    what = f"component '{comp.name}' ({comp.ref})"
    if not entries:
        raise archive.refuse(
            f"{what} has no cosign signature in the bundle (no {tag} tag): it was not signed, or not with the "
            "release's signatures copied along ('archlift sign', then export)"
        )
    failures: list[str] = []
    verified = 0
    for entry in entries:
        manifest = archive.read_manifest(entry.desc.digest)
        for layer in manifest.descriptors():
            if layer.media_type != SIMPLE_SIGNING:
                continue
            signature = layer.annotations.get(SIGNATURE_ANNOTATION, "")
            try:
                base64.b64decode(signature, validate=True)
            except (binascii.Error, ValueError):
                failures.append(f"a signature of {entry.desc.digest.short()} is not base64")
                continue
            if layer.size > MAX_PAYLOAD:
                failures.append(f"a payload of {layer.size} bytes is larger than a signature payload may be")
                continue
            if archive.blob_name(layer.digest) not in archive.members:
                failures.append(f"the payload {layer.digest.short()} is not in the bundle")
                continue
            payload = archive.read(archive.blob_name(layer.digest))
            error = verify_blob(key, payload, signature)
            if error:
                failures.append(error)
                continue
            try:
                named = json.loads(payload)["critical"]["image"]["docker-manifest-digest"]
            except (ValueError, KeyError, TypeError):
                named = None
            if named != str(comp.index_digest):
                failures.append(f"a signature verifies, but its payload names {named!r}, not {comp.index_digest}")
                continue
            verified += 1
    if not verified:
        raise archive.refuse(
            f"{what}: no signature in the bundle verifies against {key}: " + ("; ".join(failures) or "no payload")
        )
    return f"verified ({verified})"
