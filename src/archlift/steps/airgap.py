"""Across the air gap: a release as one OCI layout archive, and back into a registry.

``export_bundle`` copies every image of the lock (with its referrers and cosign
tags, and the published artifacts) into an archive (``archlift.oci.archive``)
with the one copy (``archlift.oci.copy``), digests those of the release, and
adds the release lock as ``archlift/release.json``, the published artifacts as
``archlift/artifacts.json`` and the rendered manifests under
``archlift/manifests/``. Nothing is written at ``--output`` unless every image
made it. With ``since`` (the lock or the bundle of the release the site already
runs) it writes a differential bundle: only what that release lacks, and
``archlift/base.json`` saying what it left out (``archlift.steps.differential``).
With ``max_size`` the archive is written as numbered parts (``archlift.oci.parts``).

``open_bundle`` checks the whole archive (one file, or its parts in any order)
before anything else is done with it: every member is safe and matches its
digest or checksum, and the bundle passes the offline checks of
``archlift.checks.bundle`` (its trees resolve, alone or with what its base
leaves out; platforms as the lock says; signatures against a key when given).
``import_bundle`` then, for a differential bundle, asks the target for every
piece the bundle leaves out (HEAD requests; nothing is pushed when one is
missing), and copies the bundle to the target with every tag of every image
last: a failure on the way moves no tag at all.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..checks.bundle import BundleReport, check_bundle
from ..errors import ConfigError, MirrorError, RegistryError
from ..lock import ReleaseLock
from ..oci import RegistryClient
from ..oci.archive import SUMS, ArchiveReader, ArchiveWriter, Member
from ..oci.copy import Progress, copy
from ..oci.parts import MAGIC, human
from ..oci.store import RegistryStore, Source
from ..refs import Digest, RefError
from .differential import (
    BASE_PATH,
    BaseRecord,
    Inventory,
    LeftOut,
    Memo,
    WithBase,
    WithBaseSource,
    bring,
    left_out,
    locate,
    merge,
    refusal,
    walk,
)
from .mirror import Artifact, MirrorResult, Target, mirror, plan_mirror

__all__ = ["SUMS", "Bundle", "ExportResult", "export_bundle", "import_bundle", "open_bundle", "read_base"]

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
    bytes: int  # of the manifests and blobs written
    seconds: float
    dropped_platforms: dict[str, tuple[str, ...]]
    outputs: tuple[Path, ...] = ()  # the bundle, or its parts
    max_size: int | None = None
    file_bytes: int = 0  # the lock, the manifests, index.json, the checksum list...
    base: BaseRecord | None = None  # a differential bundle's base
    full_bytes: int = 0  # differential: the manifests and blobs a full bundle of the release would carry

    @property
    def carried(self) -> int:
        return self.bytes + self.file_bytes

    @property
    def saved(self) -> int:
        """Bytes of manifests and blobs a full bundle would carry and this one does not."""
        return self.full_bytes - self.bytes if self.base is not None else 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": str(self.path),
            "outputs": [str(p) for p in self.outputs],
            "parts": len(self.outputs) if self.max_size is not None else 0,
            "max_size": self.max_size,
            "images": self.images,
            "manifests": self.manifests,
            "blobs": self.blobs,
            "bytes": self.bytes,
            "carried_bytes": self.carried,
            "seconds": round(self.seconds, 3),
            "dropped_platforms": {k: list(v) for k, v in self.dropped_platforms.items()},
            "differential": self.base is not None,
        }
        if self.base is not None:
            manifests, blobs = self.base.counts()
            out["base"] = {
                **self.base.to_json()["base"],
                "left_out": {"manifests": manifests, "blobs": blobs, "bytes": self.base.left_out_bytes},
            }
            out["full_bytes"] = self.full_bytes
            out["saved_bytes"] = self.saved
        return out

    def summary(self) -> str:
        kind = " (differential)" if self.base is not None else ""
        text = (
            f"wrote {self.path}{kind}: {self.images} image(s), {self.manifests} manifest(s), {self.blobs} blob(s), "
            f"{self.bytes / 1e6:.1f} MB in {self.seconds:.1f} s"
        )
        if self.max_size is not None:
            names = ", ".join(p.name for p in self.outputs)
            text += f"\n  in {len(self.outputs)} part(s) of at most {human(self.max_size)}: {names}"
        for name, dropped in sorted(self.dropped_platforms.items()):
            text += f"\n  {name}: dropped {', '.join(dropped)} (the bundle's lock records the new index digest)"
        if self.base is not None:
            manifests, blobs = self.base.counts()
            share = f", {100 * self.saved / self.full_bytes:.1f}%" if self.full_bytes else ""
            text += (
                f"\n  against {self.base.describe()}: {manifests} manifest(s) and {blobs} blob(s) left out, "
                "which the target must already hold"
                f"\n  saves {self.saved} bytes ({self.saved / 1e6:.1f} MB{share}) of manifests and blobs against a "
                f"full bundle, which would carry {self.full_bytes} bytes ({self.full_bytes / 1e6:.1f} MB)"
            )
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
    since: Sequence[Path] = (),
    max_size: int | None = None,
) -> ExportResult:
    """Write every image of ``lock`` (and ``artifacts``, ``manifests_dir``) into the archive ``output``;
    with ``since``, only what that release (its lock, or its bundle) lacks; with ``max_size``, in parts."""
    start = time.monotonic()
    plan = plan_mirror(lock, Target("bundle.invalid"), platforms, artifacts=artifacts)
    source = Memo(RegistryStore(client))
    base: BaseRecord | None = None
    full = 0
    left: dict[Digest, LeftOut] = {}
    if since:
        base, old = read_base(since, client, plan.platforms, source)
        try:
            new = walk(source, plan.images, plan.platforms)
        except RegistryError as e:
            raise MirrorError(
                f"exporting to {output}: {e.message}", hint="run the same command again once the registry answers"
            ) from None
        left = left_out(new, old, source)
        base = replace(base, left_out=left)
        full = sum(p.size for p in new.values())
    with ArchiveWriter(output, max_size) as archive:
        into = WithBase(archive, left) if base is not None else archive
        results = copy(plan.images, source, into, platforms=plan.platforms, jobs=jobs)
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
        if base is not None:
            files.append((BASE_PATH, base.dump()))
        if manifests_dir is not None and manifests_dir.is_dir():
            for path in sorted(p for p in manifests_dir.rglob("*") if p.is_file() and not p.is_symlink()):
                files.append((f"{MANIFESTS_DIR}/{path.relative_to(manifests_dir).as_posix()}", path.read_bytes()))
        stats = archive.commit(files)
    return ExportResult(
        output,
        len(lock.components),
        stats.manifests,
        stats.blobs,
        stats.bytes,
        time.monotonic() - start,
        dropped,
        stats.outputs,
        max_size,
        stats.file_bytes,
        base,
        full,
    )


def _is_lock_file(paths: Sequence[Path]) -> bool:
    """One file that is JSON (a lock), not a tar or a part of a split bundle."""
    if len(paths) != 1:
        return False
    try:
        with paths[0].open("rb") as f:
            head = f.read(len(MAGIC)).lstrip()
    except FileNotFoundError:
        raise ConfigError(f"--since {paths[0]}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"--since {paths[0]}: a directory; give the old release's lock or bundle") from None
    return head.startswith(b"{")


def read_base(
    paths: Sequence[Path], client: RegistryClient, platforms: Sequence[str] = (), source: Source | None = None
) -> tuple[BaseRecord, Inventory]:
    """The release a site already runs, and everything it holds: from its lock (its images' trees
    walked in their registry, ``source``, which must still hold them) or from its bundle (one file
    or its parts; checked, and walked offline)."""
    shown = " ".join(str(p) for p in paths)
    if _is_lock_file(paths):
        raw = paths[0].read_bytes()
        lock = ReleaseLock.read(paths[0])
        plan = plan_mirror(lock, Target("bundle.invalid"), platforms, onto_itself=True)
        try:
            pieces = walk(source or RegistryStore(client), plan.images, plan.platforms)
        except RegistryError as e:
            raise ConfigError(
                f"--since {shown}: the old release's trees are read from its registry, which must still hold them, "
                f"and {e.message}",
                hint="give --since the old release's bundle instead (it holds its trees), or export a full bundle",
            ) from None
        record = BaseRecord(Digest.of(raw), lock.created_at, str(paths[0]))
        return record, pieces
    bundle = open_bundle(list(paths))
    plan = plan_mirror(bundle.lock, Target("bundle.invalid"), onto_itself=True, artifacts=bundle.artifacts)
    known = {d: x.piece for d, x in bundle.base.left_out.items()} if bundle.base else {}
    try:
        pieces = merge(walk(bundle.archive, plan.images, (), known), known)
    except RegistryError as e:
        raise bundle.archive.refuse(e.message) from None
    record = BaseRecord(Digest.of(bundle.read(LOCK_PATH)), bundle.lock.created_at, str(bundle.path))
    return record, pieces


# ---------------------------------------------------------------------- reading a bundle
@dataclass(frozen=True)
class Bundle:
    """A checked bundle that resolves (``open_bundle``)."""

    archive: ArchiveReader
    lock: ReleaseLock
    artifacts: tuple[Artifact, ...]
    base: BaseRecord | None  # a differential bundle's base
    report: BundleReport

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


def open_bundle(paths: Path | Sequence[Path], progress: Progress | None = None, *, key: str | None = None) -> Bundle:
    """Read and check the whole bundle (one file, or the parts of one in any order) with every
    offline check (``archlift.checks.bundle``; signatures too when ``key`` is given); nothing is
    written anywhere, nothing is asked of any registry. A bundle that fails any check is refused
    (``ConfigError``)."""
    archive = ArchiveReader.open(paths, progress, required=(LOCK_PATH,))
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
    base = None
    if BASE_PATH in archive.members:
        try:
            base = BaseRecord.parse(archive.read(BASE_PATH), [*lock.components, *(a.name for a in artifacts)])
        except ValueError as e:
            raise archive.refuse(f"its {BASE_PATH} is not valid ({e})") from None
    report = check_bundle(archive, lock, artifacts, base, key=key)
    return Bundle(archive, lock, artifacts, base, report)


def import_bundle(
    bundle: Bundle,
    target: Target,
    client: RegistryClient,
    *,
    platforms: Sequence[str] = (),
    jobs: int = 8,
    progress: Progress | None = None,
) -> MirrorResult:
    """Push a checked bundle to ``target``: the tags of every image only once every image is there.
    A differential bundle first has the target checked for what it leaves out (HEAD requests):
    when anything is missing, nothing is pushed (``ConfigError`` naming the images, the pieces and
    the base)."""
    plan = plan_mirror(bundle.lock, target, platforms, onto_itself=True, artifacts=bundle.artifacts)
    source: Source = bundle.archive
    if bundle.base is not None:
        located = locate(bundle.base, {i.name: i.target for i in plan.images}, target.map, client, jobs)
        if located.missing:
            raise refusal(bundle.base, str(bundle.path), str(target), located)
        store = RegistryStore(client)
        bring(store, located.mounts)
        source = WithBaseSource(bundle.archive, store, located)
    return mirror(plan, client, jobs=jobs, progress=progress, source=source, tags_together=True)
