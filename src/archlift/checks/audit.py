"""Platform coverage: which platforms each image really has in its registry.

Two halves. Finding images is pure: :func:`collect` turns targets (manifest
files or directories, an images.yaml, a release lock, image references) into
:class:`Target` values, each with the platforms wanted and where it was found.
Inspecting asks the registry: :func:`inspect` reads the manifest (every
platform of an index, BuildKit attestations inside it, referrers of it, the
config of a single-platform image) and returns an :class:`ImageReport`;
:func:`audit` does that for every target. The parsing under both is pure
functions over the JSON and YAML the tools read, tested without a registry.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import yaml

from ..config.loader import BoundedLoader, YAMLBudgetError
from ..config.model import DEFAULT_PLATFORMS, Component, Config, load_config
from ..errors import ArchliftError, ConfigError
from ..lock import ReleaseLock
from ..oci.model import ATTESTATION_ANNOTATION, ATTESTATION_FOR, ATTESTATION_VALUE
from ..refs import Digest, ImageRef, Platform, RefError

if TYPE_CHECKING:
    from .binaries import Checker, PlatformBinaries

SOURCE_KEY = "org.opencontainers.image.source"
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
MANIFEST_SUFFIXES = (".yaml", ".yml")
PREDICATE_TYPE = "in-toto.io/predicate-type"
# Build args whose value is an image: GOLANG_IMAGE, BASE_IMAGE, BASE, FROM_IMAGE, ...
_IMAGE_ARG_WORDS = ("IMAGE", "BASE", "FROM")
# Tag template fields that images.yaml alone can fill (inputs and patches need the build).
_TAG_FIELDS_KNOWN = ("version", "commit", "short_commit", "state", "component")


def default_platforms() -> tuple[Platform, ...]:
    return tuple(Platform.parse(p) for p in DEFAULT_PLATFORMS)


# --- what to audit ------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """One image to inspect: the reference as written, the platforms wanted, where it was found."""

    text: str
    wanted: tuple[Platform, ...]
    where: tuple[str, ...] = ()


def merge_targets(targets: Iterable[Target]) -> list[Target]:
    """One target per reference text, in first-seen order: platforms and places joined."""
    merged: dict[str, Target] = {}
    for t in targets:
        old = merged.get(t.text)
        if old is None:
            merged[t.text] = t
            continue
        wanted = old.wanted + tuple(p for p in t.wanted if p not in old.wanted)
        where = old.where + tuple(w for w in t.where if w not in old.where)
        merged[t.text] = replace(old, wanted=wanted, where=where)
    return list(merged.values())


def _load_all(text: str) -> list[Any]:
    """The documents of a YAML stream, read within the alias and depth budget (config.loader)."""
    return list(yaml.load_all(text, Loader=BoundedLoader))


def _images_in_containers(node: Any, path: str, nested: dict[str, list[Any]]) -> Iterator[tuple[str, str]]:
    """(image, path) for every container of any list named containers/initContainers/ephemeralContainers,
    at any depth; strings that hold YAML (a ConfigMap carrying a Deployment) are read too, each
    distinct string once (``nested``: its documents, or [] when it is not YAML)."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if key in CONTAINER_LISTS and isinstance(value, list):
                for i, container in enumerate(value):
                    image = container.get("image") if isinstance(container, dict) else None
                    if isinstance(image, str) and image:
                        yield image, f"{sub}[{i}]"
            yield from _images_in_containers(value, sub, nested)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _images_in_containers(value, f"{path}[{i}]", nested)
    elif isinstance(node, str) and "\n" in node and "image:" in node:
        if node not in nested:
            try:
                nested[node] = _load_all(node)
            except yaml.YAMLError:
                nested[node] = []
        for doc in nested[node]:
            if isinstance(doc, (dict, list)):
                yield from _images_in_containers(doc, path + ">", nested)


def images_in_yaml(text: str, label: str) -> list[tuple[str, str]]:
    """(image, where) for every container image in a YAML stream; ``where`` is ``label#doc:path``."""
    try:
        docs = _load_all(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        what = "" if isinstance(e, YAMLBudgetError) else "not valid YAML: "
        raise ConfigError(f"{label}{at}: {what}{getattr(e, 'problem', None) or e}") from None
    found = []
    nested: dict[str, list[Any]] = {}
    for n, doc in enumerate(docs):
        kind = doc.get("kind", "") if isinstance(doc, dict) else ""
        name = (doc.get("metadata") or {}).get("name", "") if isinstance(doc, dict) else ""
        what = f"{kind}/{name}" if kind and isinstance(name, str) and name else f"document {n + 1}"
        for image, path in _images_in_containers(doc, "", nested):
            found.append((image, f"{label} {what} {path}"))
    return found


def is_config_document(data: Any) -> bool:
    """An images.yaml rather than Kubernetes manifests: a mapping with 'components' and no 'kind'."""
    return isinstance(data, dict) and "components" in data and "kind" not in data and "apiVersion" not in data


def is_lock_document(data: Any) -> bool:
    return isinstance(data, dict) and "schema_version" in data and isinstance(data.get("components"), dict)


def published_tag(comp: Component) -> str | None:
    """The first tag template of a built component that images.yaml alone can fill, filled; else None."""
    src = comp.source
    if src is None:
        return None
    commit = src.commit or ""
    values = {
        "version": src.ref or "",
        "commit": commit,
        "short_commit": commit[:9],
        "state": "dirty" if src.patches or src.path else "clean",
        "component": comp.name,
    }
    for template in comp.tags:
        try:
            tag = template.format(**{k: values[k] for k in _TAG_FIELDS_KNOWN})
        except (KeyError, IndexError):
            continue
        if "{version}" in template and not values["version"]:
            continue
        if "commit}" in template and not commit:
            continue
        return tag
    return None


def _is_image_arg(name: str, value: str) -> bool:
    if not any(word in name.upper() for word in _IMAGE_ARG_WORDS) or "{" in value:
        return False
    try:
        ImageRef.parse(value)
    except RefError:
        return False
    return True


def targets_from_config(config: Config, label: str) -> list[Target]:
    """A release definition's images: each mirror's third-party image, each built component's
    published image (by its first tag images.yaml can fill), and the base images its builds
    name (build args such as GOLANG_IMAGE, ``docker-image://`` named contexts)."""
    out: list[Target] = []
    for comp in config.components.values():
        wanted = comp.platforms
        if comp.mirror is not None:
            out.append(Target(str(comp.mirror), wanted, (f"{label} components.{comp.name}.mirror",)))
            continue
        tag = published_tag(comp)
        image = str(comp.image.with_tag(tag)) if tag else str(comp.image)
        out.append(Target(image, wanted, (f"{label} components.{comp.name} (published)",)))
        build = comp.build
        if build is None:
            continue
        for name, value in sorted(build.args.items()):
            if _is_image_arg(name, value):
                out.append(Target(value, wanted, (f"{label} components.{comp.name}.build.args.{name}",)))
        for name, value in sorted(build.contexts.items()):
            if value.startswith("docker-image://"):
                ref = value.removeprefix("docker-image://")
                out.append(Target(ref, wanted, (f"{label} components.{comp.name}.build.contexts.{name}",)))
    return out


def targets_from_lock(lock: ReleaseLock, label: str) -> list[Target]:
    """A release lock's images, by digest, each wanting the platforms the lock says it has."""
    out = []
    for name, c in sorted(lock.components.items()):
        wanted = tuple(Platform.parse(p) for p in sorted(c.platforms))
        out.append(Target(str(c.ref), wanted, (f"{label} components.{name}",)))
    return out


def _manifest_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix in MANIFEST_SUFFIXES)


def _targets_from_file(path: Path, wanted: tuple[Platform, ...] | None) -> list[Target]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
        if not is_lock_document(data):
            raise ConfigError(f"{path}: a JSON file here must be an archlift release lock")
        found = targets_from_lock(ReleaseLock.read(path), str(path))
    else:
        try:
            first = next(iter(yaml.load_all(text, Loader=BoundedLoader)), None)
        except yaml.YAMLError:
            first = None  # images_in_yaml reports where
        if is_config_document(first):
            found = targets_from_config(load_config(path), str(path))
        else:
            plats = wanted or default_platforms()
            found = [Target(image, plats, (where,)) for image, where in images_in_yaml(text, str(path))]
    if wanted:
        found = [replace(t, wanted=wanted) for t in found]
    return found


def _reference_arg(arg: str) -> str:
    """An image reference given on the command line: with a tag or digest, so that a
    mistyped path ("dist/manifest") is not taken for an image on Docker Hub."""
    looks_like_path = arg.startswith(("./", "../", "/", "~")) or arg.endswith((*MANIFEST_SUFFIXES, ".json"))
    try:
        ref = ImageRef.parse(arg)
    except RefError as e:
        raise ConfigError(f"'{arg}' is neither a file, a directory nor an image reference: {e}") from None
    if looks_like_path or (ref.tag is None and ref.digest is None):
        raise ConfigError(
            f"'{arg}': no such file or directory, and not an image reference with a tag or digest",
            hint="name images as REPOSITORY:TAG or REPOSITORY@sha256:...",
        )
    return arg


def collect(args: Sequence[str], wanted: Sequence[Platform] = ()) -> list[Target]:
    """Targets for ``archlift audit ARG...``: a file or directory of manifests, an images.yaml,
    a release lock (.json), or an image reference. ``wanted`` overrides the platforms."""
    override = tuple(wanted) or None
    targets: list[Target] = []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            files = _manifest_files(path)
            if not files:
                raise ConfigError(f"{arg}: no .yaml or .yml files in this directory")
            for f in files:
                targets += _targets_from_file(f, override)
        elif path.is_file():
            targets += _targets_from_file(path, override)
        else:
            targets.append(Target(_reference_arg(arg), override or default_platforms(), ("command line",)))
    return merge_targets(targets)


# --- what the registry says (pure parsing) ----------------------------------------------
@dataclass(frozen=True)
class IndexEntries:
    platforms: dict[str, Digest]  # "linux/arm64" -> manifest digest, first one wins
    attestations: dict[Digest, Digest]  # attestation manifest -> the manifest it is about
    annotations: dict[str, str]


def _platform_text(p: Mapping[str, Any]) -> str:
    return str(Platform.from_oci({k: str(v) for k, v in p.items() if k in ("os", "architecture", "variant")}))


def parse_index(doc: Mapping[str, Any]) -> IndexEntries:
    """Platforms and BuildKit attestation manifests of an OCI index or Docker manifest list."""
    platforms: dict[str, Digest] = {}
    attestations: dict[Digest, Digest] = {}
    for entry in doc.get("manifests") or ():
        if not isinstance(entry, dict) or "digest" not in entry:
            continue
        digest = Digest.parse(str(entry["digest"]))
        notes = entry.get("annotations") or {}
        plat: dict[str, Any] = entry["platform"] if isinstance(entry.get("platform"), dict) else {}
        is_attestation = notes.get(ATTESTATION_ANNOTATION) == ATTESTATION_VALUE or (
            plat.get("os") == "unknown" and plat.get("architecture") == "unknown"
        )
        if is_attestation:
            about = notes.get(ATTESTATION_FOR)
            if about:
                attestations[digest] = Digest.parse(str(about))
            continue
        if plat:
            platforms.setdefault(_platform_text(plat), digest)
    notes = doc.get("annotations") or {}
    return IndexEntries(platforms, attestations, {str(k): str(v) for k, v in notes.items()})


def config_platform(config: Mapping[str, Any]) -> str:
    """The platform an image config declares (os/architecture[/variant]); "" when it declares none."""
    if not config.get("os") or not config.get("architecture"):
        return ""
    return _platform_text(config)


def config_labels(config: Mapping[str, Any]) -> dict[str, str]:
    inner = config.get("config")
    labels = inner.get("Labels") if isinstance(inner, dict) else None
    return {str(k): str(v) for k, v in (labels or {}).items()}


def predicate_kinds(attestation_manifest: Mapping[str, Any]) -> list[str]:
    """What an attestation manifest holds: 'provenance', 'sbom', or the predicate type itself."""
    kinds = []
    for layer in attestation_manifest.get("layers") or ():
        ptype = str((layer.get("annotations") or {}).get(PREDICATE_TYPE, "")) if isinstance(layer, dict) else ""
        if not ptype:
            continue
        kind = predicate_kind(ptype)
        if kind not in kinds:
            kinds.append(kind)
    return kinds


def predicate_kind(ptype: str) -> str:
    if "slsa.dev/provenance" in ptype:
        return "provenance"
    if "spdx.dev" in ptype or "cyclonedx" in ptype:
        return "sbom"
    return ptype


def referrer_kind(artifact_type: str) -> str:
    """A short word for a referrer's artifact type (cosign signatures, SBOMs, attestations)."""
    t = artifact_type.lower()
    if "sig" in t and ("cosign" in t or "notary" in t or "signature" in t):
        return "signature"
    if "spdx" in t or "cyclonedx" in t or "sbom" in t:
        return "sbom"
    if "in-toto" in t or "attestation" in t or "provenance" in t:
        return "attestation"
    return artifact_type or "artifact"


def missing_platforms(wanted: Sequence[Platform], available: Iterable[str]) -> tuple[str, ...]:
    have = set(available)
    return tuple(str(p) for p in wanted if str(p) not in have)


# --- inspecting ---------------------------------------------------------------------------
class ManifestLike(Protocol):
    @property
    def digest(self) -> Digest: ...

    def json(self) -> dict[str, Any]: ...

    @property
    def is_index(self) -> bool: ...


class DescriptorLike(Protocol):
    @property
    def media_type(self) -> str: ...

    @property
    def artifact_type(self) -> str: ...


class Registry(Protocol):
    """What audit needs of :class:`archlift.oci.RegistryClient`."""

    def get_manifest(self, ref: ImageRef) -> ManifestLike: ...

    def get_blob(self, repo: ImageRef, digest: Digest) -> bytes: ...

    def referrers(self, repo: ImageRef, digest: Digest) -> Sequence[DescriptorLike]: ...


@dataclass(frozen=True)
class ImageReport:
    target: Target
    digest: str = ""
    kind: str = ""  # "index" | "image"
    platforms: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    source: str = ""
    attestations: dict[str, tuple[str, ...]] = field(default_factory=dict)  # platform -> kinds
    referrers: dict[str, int] = field(default_factory=dict)  # kind -> count
    error: str = ""
    binaries_checked: bool = False  # audit --binaries
    binaries: tuple[PlatformBinaries, ...] = ()  # one per platform the image has
    binaries_error: str = ""

    @property
    def binaries_ok(self) -> bool:
        return not self.binaries_error and all(b.ok for b in self.binaries)

    @property
    def ok(self) -> bool:
        return not self.error and not self.missing and self.binaries_ok

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.target.text,
            "where": list(self.target.where),
            "wanted": [str(p) for p in self.target.wanted],
            "digest": self.digest,
            "kind": self.kind,
            "platforms": list(self.platforms),
            "missing": list(self.missing),
            "source": self.source,
            "attestations": {k: list(v) for k, v in sorted(self.attestations.items())},
            "referrers": dict(sorted(self.referrers.items())),
            "error": self.error,
            **(
                {"binaries": [b.to_json() for b in self.binaries], "binaries_error": self.binaries_error}
                if self.binaries_checked
                else {}
            ),
            "ok": self.ok,
        }


def _json_blob(registry: Registry, repo: ImageRef, digest: Digest) -> dict[str, Any]:
    doc = json.loads(registry.get_blob(repo, digest))
    if not isinstance(doc, dict):
        raise ValueError(f"blob {digest.short()} is not a JSON object")
    return doc


def _image_details(registry: Registry, ref: ImageRef, manifest: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """(platform, labels) of one image manifest, from its config blob."""
    config = manifest.get("config")
    if not isinstance(config, dict) or "digest" not in config:
        return "", {}
    doc = _json_blob(registry, ref, Digest.parse(str(config["digest"])))
    return config_platform(doc), config_labels(doc)


def inspect(registry: Registry, target: Target, checker: Checker | None = None) -> ImageReport:
    """Ask the registry what ``target`` has; failures become the report's ``error``. With ``checker``,
    also whether the binaries of each platform it has are for that platform (``audit --binaries``)."""
    try:
        ref = ImageRef.parse(target.text)
    except RefError as e:
        return ImageReport(target, missing=tuple(map(str, target.wanted)), error=f"not an image reference: {e}")
    try:
        report, manifests, listed = _inspect(registry, ref, target)
    except (ArchliftError, ValueError, KeyError, TypeError) as e:
        message = _message(e)
        return ImageReport(target, missing=tuple(map(str, target.wanted)), error=message.splitlines()[0])
    if checker is None:
        return report
    from .binaries import platform_of

    repo = ImageRef(ref.registry, ref.repository)
    try:
        found = tuple(checker.check(repo, d, platform_of(p), listed=listed) for p, d in sorted(manifests.items()))
    except (ArchliftError, ValueError, KeyError, TypeError) as e:
        return replace(report, binaries_checked=True, binaries_error=_message(e).splitlines()[0])
    return replace(report, binaries_checked=True, binaries=found)


def _message(e: Exception) -> str:
    return e.message if isinstance(e, ArchliftError) else f"unexpected manifest content: {e}"


def _inspect(registry: Registry, ref: ImageRef, target: Target) -> tuple[ImageReport, dict[str, Digest], bool]:
    """The report, each platform's manifest digest, and whether those platforms are an index's listing."""
    top = registry.get_manifest(ref)
    doc = top.json()
    attestations: dict[str, tuple[str, ...]] = {}
    if top.is_index:
        entries = parse_index(doc)
        platforms = dict(entries.platforms)
        source = entries.annotations.get(SOURCE_KEY, "")
        by_digest = {d: p for p, d in platforms.items()}
        for att, about in entries.attestations.items():
            att_doc = registry.get_manifest(ref.with_digest(att)).json()
            plat = by_digest.get(about, str(about))
            attestations[plat] = tuple(predicate_kinds(att_doc)) or ("attestation",)
        if not source and platforms:
            first = next((d for p, d in platforms.items() if p in map(str, target.wanted)), None)
            first = first or next(iter(platforms.values()))
            child = registry.get_manifest(ref.with_digest(first)).json()
            source = str((child.get("annotations") or {}).get(SOURCE_KEY, ""))
            if not source:
                source = _image_details(registry, ref, child)[1].get(SOURCE_KEY, "")
        kind = "index"
    else:
        plat, labels = _image_details(registry, ref, doc)
        platforms = {plat: top.digest} if plat else {}
        source = str((doc.get("annotations") or {}).get(SOURCE_KEY, "")) or labels.get(SOURCE_KEY, "")
        kind = "image"
    referrers: dict[str, int] = {}
    for d in registry.referrers(ref, top.digest):
        k = referrer_kind(d.artifact_type or d.media_type)
        referrers[k] = referrers.get(k, 0) + 1
    report = ImageReport(
        target,
        digest=str(top.digest),
        kind=kind,
        platforms=tuple(sorted(platforms)),
        missing=missing_platforms(target.wanted, platforms),
        source=source,
        attestations=attestations,
        referrers=referrers,
    )
    return report, platforms, top.is_index


def audit(
    registry: Registry, targets: Sequence[Target], workers: int = 4, checker: Checker | None = None
) -> list[ImageReport]:
    """Inspect every target (a few at once); reports in the targets' order. With ``checker``, the
    binaries of every platform of every image are checked too (layers shared between images read once)."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(targets)))) as pool:
        return list(pool.map(lambda t: inspect(registry, t, checker), targets))


# --- output -------------------------------------------------------------------------------
TABLE_HEADERS = ("IMAGE", "PLATFORMS", "MISSING", "SOURCE", "NOTES")


def _notes(r: ImageReport) -> str:
    if r.error:
        return f"error: {r.error}"
    parts = []
    kinds = sorted({k for ks in r.attestations.values() for k in ks})
    if kinds:
        parts.append(f"attested ({', '.join(kinds)}) for {len(r.attestations)} platform(s)")
    parts += [f"{n} {k} referrer(s)" for k, n in sorted(r.referrers.items())]
    return "; ".join(parts)


def binaries_cell(r: ImageReport) -> str:
    """``ok``, or the mismatches of each platform (the first path, its machine, a count)."""
    if r.error:
        return "-"
    if r.binaries_error:
        return f"error: {r.binaries_error}"
    if not r.binaries:
        return "-"
    bad = [b.summary() for b in r.binaries if not b.ok]
    if bad:
        return "; ".join(bad)
    unchecked = [b.platform for b in r.binaries if not b.checked]
    return "ok" + (f" ({', '.join(unchecked)} not checked: no ELF machine known)" if unchecked else "")


def table_rows(reports: Sequence[ImageReport], binaries: bool = False) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for r in reports:
        row = (r.target.text, ", ".join(r.platforms) or "-", ", ".join(r.missing) or "-", r.source or "-")
        rows.append((*row, binaries_cell(r), _notes(r)) if binaries else (*row, _notes(r)))
    return rows


def format_table(reports: Sequence[ImageReport], binaries: bool = False) -> str:
    headers = (*TABLE_HEADERS[:-1], "BINARIES", TABLE_HEADERS[-1]) if binaries else TABLE_HEADERS
    rows = [headers, *table_rows(reports, binaries)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(headers) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def summary(reports: Sequence[ImageReport]) -> str:
    bad = [r for r in reports if not r.ok]
    checked = any(r.binaries_checked for r in reports)
    if not bad:
        also = ", and their binaries are for their platforms" if checked else ""
        return f"{len(reports)} image(s): every wanted platform is there{also}"
    missing = sum(1 for r in bad if r.missing and not r.error)
    failed = sum(1 for r in bad if r.error or r.binaries_error)
    wrong = sum(1 for r in bad if not r.error and not all(b.ok for b in r.binaries))
    parts = [f"{missing} missing a wanted platform"] if missing else []
    parts += [f"{wrong} with binaries of another machine"] if wrong else []
    parts += [f"{failed} could not be inspected"] if failed else []
    return f"{len(reports)} image(s): {', '.join(parts)}"
