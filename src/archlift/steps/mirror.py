"""Copy every image of a release into another registry, digests preserved.

lock + target -> ``MirrorPlan`` (pure, ``plan_mirror``) -> ``mirror()`` ->
``MirrorResult``. The copy itself (whole indexes, referrers and cosign tags,
each blob once, mounts, verification while streaming, tags last, what keeps it
fast) is the one copy of every store, ``archlift.oci.copy``; here are what to
copy where and the report. Verification of a target against the release is
``archlift.checks.verify``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MirrorError
from ..lock import ComponentRelease, ReleaseLock
from ..oci import RegistryClient
from ..oci.copy import ImagePlan, ImageResult, NoProgress, Progress, copy, filter_platforms
from ..oci.store import RegistryStore, Source
from ..refs import ImageRef, Platform, RefError, normalized

__all__ = [
    "LAYOUTS",
    "REPOSITORY",
    "UPSTREAM",
    "Artifact",
    "ImagePlan",
    "ImageResult",
    "MirrorPlan",
    "MirrorResult",
    "NoProgress",
    "Progress",
    "Target",
    "check",
    "filter_platforms",
    "host_segment",
    "mirror",
    "names",
    "plan_mirror",
    "read_artifacts",
]


# ---------------------------------------------------------------------- the plan
REPOSITORY = "repository"  # PREFIX/<repository path>: each image once, where the release publishes it
UPSTREAM = "upstream"  # PREFIX/<registry host>/<repository path>, under every name an install may use
LAYOUTS = (REPOSITORY, UPSTREAM)


@dataclass(frozen=True)
class Target:
    """``REGISTRY[/PREFIX]`` and how images are placed under it (``layout``):

    - ``repository`` (the default): each image once, at ``PREFIX/<repository path>`` of the
      release's repository (``ghcr.io/example/app`` -> ``PREFIX/example/app``);
    - ``upstream``: at ``PREFIX/<host>/<repository path>`` for every name an install may pull
      it by (``names``), so that a node maps an upstream name onto the mirror by its registry
      host and the prefix alone (``archlift mirror-config``): ``gcr.io/x/reconciler`` ->
      ``PREFIX/gcr.io/x/reconciler``, ``busybox`` -> ``PREFIX/docker.io/library/busybox``,
      ``registry.example:5000/app`` -> ``PREFIX/registry.example_5000/app``.
    """

    registry: str
    prefix: str = ""
    layout: str = REPOSITORY

    @classmethod
    def parse(cls, text: str, option: str = "--to", layout: str = REPOSITORY) -> Target:
        if layout not in LAYOUTS:
            raise ConfigError(f"--layout {layout}: not a mirror layout (choose {' or '.join(LAYOUTS)})")
        clean = text.strip().strip("/")
        host, _, prefix = clean.partition("/")
        try:
            ref = ImageRef.parse(clean if "/" in clean else f"{clean}/x")
        except RefError as e:
            raise ConfigError(f"{option} {text}: {e}") from None
        if ref.registry != host or ref.tag or ref.digest:
            raise ConfigError(
                f"{option} {text}: expected REGISTRY[/PREFIX], such as registry.internal:5000/mirror "
                "(a registry host with a '.' or ':' or 'localhost', then an optional path; no tag or digest)"
            )
        return cls(host, prefix, layout)

    def map(self, repository: str) -> ImageRef:
        """Where ``registry/path`` (a lock's repository, or any name of an image) goes on this target."""
        src = normalized(repository)
        if self.layout == REPOSITORY:
            return src.in_registry(self.registry, self.prefix)
        path = f"{host_segment(src.registry)}/{src.repository}"
        try:
            return ImageRef.parse(f"{self.registry}/{self.prefix}/{path}" if self.prefix else f"{self.registry}/{path}")
        except RefError as e:
            raise ConfigError(f"{self}: {repository} has no place in the upstream layout ({e})") from None

    def places(self, comp: ComponentRelease) -> tuple[tuple[ImageRef, tuple[str, ...]], ...]:
        """Each repository of this target the component goes to, with the tags it gets there: the
        release's, and (upstream layout) the tag a name carries (``replaces: [gcr.io/x/app:v1]``)."""
        if self.layout == REPOSITORY:
            return ((self.map(comp.repository), comp.tags),)
        found: dict[ImageRef, list[str]] = {}
        for name in names(comp):
            tags = found.setdefault(self.map(name.name), list(comp.tags))
            if name.tag and name.tag not in tags:
                tags.append(name.tag)
        return tuple((dst, tuple(tags)) for dst, tags in found.items())

    def __str__(self) -> str:
        return f"{self.registry}/{self.prefix}" if self.prefix else self.registry


def host_segment(host: str) -> str:
    """The repository path component a registry host becomes in the upstream layout: the host in
    lower case, a port after '_' (a repository path cannot hold ':'; a host name cannot hold '_',
    so no two hosts share a segment). A host given as an IPv6 address has none."""
    if host.startswith("["):
        raise ConfigError(
            f"registry {host}: an IPv6 address cannot be a repository path component in the upstream "
            "layout; name the registry by a host name"
        )
    return host.lower().replace(":", "_")


def names(comp: ComponentRelease) -> tuple[ImageRef, ...]:
    """Every name an install may pull the component's image by, as docker names them (no digest;
    a tag when the name has one): the repository the release publishes it in (what a rendered
    install names), the names it replaces (images.yaml ``replaces:``, recorded in the lock), the
    image it was mirrored from (``source_image``)."""
    out: dict[str, ImageRef] = {}
    for text in (comp.repository, *comp.replaces, *((comp.source_image,) if comp.source_image else ())):
        ref = normalized(text)
        out.setdefault(ref.name + (f":{ref.tag}" if ref.tag else ""), ImageRef(ref.registry, ref.repository, ref.tag))
    return tuple(out.values())


@dataclass(frozen=True)
class MirrorPlan:
    target: Target
    images: tuple[ImagePlan, ...]
    platforms: tuple[str, ...] = ()  # a filter; () keeps every platform

    def to_json(self) -> dict[str, Any]:
        return {
            "target": str(self.target),
            "platforms": list(self.platforms),
            "images": [i.to_json() for i in self.images],
        }


@dataclass(frozen=True)
class Artifact:
    """A published OCI artifact that goes along with the images (the manifests artifact)."""

    name: str
    ref: ImageRef  # repository:tag@digest

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "ref": str(self.ref)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        ref = ImageRef.parse(str(data["ref"]))
        if ref.digest is None or ref.tag is None:
            raise ValueError(f"{ref} is not pinned as repository:tag@digest")
        return cls(str(data["name"]), ref)


def read_artifacts(path: Path) -> list[Artifact]:
    """The artifacts ``archlift publish`` recorded (``dist/manifests-artifact.json``); [] without the file."""
    try:
        data = json.loads(path.read_text())
        return [
            Artifact.from_json({"name": f"manifests ({key})", "ref": entry["ref"]})
            for key, entry in sorted((data.get("artifacts") or {}).items())
        ]
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError, AttributeError, RefError) as e:
        raise ConfigError(f"{path}: not a valid publish record ({e})") from None


def plan_mirror(
    lock: ReleaseLock,
    target: Target,
    platforms: Sequence[str] = (),
    components: Sequence[str] = (),
    *,
    onto_itself: bool = False,
    artifacts: Sequence[Artifact] = (),
) -> MirrorPlan:
    """Which images (and ``artifacts``) go where (pure: no registry is asked). ``onto_itself``
    allows a target equal to the source (an import restores a release where it came from)."""
    wanted = []
    for p in platforms:
        try:
            wanted.append(str(Platform.parse(p)))
        except RefError as e:
            raise ConfigError(f"--platform {p}: {e}") from None
    chosen: Iterable[ComponentRelease] = (
        [lock.component(n) for n in components] if components else lock.components.values()
    )
    images = []
    tagged: dict[tuple[ImageRef, str], ComponentRelease] = {}  # (target repository, tag) -> component
    for comp in sorted(chosen, key=lambda c: c.name):
        src = ImageRef.parse(comp.repository)
        if wanted and not set(wanted) & set(comp.platforms):
            raise ConfigError(
                f"--platform {', '.join(wanted)}: component '{comp.name}' has none of these "
                f"(it has {', '.join(sorted(comp.platforms))})"
            )
        children = tuple(sorted({*comp.platforms.values(), *comp.attestations.values()}))
        for dst, tags in target.places(comp):
            if src.registry == dst.registry and src.repository == dst.repository and not onto_itself:
                raise ConfigError(f"--to {target}: component '{comp.name}' would be copied onto itself ({src.name})")
            for tag in tags:
                other = tagged.setdefault((dst, tag), comp)
                if other.index_digest != comp.index_digest:
                    raise ConfigError(
                        f"--to {target}: components '{other.name}' and '{comp.name}' both go to {dst.name}:{tag} "
                        f"(the {target.layout} layout), with different digests",
                        hint="give each image its own name in images.yaml (image:, replaces:, tags:)",
                    )
            images.append(ImagePlan(comp.name, comp.ref, dst, tags, tuple(sorted(comp.platforms)), children))
    for art in artifacts:
        assert art.ref.digest is not None and art.ref.tag is not None
        dst = target.map(art.ref.name)
        if (art.ref.registry, art.ref.repository) == (dst.registry, dst.repository) and not onto_itself:
            raise ConfigError(f"--to {target}: artifact {art.ref} would be copied onto itself")
        images.append(ImagePlan(art.name, art.ref.with_digest(art.ref.digest), dst, (art.ref.tag,), ()))
    return MirrorPlan(target, tuple(images), tuple(wanted))


# ---------------------------------------------------------------------- the result
@dataclass(frozen=True)
class MirrorResult:
    target: str
    images: tuple[ImageResult, ...]
    seconds: float
    requests: int = 0
    error: str = ""  # the run failed as a whole, before or beside any image (a refused bundle, Ctrl-C)

    @property
    def ok(self) -> bool:
        return not self.error and not any(i.error for i in self.images)

    @property
    def bytes_sent(self) -> int:
        return sum(i.bytes_sent for i in self.images)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "error": self.error,
            "seconds": round(self.seconds, 3),
            "requests": self.requests,
            "bytes_sent": self.bytes_sent,
            "blobs_sent": sum(i.blobs_sent for i in self.images),
            "blobs_skipped": sum(i.blobs_skipped for i in self.images),
            "blobs_mounted": sum(i.blobs_mounted for i in self.images),
            "images": [i.to_json() for i in self.images],
        }

    def summary(self) -> str:
        mb = self.bytes_sent / 1e6
        rate = mb / self.seconds if self.seconds > 0 else 0.0
        fresh = sum(1 for i in self.images if i.up_to_date)
        lines = [
            f"mirrored {len(self.images)} image(s) to {self.target} in {self.seconds:.1f} s: "
            f"{sum(i.blobs_sent for i in self.images)} blob(s) sent ({mb:.1f} MB, {rate:.1f} MB/s), "
            f"{sum(i.blobs_mounted for i in self.images)} mounted, {sum(i.blobs_skipped for i in self.images)} "
            f"already there; {fresh} image(s) were up to date"
        ]
        for i in self.images:
            state = f"FAILED: {i.error}" if i.error else ("up to date" if i.up_to_date else "copied")
            lines.append(f"  {i.name}: {i.target} [{state}]")
            if i.dropped_platforms:
                lines.append(f"    dropped {', '.join(i.dropped_platforms)}: the index digest on the target is new")
        return "\n".join(lines)


def mirror(
    plan: MirrorPlan,
    client: RegistryClient,
    *,
    jobs: int = 8,
    progress: Progress | None = None,
    source: Source | None = None,
    tags_together: bool = False,
) -> MirrorResult:
    """Run the plan with ``client`` for the target (and the source registries, unless
    ``source`` is another store). Failures are per image (``ImageResult.error``); see ``check``.
    ``tags_together``: no tag of any image moves unless every image is there."""
    start = time.monotonic()
    requests_before = client.requests
    target = RegistryStore(client)
    images = copy(
        plan.images,
        source or target,
        target,
        platforms=plan.platforms,
        jobs=jobs,
        progress=progress or NoProgress(),
        tags_together=tags_together,
    )
    return MirrorResult(str(plan.target), images, time.monotonic() - start, client.requests - requests_before)


def check(result: MirrorResult) -> None:
    """Raise ``MirrorError`` naming every image that failed."""
    failed = [i for i in result.images if i.error]
    if failed:
        raise MirrorError(
            f"{len(failed)} of {len(result.images)} image(s) were not mirrored to {result.target}; "
            "their tags were not moved:\n" + "\n".join(f"  {i.name}: {i.error}" for i in failed),
            hint="run the same command again: what is already there is skipped",
        )
