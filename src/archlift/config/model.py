"""images.yaml loaded into frozen, validated values (see docs/images-yaml.md).

``load_config(path)`` is the only entry point. Every problem raises a
:class:`ConfigError` naming file:line:column and the field path.
"""

from __future__ import annotations

import dataclasses
import re
import string
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from ..errors import ConfigError
from ..refs import ImageRef, Platform, RefError, context_name, is_tag
from .loader import BoundedLoader, Field, closest, compose

FORMAT_VERSION = 1
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")
DEFAULT_TAGS = ("{version}", "git-{short_commit}-{state}")
TAG_FIELDS = ("version", "commit", "short_commit", "state", "component", "inputs", "patches")
_SAMPLE = {
    "version": "v1.0.0",
    "commit": "0" * 40,
    "short_commit": "0" * 9,
    "state": "clean",
    "component": "name",
    "inputs": "0" * 12,
    "patches": "0" * 12,
}
NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]*[a-z0-9])?$"
_NAME_RE = re.compile(NAME_PATTERN)
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
CONTEXT_PREFIXES = ("docker-image://", "oci-layout://", "target:", "https://", "http://", "git@", "git://")

TOP_KEYS = (
    "archlift",
    "registry",
    "platforms",
    "tags",
    "concurrency",
    "builder",
    "cache",
    "attestations",
    "reproducible",
    "sources",
    "components",
    "manifests",
)
SOURCE_KEYS = ("git", "path", "ref", "commit", "patches", "build")
COMPONENT_KEYS = (
    "image",
    "source",
    "mirror",
    "patches",
    "build",
    "platforms",
    "tags",
    "replaces",
    "description",
    "binaries",
)
BINARIES_KEYS = ("check", "allow", "reason")
BUILD_KEYS = ("context", "dockerfile", "dockerfile_local", "target", "args", "contexts")
CACHE_KEYS = ("type", "repository")
MANIFESTS_KEYS = ("templates", "values", "upstream")
UPSTREAM_KEYS = ("path", "source")


@dataclass(frozen=True)
class BuildSpec:
    context: str = "."
    dockerfile: str = "Dockerfile"
    dockerfile_local: Path | None = None  # a Dockerfile this repository supplies
    target: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, str] = field(default_factory=dict)  # key as written -> context
    # key -> "file:line:col: field path" in images.yaml, for errors found once the Dockerfile is read
    context_locations: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def named_contexts(self) -> dict[str, str]:
        """The contexts keyed by the names BuildKit looks them up by (refs.context_name): what bake gets."""
        return {context_name(k): v for k, v in self.contexts.items()}


@dataclass(frozen=True)
class Source:
    name: str
    git: str | None  # URL or absolute path of a git repository
    path: Path | None  # a local directory used as it is
    ref: str | None
    commit: str | None  # pinned commit: a ref that resolves elsewhere is an error
    patches: tuple[Path, ...]
    build: dict[str, Any]  # defaults for components built from it (raw, merged in _build)

    @property
    def location(self) -> str:
        return self.git or str(self.path)


@dataclass(frozen=True)
class BinariesPolicy:
    """What the check that binaries match their platform does for one component (see checks/binaries.py)."""

    check: str = "fail"  # fail: a mismatch fails the component | warn: a warning (mirrored components' default)
    allow: tuple[str, ...] = ()  # path patterns that may hold binaries of another machine, on purpose
    reason: str = ""  # why (required with allow)


@dataclass(frozen=True)
class Component:
    name: str
    image: ImageRef  # repository, no tag
    source: Source | None
    mirror: ImageRef | None
    build: BuildSpec | None
    platforms: tuple[Platform, ...]
    tags: tuple[str, ...]
    replaces: tuple[str, ...] = ()
    description: str = ""
    binaries: BinariesPolicy = BinariesPolicy()

    @property
    def kind(self) -> str:
        return "mirror" if self.mirror else "build"


@dataclass(frozen=True)
class CacheConfig:
    type: str = "registry"  # registry | none
    repository: str = "{repository}-cache"

    def ref_for(self, image: ImageRef) -> ImageRef | None:
        if self.type == "none":
            return None
        return ImageRef.parse(self.repository.format(repository=image.name) + ":buildcache")


@dataclass(frozen=True)
class UpstreamManifest:
    path: str
    source: str | None = None


@dataclass(frozen=True)
class ManifestsConfig:
    templates: Path | None = None
    values: dict[str, Any] = field(default_factory=dict)
    upstream: tuple[UpstreamManifest, ...] = ()


@dataclass(frozen=True)
class Config:
    path: Path
    registry: str
    platforms: tuple[Platform, ...]
    tags: tuple[str, ...]
    concurrency: int
    builder: str
    cache: CacheConfig
    provenance: bool
    sbom: bool
    sbom_generator: str
    reproducible: bool  # SOURCE_DATE_EPOCH from the upstream commit, layer timestamps rewritten
    sources: dict[str, Source]
    components: dict[str, Component]
    manifests: ManifestsConfig

    @property
    def root(self) -> Path:
        return self.path.parent.resolve()

    def select(self, names: list[str] | None) -> list[Component]:
        """Components by name (all when ``names`` is empty), with a clear error for unknown names."""
        if not names:
            return list(self.components.values())
        out = []
        for name in names:
            if name not in self.components:
                hint = closest(name, list(self.components)) or f"components: {', '.join(self.components)}"
                raise ConfigError(f"{self.path}: no component named '{name}'", hint=hint)
            out.append(self.components[name])
        return out


# --- loading --------------------------------------------------------------


def load_config(path: Path | str, *, registry: str | None = None) -> Config:
    """Load and validate ``path``; ``registry`` overrides the file's registry."""
    path = Path(path)
    base = path.parent.resolve()
    root = compose(path)
    if not root.is_mapping():
        raise root.expected("a mapping with 'components:' at the top level")
    top = root.mapping(TOP_KEYS)
    if "archlift" in top and top["archlift"].integer() != FORMAT_VERSION:
        raise top["archlift"].error(f"format version {top['archlift'].node.value} is not supported (expected 1)")
    reg = registry or (top["registry"].nonempty("a registry host and prefix") if "registry" in top else "localhost")
    _check_registry(reg, top.get("registry", root))
    platforms = _platforms(top["platforms"]) if "platforms" in top else tuple(map(Platform.parse, DEFAULT_PLATFORMS))
    tags = _tags(top["tags"]) if "tags" in top else DEFAULT_TAGS
    sources = {n: _source(n, f, base) for n, f in top["sources"].items()} if "sources" in top else {}
    if "components" not in top:
        raise root.error("no 'components:' section", "list the images to build or mirror under 'components:'")
    ctx = _Defaults(reg, platforms, tags, sources, base)
    components = {n: _component(n, f, ctx) for n, f in top["components"].items()}
    if not components:
        raise top["components"].error("no components", "add at least one component")
    _check_unique_images(components, top["components"])
    return Config(
        path=path,
        registry=reg,
        platforms=platforms,
        tags=tags,
        concurrency=top["concurrency"].integer(minimum=1) if "concurrency" in top else 2,
        builder=top["builder"].string() if "builder" in top else "",
        cache=_cache(top["cache"]) if "cache" in top else CacheConfig(),
        provenance=_attest(top, "provenance"),
        sbom=_attest(top, "sbom"),
        sbom_generator=_sbom_generator(top),
        reproducible=top["reproducible"].boolean() if "reproducible" in top else True,
        sources=sources,
        components=components,
        manifests=_manifests(top["manifests"], base, sources) if "manifests" in top else ManifestsConfig(),
    )


@dataclass(frozen=True)
class _Defaults:
    registry: str
    platforms: tuple[Platform, ...]
    tags: tuple[str, ...]
    sources: dict[str, Source]
    root: Path


def _check_registry(value: str, f: Field) -> None:
    try:
        ImageRef.parse(value.rstrip("/") + "/probe")
    except RefError as e:
        raise f.error(f"'{value}' is not a registry host with an optional path prefix ({e})") from None
    if "." not in value.split("/")[0] and ":" not in value.split("/")[0] and not value.startswith("localhost"):
        raise f.error(
            f"'{value}' does not start with a registry host",
            "write the host first, e.g. ghcr.io/acme or 127.0.0.1:5000/demo",
        )


def _platforms(f: Field) -> tuple[Platform, ...]:
    out: list[Platform] = []
    for item in f.sequence("a list of platforms such as [linux/amd64, linux/arm64]"):
        try:
            platform = Platform.parse(item.nonempty())
        except RefError as e:
            raise item.error(str(e), closest(item.string(), list(_known_platforms()))) from None
        if platform in out:
            raise item.error(f"platform '{platform}' is listed twice")
        out.append(platform)
    if not out:
        raise f.error("the platform list is empty")
    return tuple(out)


def _known_platforms() -> tuple[str, ...]:
    from ..refs import KNOWN_PLATFORMS

    return KNOWN_PLATFORMS


def _tags(f: Field) -> tuple[str, ...]:
    out = []
    for item in f.sequence("a list of tag templates"):
        template = item.nonempty()
        try:
            names = [n for _, n, _, _ in string.Formatter().parse(template) if n is not None]
        except ValueError as e:
            raise item.error(f"'{template}' is not a valid template ({e})") from None
        for name in names:
            if name not in TAG_FIELDS:
                hint = closest(name, TAG_FIELDS) or f"fields: {', '.join('{' + n + '}' for n in TAG_FIELDS)}"
                raise item.error(f"unknown template field '{{{name}}}' in '{template}'", hint)
        if not is_tag(template.format(**_SAMPLE)):
            raise item.error(
                f"'{template}' does not make a valid tag", "tags use letters, digits, '_', '.', '-' (at most 128)"
            )
        out.append(template)
    return tuple(out)


def _relative_path(f: Field, what: str) -> str:
    """A path that must stay inside its tree: relative, no '..' escaping."""
    value = f.nonempty()
    pure = PurePosixPath(value)
    if pure.is_absolute() or _escapes(pure):
        raise f.error(f"{what} '{value}' is outside the source tree", "use a path relative to the source root")
    return value


def _escapes(p: PurePosixPath) -> bool:
    depth = 0
    for part in p.parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return True
    return False


def _build(f: Field | None, defaults: dict[str, Any], root: Path) -> BuildSpec:
    data = dict(defaults)
    own = f.mapping(BUILD_KEYS) if f is not None else {}
    if "dockerfile" in own and "dockerfile_local" in own:
        raise own["dockerfile_local"].error("give either 'dockerfile' or 'dockerfile_local', not both")
    if "dockerfile_local" in own:
        data.pop("dockerfile", None)
    data.update(own)
    spec: dict[str, Any] = {}
    for key in ("context", "dockerfile"):
        if key in data:
            spec[key] = _relative_path(data[key], "the build context" if key == "context" else "the Dockerfile")
    if "dockerfile_local" in data:
        local_field = data["dockerfile_local"]
        local = (root / local_field.nonempty()).resolve()
        if not local.is_file():
            raise local_field.error(f"Dockerfile '{local}' does not exist", "the path is relative to images.yaml")
        spec["dockerfile_local"] = local
    if "target" in data:
        spec["target"] = data["target"].nonempty()
    if "args" in data:
        spec["args"] = data["args"].string_map()
    if "contexts" in data:
        spec["contexts"], spec["context_locations"] = _contexts(data["contexts"])
    build = BuildSpec(**spec)
    if build.dockerfile_local and build.contexts and not any("{" in v for v in build.args.values()):
        # a Dockerfile of this repository: its named contexts are checked now (a build arg with a
        # tag field such as {version} has its value only when the build is planned: checked then)
        from ..steps.dockerfile import check_contexts

        local_field = data["dockerfile_local"]
        try:
            text = build.dockerfile_local.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise local_field.error(f"cannot read the Dockerfile '{build.dockerfile_local}' ({e})") from None
        check_contexts(text, build.args, build)
    return build


def _contexts(f: Field) -> tuple[dict[str, str], dict[str, str]]:
    """Named contexts (key -> context) and where each key is written."""
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    seen: dict[str, str] = {}  # the name BuildKit looks up -> key
    for (name, value), key_field in zip(f.items(), f.key_fields().values(), strict=True):
        if "::" in name:
            raise key_field.error(
                f"'{name}': a context for one platform (NAME::PLATFORM) is not supported",
                "give one context for every platform, such as docker-image:// of a multi-platform image",
            )
        try:
            looked_up = context_name(name)
        except RefError as e:
            raise key_field.error(
                f"'{name}' is not a name a Dockerfile can use for a named context ({e})",
                "name it as the FROM line does (an image reference or a stage name)",
            ) from None
        if looked_up in seen:
            raise key_field.error(
                f"'{name}' and '{seen[looked_up]}' name the same context (BuildKit looks both up as '{looked_up}')",
                "keep one of them",
            )
        seen[looked_up] = name
        text = value.nonempty()
        if not text.startswith(CONTEXT_PREFIXES) and not text.startswith(("./", "../", "/")):
            raise value.error(
                f"'{text}' is not a build context",
                "use docker-image://REF, oci-layout://PATH, target:STAGE, a URL, or a local path starting with ./",
            )
        if text.startswith("docker-image://"):
            try:
                ImageRef.parse(text.removeprefix("docker-image://"))
            except RefError as e:
                raise value.error(str(e)) from None
        out[name] = text
        where[name] = f"{key_field.where()}: {key_field.path}"
    return out, where


def _patches(f: Field, root: Path) -> tuple[Path, ...]:
    out = []
    for item in f.sequence("a list of patch files"):
        p = (root / item.nonempty()).resolve()
        if not p.is_file():
            raise item.error(f"patch file '{item.string()}' does not exist", f"paths are relative to {root}")
        out.append(p)
    return tuple(out)


def default_patches(root: Path, name: str) -> tuple[Path, ...]:
    directory = root / "patches" / name
    return tuple(sorted(directory.glob("*.patch"))) if directory.is_dir() else ()


def _source(name: str, f: Field, root: Path, patch_name: str | None = None) -> Source:
    fields = f.mapping(SOURCE_KEYS)
    if "git" in fields and "path" in fields:
        raise f.error("give either 'git' (a repository to clone) or 'path' (a local directory), not both")
    if "git" not in fields and "path" not in fields:
        raise f.error("a source needs 'git' (a repository URL or path) or 'path' (a local directory)")
    git = path = None
    if "git" in fields:
        git = fields["git"].nonempty("a git URL or a path to a git repository")
        if "://" not in git and not git.startswith("git@"):
            git = str((root / git).resolve())
        if "ref" not in fields:
            raise f.error("a git source needs 'ref' (a tag, branch or commit)")
    else:
        path = (root / fields["path"].nonempty()).resolve()
        if not path.is_dir():
            raise fields["path"].error(f"directory '{path}' does not exist")
    commit = None
    if "commit" in fields:
        commit = fields["commit"].nonempty()
        if not _COMMIT_RE.match(commit):
            raise fields["commit"].error(f"'{commit}' is not a full commit id (40 lowercase hex digits)")
    patches = _patches(fields["patches"], root) if "patches" in fields else default_patches(root, patch_name or name)
    build = fields["build"].mapping(BUILD_KEYS) if "build" in fields else {}
    return Source(
        name=name,
        git=git,
        path=path,
        ref=fields["ref"].nonempty() if "ref" in fields else None,
        commit=commit,
        patches=patches,
        build=build,
    )


def _image(name: str, f: Field | None, registry: str) -> ImageRef:
    text = f.nonempty() if f else name
    first = text.split("/")[0]
    full = text if ("." in first or ":" in first or first == "localhost") and "/" in text else f"{registry}/{text}"
    try:
        ref = ImageRef.parse(full)
    except RefError as e:
        if f:
            raise f.error(str(e)) from None
        raise ConfigError(f"component '{name}': {e}", hint="set 'image:' to a valid repository") from None
    if f and (ref.tag or ref.digest):
        raise f.error(f"'{text}' has a tag or digest", "give the repository only; tags come from 'tags:'")
    return ref


def _component(name: str, f: Field, ctx: _Defaults) -> Component:
    if not _NAME_RE.match(name):
        raise f.error(
            f"component name '{name}' is not valid",
            "use lowercase letters, digits, '.', '_' and '-' (like a repository)",
        )
    fields = f.mapping(COMPONENT_KEYS)
    if "source" in fields and "mirror" in fields:
        raise f.error("give either 'source' (to build) or 'mirror' (to copy as is), not both")
    if "source" not in fields and "mirror" not in fields:
        raise f.error(
            "a component needs 'source' (to build) or 'mirror' (to copy a third-party image as is)",
            "add source: {git: URL, ref: TAG} or mirror: REGISTRY/REPO:TAG",
        )
    platforms = _platforms(fields["platforms"]) if "platforms" in fields else ctx.platforms
    tags = _tags(fields["tags"]) if "tags" in fields else ctx.tags
    replaces = tuple(fields["replaces"].strings()) if "replaces" in fields else ()
    image = _image(name, fields.get("image"), ctx.registry)
    description = fields["description"].string() if "description" in fields else ""
    binaries = _binaries(fields.get("binaries"), mirrored="mirror" in fields)
    if "mirror" in fields:
        for key in ("build", "patches"):
            if key in fields:
                raise fields[key].error(f"a mirrored component is copied as is and takes no '{key}'")
        try:
            mirror = ImageRef.parse(fields["mirror"].nonempty("an image reference"))
        except RefError as e:
            raise fields["mirror"].error(str(e)) from None
        if not mirror.tag and not mirror.digest:
            raise fields["mirror"].error(
                f"'{mirror}' has neither tag nor digest", "pin the third-party image: REPO:TAG or REPO@sha256:..."
            )
        return Component(name, image, None, mirror, None, platforms, tags, replaces, description, binaries)
    source = _component_source(name, fields["source"], ctx)
    if "patches" in fields:  # the component's own queue replaces its source's
        source = dataclasses.replace(source, patches=_patches(fields["patches"], ctx.root))
    build = _build(fields.get("build"), source.build, ctx.root)
    return Component(name, image, source, None, build, platforms, tags, replaces, description, binaries)


def _binaries(f: Field | None, *, mirrored: bool) -> BinariesPolicy:
    default = "warn" if mirrored else "fail"
    if f is None:
        return BinariesPolicy(default)
    fields = f.mapping(BINARIES_KEYS)
    check = default
    if "check" in fields:
        check = fields["check"].nonempty("fail or warn")
        if check not in ("fail", "warn"):
            raise fields["check"].error(
                f"'{check}' is not a check mode", closest(check, ("fail", "warn")) or "use fail or warn"
            )
        if check == "warn" and not mirrored:
            raise fields["check"].error(
                "a built component's binaries must match their platform: a mismatch always fails its build",
                "allow the paths that hold another machine's binaries on purpose: allow: [PATTERN...] and reason:",
            )
    allow = []
    for item in (
        fields["allow"].sequence("a list of path patterns such as /usr/bin/qemu-*") if "allow" in fields else ()
    ):
        pattern = item.nonempty("a path pattern such as /usr/bin/qemu-*")
        if not pattern.startswith("/"):
            raise item.error(
                f"'{pattern}' is not an absolute path pattern",
                "patterns match absolute paths in the image: '*' within one directory, '**' across directories",
            )
        allow.append(pattern)
    reason = fields["reason"].nonempty("a sentence saying why") if "reason" in fields else ""
    if allow and not reason:
        raise f.error(
            "binaries.allow needs a reason",
            'say why these paths hold binaries of another machine: reason: "..."',
        )
    if reason and not allow:
        raise fields["reason"].error("a reason explains binaries.allow, which is not given")
    return BinariesPolicy(check, tuple(allow), reason)


def _component_source(name: str, f: Field, ctx: _Defaults) -> Source:
    if f.is_mapping():
        return _source(name, f, ctx.root)
    ref = f.nonempty("a source name from 'sources:' or a mapping {git: URL, ref: REF}")
    if ref not in ctx.sources:
        hint = closest(ref, list(ctx.sources)) or (
            f"defined sources: {', '.join(ctx.sources)}" if ctx.sources else "define it under 'sources:'"
        )
        raise f.error(f"unknown source '{ref}'", hint)
    return ctx.sources[ref]


def _check_unique_images(components: dict[str, Component], f: Field) -> None:
    seen: dict[str, str] = {}
    for name, comp in components.items():
        other = seen.get(comp.image.name)
        if other:
            node = f.mapping()[name]
            raise node.error(
                f"components '{other}' and '{name}' publish the same image '{comp.image.name}'",
                "give one of them another 'image:'",
            )
        seen[comp.image.name] = name


def _cache(f: Field) -> CacheConfig:
    fields = f.mapping(CACHE_KEYS)
    kind = fields["type"].nonempty() if "type" in fields else "registry"
    if kind not in ("registry", "none"):
        raise fields["type"].error(f"cache type '{kind}' is not supported", "use 'registry' or 'none'")
    repo = fields["repository"].nonempty() if "repository" in fields else "{repository}-cache"
    if "{repository}" not in repo:
        raise fields["repository"].error(
            f"'{repo}' does not mention {{repository}}", "e.g. '{repository}-cache' keeps the cache next to the image"
        )
    return CacheConfig(kind, repo)


ATTEST_KEYS = ("provenance", "sbom", "sbom_generator")


def _attest(top: dict[str, Field], key: str) -> bool:
    if "attestations" not in top:
        return True
    fields = top["attestations"].mapping(ATTEST_KEYS)
    return fields[key].boolean() if key in fields else True


def _sbom_generator(top: dict[str, Field]) -> str:
    """The BuildKit SBOM generator image ('' = BuildKit's default scanner)."""
    if "attestations" not in top:
        return ""
    fields = top["attestations"].mapping(ATTEST_KEYS)
    if "sbom_generator" not in fields:
        return ""
    value = fields["sbom_generator"].nonempty("an image reference")
    try:
        ImageRef.parse(value)
    except RefError as e:
        raise fields["sbom_generator"].error(str(e)) from None
    return value


def _manifests(f: Field, root: Path, sources: dict[str, Source]) -> ManifestsConfig:
    fields = f.mapping(MANIFESTS_KEYS)
    templates = None
    if "templates" in fields:
        templates = (root / fields["templates"].nonempty()).resolve()
        if not templates.is_dir():
            raise fields["templates"].error(f"directory '{templates}' does not exist")
    values: dict[str, Any] = {}
    if "values" in fields:
        if not fields["values"].is_mapping():
            raise fields["values"].expected("a mapping of values for the templates")
        # the node passed the alias budget when composed; constructed with the same loader
        values = yaml.load(yaml.serialize(fields["values"].node), Loader=BoundedLoader) or {}
    upstream = []
    if "upstream" in fields:
        for item in fields["upstream"].sequence("a list of {path, source}"):
            entry = item.mapping(UPSTREAM_KEYS)
            if "path" not in entry:
                raise item.error("an upstream manifest needs 'path'")
            source = entry["source"].nonempty() if "source" in entry else None
            if source is not None and source not in sources:
                hint = closest(source, list(sources)) or "name a source defined under 'sources:'"
                raise entry["source"].error(f"unknown source '{source}'", hint)
            upstream.append(UpstreamManifest(path=_relative_path(entry["path"], "the manifest"), source=source))
    return ManifestsConfig(templates, values, tuple(upstream))
