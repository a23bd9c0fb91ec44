"""Compare a registry with the release: ``verify_target`` checks that every image
of the lock (and the published artifacts) is there with the same digests: index,
platforms, attestations, tags, referrers and signature tags, and with ``deep``
every blob. Used by ``archlift verify`` after a mirror or an import.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..errors import RegistryError
from ..lock import ComponentRelease, ReleaseLock
from ..oci import RegistryClient, RequestFailed
from ..oci.copy import ImagePlan
from ..oci.store import RegistryStore
from ..oci.walk import walk
from ..steps.mirror import Artifact, Target, plan_mirror


@dataclass(frozen=True)
class ImageCheck:
    name: str
    target: str
    problems: tuple[str, ...]
    checked: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "target": self.target,
            "ok": not self.problems,
            "problems": list(self.problems),
            **self.checked,
        }


@dataclass(frozen=True)
class VerifyReport:
    target: str
    images: tuple[ImageCheck, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return not any(i.problems for i in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "notes": list(self.notes),
            "images": [i.to_json() for i in self.images],
        }

    def summary(self) -> str:
        lines = [f"{self.target}: {'matches the release' if self.ok else 'does NOT match the release'}"]
        for i in self.images:
            lines.append(f"  {i.name}: {i.target} " + ("ok" if not i.problems else "MISMATCH"))
            lines += [f"    - {p}" for p in i.problems]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _verify_image(
    client: RegistryClient, image: ImagePlan, comp: ComponentRelease, deep: bool, notes: list[str]
) -> ImageCheck:
    c, dst = client, image.target
    assert image.source.digest is not None
    problems: list[str] = []
    checked: dict[str, Any] = {"index": str(comp.index_digest), "platforms": {}, "tags": {}, "referrers": {}}
    if c.head_manifest(dst.with_digest(comp.index_digest)) is None:
        problems.append(f"index {comp.index_digest} is missing")
        return ImageCheck(image.name, str(dst.with_digest(comp.index_digest)), tuple(problems), checked)
    index = c.get_manifest(dst.with_digest(comp.index_digest))
    found = c.index_platforms(dst.with_digest(comp.index_digest)) if comp.platforms else {}
    for platform, digest in sorted(comp.platforms.items()):
        have = found.get(platform)
        checked["platforms"][platform] = str(have) if have else None
        if have != digest:
            problems.append(f"platform {platform}: expected {digest}, found {have or 'nothing'}")
        elif c.head_manifest(dst.with_digest(digest)) is None:
            problems.append(f"platform {platform}: manifest {digest} is missing")
    for manifest, attestation in sorted(comp.attestations.items()):
        if c.head_manifest(dst.with_digest(attestation)) is None:
            problems.append(f"attestation {attestation} (for {manifest}) is missing")
    for tag in image.tags:  # the release's tags (and, upstream layout, a name's own)
        have_desc = c.head_manifest(dst.with_tag(tag))
        checked["tags"][tag] = str(have_desc.digest) if have_desc else None
        if have_desc is None or have_desc.digest != comp.index_digest:
            problems.append(
                f"tag {tag}: expected {comp.index_digest}, found {have_desc.digest if have_desc else 'nothing'}"
            )
    if deep:
        tree = walk(lambda d: c.get_manifest(dst.with_digest(d)), index)
        missing = [d for d in sorted(tree.blobs) if not c.blob_exists(dst, d)]
        checked["blobs"] = {"total": len(tree.blobs), "missing": [str(d) for d in missing]}
        problems += [f"blob {d} is missing" for d in missing]
    subjects = {comp.index_digest} | {d.digest for d in index.descriptors()}
    try:
        referrers, tagged = RegistryStore(client).linked(image.source, subjects)
    except RequestFailed as e:
        if e.status:  # the source answered: a real error
            raise
        notes.append(f"{image.name}: referrers and signature tags not compared ({image.source.registry} unreachable)")
        return ImageCheck(image.name, str(dst.with_digest(comp.index_digest)), tuple(problems), checked)
    for digest in referrers:
        ok = c.head_manifest(dst.with_digest(digest)) is not None
        checked["referrers"][str(digest)] = ok
        if not ok:
            problems.append(f"referrer {digest} is missing")
    for tag, digest in tagged:
        have_desc = c.head_manifest(dst.with_tag(tag))
        checked["referrers"][tag] = str(have_desc.digest) if have_desc else None
        if have_desc is None or have_desc.digest != digest:
            problems.append(f"tag {tag}: expected {digest}, found {have_desc.digest if have_desc else 'nothing'}")
    return ImageCheck(image.name, str(dst.with_digest(comp.index_digest)), tuple(problems), checked)


def verify_target(
    lock: ReleaseLock,
    target: Target,
    client: RegistryClient,
    *,
    deep: bool = False,
    jobs: int = 8,
    artifacts: Sequence[Artifact] = (),
) -> VerifyReport:
    """Compare ``target`` with the release (and ``artifacts``): index, platforms, attestations,
    tags, referrers and signature tags (compared with the source registry when it can be reached),
    at every place the target's layout puts each image (``Target.places``)."""
    plan = plan_mirror(lock, target, onto_itself=True, artifacts=artifacts)
    releases = dict(lock.components)
    for art in artifacts:
        assert art.ref.digest is not None and art.ref.tag is not None
        releases[art.name] = ComponentRelease(art.name, "artifact", art.ref.name, art.ref.digest, {}, (art.ref.tag,))
    notes: list[str] = []
    with ThreadPoolExecutor(max(1, jobs)) as pool:
        futures = [
            pool.submit(_verify_image, client, image, releases[image.name], deep, notes) for image in plan.images
        ]
        checks = []
        for image, f in zip(plan.images, futures, strict=True):
            try:
                checks.append(f.result())
            except RegistryError as e:
                checks.append(ImageCheck(image.name, image.target.name, (e.message,), {}))
    return VerifyReport(str(target), tuple(checks), tuple(sorted(notes)))
