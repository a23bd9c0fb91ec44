"""Across the air gap: a release as one OCI layout archive, and back into a registry.

``export_bundle`` copies every image of the lock (with its referrers and cosign
tags, and the published artifacts) into an archive (``archlift.oci.archive``)
with the one copy (``archlift.oci.copy``), digests those of the release, and
adds the release lock as ``archlift/release.json``, the published artifacts as
``archlift/artifacts.json`` and the rendered manifests under
``archlift/manifests/``. Nothing is written at ``--output`` unless every image
made it.

``open_bundle`` checks the whole archive before anything else is done with
it: every member is safe and matches its digest or checksum, and the bundle
resolves: every manifest and blob that ``index.json``, the lock and the
artifacts name is there, at the size its descriptor says, every tag is a valid
tag. ``import_bundle`` then copies it to the target with every tag of every
image last: a failure on the way moves no tag at all.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MirrorError, RegistryError
from ..lock import ReleaseLock
from ..oci import RegistryClient
from ..oci.archive import SUMS, ArchiveReader, ArchiveWriter, Member
from ..oci.copy import Progress, Tree, collect, copy
from ..oci.store import RegistryStore
from ..refs import Digest, RefError, is_tag
from .mirror import Artifact, MirrorResult, Target, mirror, plan_mirror

__all__ = ["SUMS", "Bundle", "ExportResult", "export_bundle", "import_bundle", "open_bundle"]

LOCK_PATH = "archlift/release.json"
ARTIFACTS_PATH = "archlift/artifacts.json"  # published artifacts that go along (the manifests artifact)
MANIFESTS_DIR = "archlift/manifests"


# ---------------------------------------------------------------------- export
@dataclass(frozen=True)
class ExportResult:
    path: Path
    images: int
    manifests: int
    blobs: int
    bytes: int
    seconds: float
    dropped_platforms: dict[str, tuple[str, ...]]

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "dropped_platforms": {k: list(v) for k, v in self.dropped_platforms.items()},
        }

    def summary(self) -> str:
        text = (
            f"wrote {self.path}: {self.images} image(s), {self.manifests} manifest(s), {self.blobs} blob(s), "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        )
        for name, dropped in sorted(self.dropped_platforms.items()):
            text += f"\n  {name}: dropped {', '.join(dropped)} (the bundle's lock records the new index digest)"
        return text


def export_bundle(
    lock: ReleaseLock,
    client: RegistryClient,
    output: Path,
    *,
    manifests_dir: Path | None = None,
    platforms: Sequence[str] = (),
    jobs: int = 8,
    artifacts: Sequence[Artifact] = (),
) -> ExportResult:
    """Write every image of ``lock`` (and ``artifacts``, ``manifests_dir``) into the archive ``output``."""
    start = time.monotonic()
    plan = plan_mirror(lock, Target("bundle.invalid"), platforms, artifacts=artifacts)
    with ArchiveWriter(output) as archive:
        results = copy(plan.images, RegistryStore(client), archive, platforms=plan.platforms, jobs=jobs)
        failed = [r for r in results if r.error]
        if failed:
            raise MirrorError(
                f"exporting to {output}: {len(failed)} of {len(results)} image(s) could not be copied, so nothing "
                "was written:\n" + "\n".join(f"  {r.name} ({r.source}): {r.error}" for r in failed),
                hint="run the same command again once the registry answers",
            )
        components = dict(lock.components)
        dropped: dict[str, tuple[str, ...]] = {}
        for r in results:
            comp = lock.components.get(r.name)
            if comp is not None and r.dropped_platforms:  # the bundle's lock records the new index
                kept = {p: d for p, d in comp.platforms.items() if p in plan.platforms}
                components[r.name] = replace(comp, index_digest=r.digest, platforms=kept)
                dropped[r.name] = r.dropped_platforms
        files = [(LOCK_PATH, replace(lock, components=components).to_json().encode())]
        if artifacts:
            listed = [a.to_json() for a in artifacts]
            files.append((ARTIFACTS_PATH, json.dumps(listed, indent=2, sort_keys=True).encode()))
        if manifests_dir is not None and manifests_dir.is_dir():
            for path in sorted(p for p in manifests_dir.rglob("*") if p.is_file() and not p.is_symlink()):
                files.append((f"{MANIFESTS_DIR}/{path.relative_to(manifests_dir).as_posix()}", path.read_bytes()))
        stats = archive.commit(files)
    return ExportResult(
        output, len(lock.components), stats.manifests, stats.blobs, stats.bytes, time.monotonic() - start, dropped
    )


# ---------------------------------------------------------------------- reading a bundle
@dataclass(frozen=True)
class Bundle:
    """A checked bundle that resolves (``open_bundle``)."""

    archive: ArchiveReader
    lock: ReleaseLock
    artifacts: tuple[Artifact, ...] = ()

    @property
    def path(self) -> Path:
        return self.archive.path

    @property
    def members(self) -> dict[str, Member]:
        return dict(self.archive.members)

    def read(self, name: str) -> bytes:
        return self.archive.read(name)

    def extract(self, prefix: str, dest: Path) -> list[Path]:
        """Write the members under ``prefix`` (already checked safe) below ``dest``."""
        out = []
        for name in sorted(self.archive.members):
            if name.startswith(prefix + "/"):
                path = dest / name[len(prefix) + 1 :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.read(name))
                out.append(path)
        return out


def open_bundle(path: Path, progress: Progress | None = None) -> Bundle:
    """Read, check and resolve the whole bundle; nothing is written anywhere, nothing is asked of
    any registry. A bundle that fails any check is refused (``ConfigError``)."""
    archive = ArchiveReader.open(path, progress, required=(LOCK_PATH,))
    with tempfile.TemporaryDirectory(prefix="archlift-import-") as tmp:
        lock_file = Path(tmp) / "release.json"
        lock_file.write_bytes(archive.read(LOCK_PATH))
        try:
            lock = ReleaseLock.read(lock_file)
        except ConfigError as e:
            reason = e.message.split(": ", 1)[-1]
            raise archive.refuse(f"its {LOCK_PATH} is not a valid release lock ({reason})") from None
    artifacts: tuple[Artifact, ...] = ()
    if ARTIFACTS_PATH in archive.members:
        try:
            artifacts = tuple(Artifact.from_json(a) for a in json.loads(archive.read(ARTIFACTS_PATH)))
        except (ValueError, KeyError, TypeError, AttributeError, RefError) as e:
            raise archive.refuse(f"its {ARTIFACTS_PATH} is not valid ({e})") from None
    bundle = Bundle(archive, lock, artifacts)
    _resolve(bundle)
    return bundle


def _resolve(bundle: Bundle) -> None:
    """Every tag valid; every manifest that ``index.json``, the lock and the artifacts name is in
    the bundle, and everything below it, at the size its descriptor says."""
    archive, roots = bundle.archive, dict[Digest, str]()
    for comp in sorted(bundle.lock.components.values(), key=lambda c: c.name):
        what = f"component '{comp.name}' of its {LOCK_PATH}"
        for tag in comp.tags:
            if not is_tag(tag):
                raise archive.refuse(
                    f"{what} has the tag '{tag}', which is not a valid tag "
                    "(letters, digits, '_', '.', '-'; at most 128; not starting with '.' or '-')"
                )
        roots.setdefault(comp.index_digest, what)
        for digest in (*comp.platforms.values(), *comp.attestations.values()):
            roots.setdefault(digest, what)
    for art in bundle.artifacts:
        assert art.ref.digest is not None  # Artifact.from_json checks
        roots.setdefault(art.ref.digest, f"the artifact {art.ref} of its {ARTIFACTS_PATH}")
    for n, entry in enumerate(archive.entries()):
        archive.blob_member(entry.desc)  # there, of its size
        roots.setdefault(entry.desc.digest, f"index.json, manifests[{n}]")
    seen: set[Digest] = set()
    for digest, what in sorted(roots.items()):
        if not archive.has_manifest(digest):
            raise archive.refuse(f"it lacks {archive.blob_name(digest)}, the manifest {what} names")
        tree = Tree()
        try:
            collect(archive.read_manifest, archive.read_manifest(digest), tree, seen)
            for manifest in tree.manifests:  # every child (manifest or blob) there, of its size
                for desc in manifest.descriptors():
                    archive.blob_member(desc)
        except (ValueError, KeyError, TypeError) as e:
            raise archive.refuse(f"a manifest under {digest} ({what}) is not valid ({e})") from None
        except RegistryError as e:
            raise archive.refuse(f"{e.message} ({what})") from None


def import_bundle(
    bundle: Bundle,
    target: Target,
    client: RegistryClient,
    *,
    platforms: Sequence[str] = (),
    jobs: int = 8,
    progress: Progress | None = None,
) -> MirrorResult:
    """Push a checked bundle to ``target``: the tags of every image only once every image is there."""
    plan = plan_mirror(bundle.lock, target, platforms, onto_itself=True, artifacts=bundle.artifacts)
    return mirror(plan, client, jobs=jobs, progress=progress, source=bundle.archive, tags_together=True)
