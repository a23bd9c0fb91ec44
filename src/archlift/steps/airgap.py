"""Across the air gap: a release as one OCI image layout tarball, and back into a registry.

``export_bundle`` writes, at the root of an uncompressed tar (``oci-archive``
compatible): ``oci-layout``, ``index.json`` (one entry per image tag, plus the
cosign/referrer tags and referrers, annotated with the component), every
manifest and blob under ``blobs/sha256/``, the release lock as
``archlift/release.json``, the rendered manifests under ``archlift/manifests/``,
and last ``SHA256SUMS`` over every other file. Digests are those of the release.

``import_bundle`` first checks the whole tarball without writing anything:
every member is a plain file or directory with a relative path inside the
root (no ``..``, no absolute path, no link), every blob matches its digest and
every other file its checksum. Only then does it push, with the mirror's
machinery (HEAD-skip, each blob once, mounts, tags last), verifying again
while streaming.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MirrorError, RegistryError
from ..lock import ReleaseLock
from ..oci import OCI_INDEX, Descriptor, DigestMismatch, Manifest, RegistryClient, RequestFailed
from ..oci.model import InvalidManifest
from ..refs import Digest, ImageRef, RefError, is_tag
from .mirror import (
    Artifact,
    ImagePlan,
    MirrorResult,
    Progress,
    RegistrySource,
    Target,
    Tree,
    collect,
    filter_platforms,
    mirror,
    plan_mirror,
)

REF_NAME = "org.opencontainers.image.ref.name"
COMPONENT = "io.archlift.component"
KIND = "io.archlift.kind"  # "image" | "tag" | "referrer"
LOCK_PATH = "archlift/release.json"
ARTIFACTS_PATH = "archlift/artifacts.json"  # published artifacts that go along (the manifests artifact)
MANIFESTS_DIR = "archlift/manifests"
SUMS = "SHA256SUMS"
CHUNK = 1 << 20


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


def _tarinfo(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime, info.type = size, 0o644, 0, tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _download(client: RegistryClient, repo: ImageRef, desc: Descriptor, path: Path, attempts: int = 4) -> None:
    """A blob into ``path``, verified; never more than its descriptor's size is written
    (``open_blob`` stops there); temporary failures start it again."""
    for attempt in range(attempts):
        try:
            reader = client.open_blob(repo, desc)
            h = hashlib.new(desc.digest.algorithm)
            total = 0
            try:
                with path.open("wb") as f:
                    for chunk in reader.chunks(CHUNK):
                        h.update(chunk)
                        total += len(chunk)
                        f.write(chunk)
            finally:
                reader.release()
            actual = f"{desc.digest.algorithm}:{h.hexdigest()}"
            if actual != desc.digest.value or total != desc.size:
                raise DigestMismatch(
                    f'blob {desc.digest} from "{repo.name}": got {total} bytes with digest {actual}',
                    expected=desc.digest,
                    actual=actual,
                )
            return
        except RequestFailed as e:
            if not e.temporary or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


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
    """Write every image of ``lock`` (and ``artifacts``, ``manifests_dir``) into the tarball ``output``."""
    start = time.monotonic()
    plan = plan_mirror(lock, Target("bundle.invalid"), platforms, artifacts=artifacts)
    wanted = plan.platforms
    source = RegistrySource(client)
    manifests: dict[Digest, Manifest] = {}
    blobs: dict[Digest, tuple[ImageRef, Descriptor]] = {}
    entries: list[dict[str, Any]] = []
    components = dict(lock.components)
    dropped_all: dict[str, tuple[str, ...]] = {}
    for image in plan.images:
        name = image.name
        comp = lock.components.get(name)
        assert image.source.digest is not None

        def fetch(d: Digest, image: ImagePlan = image) -> Manifest:
            return source.manifest(image, d)

        try:
            original = fetch(image.source.digest)
            index, dropped = filter_platforms(original, wanted)
            tree = Tree()
            seen: set[Digest] = set()
            if index is not original:
                for d in index.descriptors():
                    collect(fetch, fetch(d.digest), tree, seen)
                tree.manifests.append(index)
                dropped_all[name] = dropped
                assert comp is not None  # artifacts are not indexes
                components[name] = replace(
                    comp,
                    index_digest=index.digest,
                    platforms={p: d for p, d in comp.platforms.items() if p in wanted},
                )
            else:
                collect(fetch, index, tree, seen)
            subjects = {original.digest, index.digest} | {d.digest for d in index.descriptors()}
            referrers, tagged = source.linked(image, subjects)
            trees = [tree]
            for tag_name, digest in [("", d) for d in referrers] + tagged:
                t = Tree()
                collect(fetch, fetch(digest), t, set())
                trees.append(t)
                top = t.manifests[-1]
                annotations = {COMPONENT: name, KIND: "tag" if tag_name else "referrer"}
                if tag_name:
                    annotations[REF_NAME] = tag_name
                entries.append({**_desc_json(top), "annotations": annotations})
        except RegistryError as e:
            raise MirrorError(f"exporting {name} ({image.source}): {e.message}", hint=e.hint) from None
        for t in trees:
            for m in t.manifests:
                manifests[m.digest] = m
            for digest, desc in t.blobs.items():
                blobs.setdefault(digest, (image.source, desc))
        for tag in image.tags or ("",):
            annotations = {COMPONENT: name, KIND: "image" if comp else "artifact"}
            if tag:
                annotations[REF_NAME] = tag
            entries.append({**_desc_json(index), "annotations": annotations})
    out_lock = replace(lock, components=components)
    output.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".archlift-export-", dir=output.parent))
    tmp_out = work / "bundle.tar"
    try:
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            futures = [
                pool.submit(_download, client, repo, desc, work / d.hex)
                for d, (repo, desc) in sorted(blobs.items())
                if d not in manifests
            ]
            for f in futures:
                try:
                    f.result()
                except RegistryError as e:
                    raise MirrorError(f"exporting: {e.message}", hint=e.hint) from None
        sums: list[tuple[str, str]] = []
        total = 0
        with tarfile.open(tmp_out, "w", format=tarfile.PAX_FORMAT) as tar:

            def add_bytes(name: str, data: bytes, checksum: bool = True) -> None:
                tar.addfile(_tarinfo(name, len(data)), io.BytesIO(data))
                if checksum:
                    sums.append((hashlib.sha256(data).hexdigest(), name))

            add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
            index_json = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            add_bytes("index.json", json.dumps(index_json, indent=2, sort_keys=True).encode())
            add_bytes(LOCK_PATH, out_lock.to_json().encode())
            if artifacts:
                listed = [a.to_json() for a in artifacts]
                add_bytes(ARTIFACTS_PATH, json.dumps(listed, indent=2, sort_keys=True).encode())
            if manifests_dir is not None and manifests_dir.is_dir():
                for path in sorted(p for p in manifests_dir.rglob("*") if p.is_file() and not p.is_symlink()):
                    rel = path.relative_to(manifests_dir).as_posix()
                    add_bytes(f"{MANIFESTS_DIR}/{rel}", path.read_bytes())
            for digest, m in sorted(manifests.items()):
                add_bytes(f"blobs/sha256/{digest.hex}", m.raw, checksum=False)
                total += len(m.raw)
            for digest in sorted(blobs):
                if digest in manifests:
                    continue
                path = work / digest.hex
                with path.open("rb") as data:
                    tar.addfile(_tarinfo(f"blobs/sha256/{digest.hex}", path.stat().st_size), data)
                total += path.stat().st_size
                path.unlink()
            add_bytes(SUMS, "".join(f"{h}  {n}\n" for h, n in sums).encode(), checksum=False)
        os.replace(tmp_out, output)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportResult(
        output,
        len(lock.components),
        len(manifests),
        len([d for d in blobs if d not in manifests]),
        total,
        time.monotonic() - start,
        dropped_all,
    )


def _desc_json(m: Manifest) -> dict[str, Any]:
    return {"mediaType": m.media_type, "digest": str(m.digest), "size": len(m.raw)}


# ---------------------------------------------------------------------- reading a bundle
@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of the data in the tar file
    size: int


class Bundle:
    """A checked bundle: every member safe, every blob and file verified."""

    def __init__(self, path: Path, members: dict[str, Member], lock: ReleaseLock, index: dict[str, Any]) -> None:
        self.path = path
        self.members = members
        self.lock = lock
        self.index = index
        self.artifacts: list[Artifact] = []

    def refuse(self, why: str) -> ConfigError:
        return ConfigError(
            f"refusing {self.path}: {why}", hint="the bundle is damaged or was not made by archlift export"
        )

    def read(self, name: str) -> bytes:
        m = self.members[name]
        with self.path.open("rb") as f:
            f.seek(m.offset)
            return f.read(m.size)

    def chunks(self, name: str) -> tuple[Iterable[bytes], Callable[[], None]]:
        m = self.members[name]
        f = self.path.open("rb")
        f.seek(m.offset)

        def gen() -> Iterator[bytes]:
            left = m.size
            while left > 0:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    return
                left -= len(chunk)
                yield chunk

        return gen(), f.close

    def blob_name(self, digest: Digest) -> str:
        name = f"blobs/{digest.algorithm}/{digest.hex}"
        if name not in self.members:
            raise self.refuse(f"it lacks {name}, which a manifest in it needs")
        return name

    def manifest(self, digest: Digest) -> Manifest:
        raw = self.read(self.blob_name(digest))
        try:
            m = Manifest.of(raw)
        except InvalidManifest as e:
            raise self.refuse(f"blobs/sha256/{digest.hex} is not a valid manifest: {e}") from None
        if m.digest != digest:
            raise self.refuse(f"blobs/sha256/{digest.hex} does not match its digest")
        return m

    def extract(self, prefix: str, dest: Path) -> list[Path]:
        """Write the members under ``prefix`` (already checked safe) below ``dest``."""
        out = []
        for name in sorted(self.members):
            if name.startswith(prefix + "/"):
                path = dest / name[len(prefix) + 1 :]
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.read(name))
                out.append(path)
        return out


def _check_name(bundle: Path, info: tarfile.TarInfo) -> str:
    name = info.name
    refuse = f"refusing {bundle}: member '{name}'"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or "\\" in name:
        raise ConfigError(f"{refuse} has an absolute path; a bundle holds only paths relative to its root")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ConfigError(f"{refuse} would be written outside the extraction root ('..' in its path)")
    if info.issym() or info.islnk():
        kind = "a symbolic link" if info.issym() else "a hard link"
        raise ConfigError(f"{refuse} is {kind} (to '{info.linkname}'); links are not allowed in a bundle")
    if not (info.isfile() or info.isdir()):
        raise ConfigError(f"{refuse} is a device, FIFO or other special file; only plain files are allowed")
    return posixpath.normpath("/".join(parts)) if parts else "."


def open_bundle(path: Path, progress: Progress | None = None) -> Bundle:
    """Read and check the whole bundle; nothing is written anywhere."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such bundle file")
    members: dict[str, Member] = {}
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                name = _check_name(path, info)
                if info.isdir():
                    continue
                if name in members:
                    raise ConfigError(f"refusing {path}: member '{name}' appears twice")
                members[name] = Member(name, info.offset_data, info.size)
    except tarfile.TarError as e:
        raise ConfigError(f"{path}: not an uncompressed tar archive ({e})") from None
    for required in ("oci-layout", "index.json", LOCK_PATH, SUMS):
        if required not in members:
            raise ConfigError(f"refusing {path}: it has no {required}; was it written by 'archlift export'?")
    bundle = Bundle(path, members, ReleaseLock(components={}), {})
    if progress:
        progress.start(sum(m.size for m in members.values()))
    sums: dict[str, str] = {}
    for line in bundle.read(SUMS).decode("utf-8", "replace").splitlines():
        digest, _, name = line.partition("  ")
        sums[name] = digest
    for name in sorted(members):
        if name == SUMS:
            continue
        expected = sums.get(name)
        if name.startswith("blobs/"):
            algorithm, _, hexd = name[len("blobs/") :].partition("/")
            try:
                expected_digest = Digest.parse(f"{algorithm}:{hexd}")
            except RefError:
                raise bundle.refuse(f"'{name}' is not named by a digest (blobs/sha256/<64 hex digits>)") from None
            algorithm, expected = expected_digest.algorithm, expected_digest.hex
        elif expected is None:
            raise bundle.refuse(f"'{name}' is not listed in {SUMS}")
        else:
            algorithm = "sha256"
        h = hashlib.new(algorithm)
        chunks, close = bundle.chunks(name)
        try:
            for chunk in chunks:
                h.update(chunk)
                if progress:
                    progress.advance(len(chunk))
        finally:
            close()
        if h.hexdigest() != expected:
            what = "its digest" if name.startswith("blobs/") else f"its checksum in {SUMS}"
            raise bundle.refuse(f"'{name}' does not match {what} (sha256 is {h.hexdigest()}): corrupted")
    missing = sorted(n for n in sums if n not in members)
    if missing:
        raise bundle.refuse(f"{SUMS} lists {', '.join(missing)}, which the bundle lacks")
    with tempfile.TemporaryDirectory(prefix="archlift-import-") as tmp:
        lock_file = Path(tmp) / "release.json"
        lock_file.write_bytes(bundle.read(LOCK_PATH))
        try:
            bundle.lock = ReleaseLock.read(lock_file)
        except ConfigError as e:
            raise bundle.refuse(
                f"its {LOCK_PATH} is not a valid release lock ({e.message.split(': ', 1)[-1]})"
            ) from None
    try:
        bundle.index = json.loads(bundle.read("index.json"))
        if not isinstance(bundle.index, dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError) as e:
        raise bundle.refuse(f"its index.json is not valid ({e})") from None
    entries = bundle.index.get("manifests") or []
    if not isinstance(entries, list):
        raise bundle.refuse("its index.json has no list of manifests")
    for n, entry in enumerate(entries):  # every entry a valid descriptor, every tag in the tag grammar
        try:
            desc = Descriptor.from_json(entry, f"manifests[{n}]")
        except InvalidManifest as e:
            raise bundle.refuse(f"its index.json is not valid: {e}") from None
        tag = desc.annotations.get(REF_NAME)
        if tag is not None and not is_tag(tag):
            raise bundle.refuse(
                f"its index.json names the tag {tag[:80]!r} (manifests[{n}]), which is not a valid tag "
                "(ASCII letters, digits, '_', '.', '-', not starting with '.' or '-'; at most 128)"
            )
    if ARTIFACTS_PATH in members:
        try:
            bundle.artifacts = [Artifact.from_json(a) for a in json.loads(bundle.read(ARTIFACTS_PATH))]
        except (ValueError, KeyError, TypeError, RefError) as e:
            raise bundle.refuse(f"its {ARTIFACTS_PATH} is not valid ({e})") from None
    return bundle


class BundleSource:
    """The mirror's ``Source`` over a checked bundle."""

    def __init__(self, bundle: Bundle, client: RegistryClient) -> None:
        self.bundle = bundle
        self.client = client

    def manifest(self, image: ImagePlan, digest: Digest) -> Manifest:
        return self.bundle.manifest(digest)

    def linked(self, image: ImagePlan, subjects: set[Digest]) -> tuple[list[Digest], list[tuple[str, Digest]]]:
        referrers, tagged = [], []
        for e in self.bundle.index.get("manifests") or ():
            ann = e.get("annotations") or {}
            if ann.get(COMPONENT) != image.name:
                continue
            if ann.get(KIND) == "referrer":
                referrers.append(Digest.parse(e["digest"]))
            elif ann.get(KIND) == "tag" and ann.get(REF_NAME):
                tagged.append((str(ann[REF_NAME]), Digest.parse(e["digest"])))
        return referrers, tagged

    def send(self, image: ImagePlan, dst: ImageRef, desc: Descriptor, location: str | None, progress: Progress) -> int:
        name = self.bundle.blob_name(desc.digest)
        return self.client.upload_stream(
            dst,
            desc,
            lambda: self.bundle.chunks(name),
            origin=f"{self.bundle.path}:{name}",
            location=location,
            progress=progress.advance,
        )

    def mount_from(self, image: ImagePlan, dst: ImageRef) -> ImageRef | None:
        return None


def import_bundle(
    bundle: Bundle,
    target: Target,
    client: RegistryClient,
    *,
    platforms: Sequence[str] = (),
    jobs: int = 8,
    progress: Progress | None = None,
) -> MirrorResult:
    """Push a checked bundle to ``target`` (tags of an image only once all of it is there)."""
    plan = plan_mirror(bundle.lock, target, platforms, onto_itself=True, artifacts=bundle.artifacts)
    return mirror(plan, client, jobs=jobs, progress=progress, source=BundleSource(bundle, client))
