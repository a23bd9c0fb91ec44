"""Render a release's install manifests, every image pinned by digest (see docs/manifests.md).

One pure step: a release lock, a templates directory, values, upstream manifest
files already located, and the names those files use for our images go in; a
:class:`Rendered` (documents in a fixed order, the bytes of each output file)
comes out. Nothing here looks at images.yaml or the registry.

- ``*.yaml.j2`` / ``*.yml.j2`` templates are rendered with jinja2 (StrictUndefined);
  ``*.yaml`` / ``*.yml`` files are taken as they are. Files whose name starts
  with ``_`` are partials for ``{% include %}`` / ``{% import %}``, not output.
- Upstream manifests are taken as they are, with every image reference that
  belongs to a component rewritten to our image by digest (like ``kbld``).
- Complete or refuse: every container image in a pod spec must be pinned by
  digest to a component of the lock; every document must validate offline
  against the Kubernetes schemas (custom kinds: apiVersion, kind, metadata.name).
- Output: one file per document, ``<rank>_<kind>[_<namespace>]_<name>.yaml``,
  Namespaces (rank 0), then CustomResourceDefinitions (1), then the rest (2) by
  kind, namespace and name; keys sorted. Same inputs, same bytes.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import jinja2.sandbox
import kubernetes_validate
import yaml
from kubernetes_validate import utils as kv_utils

from ..config.loader import BoundedLoader, YAMLBudgetError
from ..errors import ConfigError
from ..lock import ComponentRelease, ReleaseLock
from ..refs import ImageRef, RefError

KUBERNETES_VERSION = "1.30"  # the schemas kubernetes-validate ships offline, 1.25 to 1.37
TEMPLATE_SUFFIXES = (".yaml.j2", ".yml.j2")
PLAIN_SUFFIXES = (".yaml", ".yml")
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
# Where pod specs live: Pod; Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and any
# custom kind with a pod template; CronJob and custom kinds with a job template; PodTemplate.
POD_SPEC_PATHS: tuple[tuple[str, ...], ...] = (
    ("spec", "template", "spec"),
    ("spec", "jobTemplate", "spec", "template", "spec"),
    ("template", "spec"),
)
# API groups with no dot are Kubernetes' own (core "", apps, batch, policy, autoscaling):
# a kind there without a schema is a mistake, not a custom resource.
_BUILTIN_GROUP_RE = re.compile(r"^[a-z0-9]*$")
_FILE_CHARS_RE = re.compile(r"[^A-Za-z0-9._-]")
_MAX_PROBLEMS = 50


# --- YAML in and out ----------------------------------------------------------
class _Loader(BoundedLoader):
    """The bounded SafeLoader without timestamps: an unquoted date stays the string it is in the file."""


_Loader.yaml_implicit_resolvers = {
    ch: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for ch, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _Dumper(yaml.SafeDumper):
    """Block style; multi-line strings as literal blocks; no aliases."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _str_representer)


def dump_document(body: Mapping[str, Any]) -> bytes:
    """One document as YAML: keys sorted, block style, no line folding. Deterministic."""
    text = yaml.dump(
        body,
        Dumper=_Dumper,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
        indent=2,
    )
    return text.encode()


def load_documents(text: str, label: str, where: str = "line") -> list[tuple[int, Any]]:
    """The non-empty documents of a YAML stream, each with its 0-based index in the stream."""
    try:
        docs = list(yaml.load_all(text, Loader=_Loader))
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = f"{where} {mark.line + 1}: " if mark else ""
        what = "" if isinstance(e, YAMLBudgetError) else "not valid YAML: "
        raise ConfigError(f"{label}: {line}{what}{e.problem or e.context}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{label}: not valid YAML: {e}") from None
    return [(i, d) for i, d in enumerate(docs) if d is not None]


# --- values ---------------------------------------------------------------------
@dataclass(frozen=True)
class UpstreamFile:
    """An upstream release manifest, already located. ``label`` names it in errors."""

    path: Path
    label: str


@dataclass(frozen=True)
class Document:
    source: str  # the template (relative to the templates dir) or the upstream file's label
    index: int  # 0-based position in its source's YAML stream
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def api_version(self) -> str:
        return str(self.body.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def name(self) -> str:
        meta = self.body.get("metadata")
        return str(meta.get("name", "")) if isinstance(meta, dict) else ""

    @property
    def namespace(self) -> str:
        meta = self.body.get("metadata")
        return str(meta.get("namespace", "") or "") if isinstance(meta, dict) else ""

    @property
    def title(self) -> str:
        """``Kind/namespace/name`` (``Kind/name`` when cluster-scoped)."""
        return "/".join(p for p in (self.kind or "?", self.namespace, self.name or "?") if p)

    @property
    def where(self) -> str:
        return f"{self.title} ({self.source}, document {self.index + 1})"

    @property
    def rank(self) -> int:
        return {"Namespace": 0, "CustomResourceDefinition": 1}.get(self.kind, 2)

    @property
    def sort_key(self) -> tuple[int, str, str, str, str]:
        return (self.rank, self.kind, self.namespace, self.name, self.api_version)

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What the API server keys an object by: group, kind, namespace, name."""
        return (self.group, self.kind, self.namespace, self.name)

    @property
    def file_name(self) -> str:
        parts = [str(self.rank), self.kind.lower(), self.namespace, self.name]
        return "_".join(_FILE_CHARS_RE.sub("-", p) for p in parts if p) + ".yaml"


@dataclass(frozen=True)
class ImageReference:
    """One reference to an image of the release in the output: a container's image, or a
    string that names it (an argument, ConfigMap data)."""

    image: str  # as written in the output
    component: str
    where: str  # the document and the field path

    @property
    def pinned(self) -> bool:
        return "@" in self.image


@dataclass(frozen=True)
class Rendered:
    documents: tuple[Document, ...]  # in output order
    files: tuple[tuple[str, bytes], ...]  # (file name, bytes), sorted by name
    references: tuple[ImageReference, ...] = ()  # every reference to a release image, in output order

    def write(self, out: Path) -> list[Path]:
        """Replace ``out`` with exactly these files (built aside, then swapped in)."""
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
        for name, data in self.files:
            (staging / name).write_bytes(data)
            os.chmod(staging / name, 0o644)
        os.chmod(staging, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old."))
            os.replace(out, old / out.name)
            os.replace(staging, out)
            shutil.rmtree(old)
        else:
            os.replace(staging, out)
        return [out / name for name, _ in self.files]

    def images(self) -> list[str]:
        """Every container image in the output, sorted, once each."""
        return sorted({image for doc in self.documents for _, image in _container_images(doc.body)})


# --- what templates see ---------------------------------------------------------------
def component_version(c: ComponentRelease) -> str:
    """The upstream version: the built source's version, or the tag of the mirrored image."""
    if c.upstream:
        return c.upstream.version
    if c.source_image:
        try:
            tag = ImageRef.parse(c.source_image).tag
        except RefError:
            tag = None
        if tag:
            return tag
    return c.tags[0] if c.tags else ""


def release_context(lock: ReleaseLock) -> dict[str, dict[str, Any]]:
    """``release`` for the templates: per component name, what a manifest may need."""
    return {
        name: {
            "name": name,
            "kind": c.kind,
            "repository": c.repository,
            "digest": str(c.index_digest),
            "ref": str(c.ref),
            "tags": list(c.tags),
            "version": component_version(c),
            "platforms": sorted(c.platforms),
            "source_image": c.source_image or "",
        }
        for name, c in sorted(lock.components.items())
    }


class _UnknownComponent(Exception):
    pass


def _image_helper(lock: ReleaseLock) -> Callable[[str], str]:
    def image(name: str) -> str:
        if name not in lock.components:
            known = ", ".join(sorted(lock.components)) or "none"
            raise _UnknownComponent(f"image({name!r}): the release has no component '{name}' (it has: {known})")
        return str(lock.components[name].ref)

    return image


# --- templates ------------------------------------------------------------------------
MAX_RENDERED = 16 << 20  # characters one template may produce
MAX_SEQUENCE = 1 << 20  # items or characters a '*' in a template may make
MAX_EXPONENT = 1024


class _Sandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """Templates come from pull requests: jinja2's immutable sandbox (no attribute that starts
    with '_', no Python internals, no call that changes ``values`` or ``release``; ``range`` is
    bounded), and '*' and '**' bounded, so one expression cannot ask for gigabytes."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any, right: Any) -> Any:
        small_base = isinstance(left, float) or (isinstance(left, int) and abs(left) <= 1)
        if operator == "**" and isinstance(right, int) and abs(right) > MAX_EXPONENT and not small_base:
            raise jinja2.exceptions.SecurityError(f"the exponent {right} is larger than {MAX_EXPONENT}")
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE:
                    raise jinja2.exceptions.SecurityError(
                        f"'*' would make {len(seq) * n} items (at most {MAX_SEQUENCE})"
                    )
        return super().call_binop(context, operator, left, right)


class _ContainedLoader(jinja2.FileSystemLoader):
    """Templates and what they include, from inside the templates directory only (no symlink out)."""

    def get_source(self, environment: jinja2.Environment, template: str) -> tuple[str, str, Callable[[], bool]]:
        source, filename, uptodate = super().get_source(environment, template)
        roots = [Path(p).resolve() for p in self.searchpath]
        if not any(Path(filename).resolve().is_relative_to(root) for root in roots):
            raise jinja2.exceptions.SecurityError(f"'{template}' leads outside the templates directory")
        return source, filename, uptodate


class _TooLarge(Exception):
    pass


def _bounded(chunks: Iterator[str]) -> str:
    """A template's output, refused past MAX_RENDERED characters."""
    out, size = [], 0
    for chunk in chunks:
        size += len(chunk)
        if size > MAX_RENDERED:
            raise _TooLarge(f"the template produces more than {MAX_RENDERED} characters; refused")
        out.append(chunk)
    return "".join(out)


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is below it, else as it is."""
    absolute = Path(os.path.abspath(path))
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(path)


def _template_names(templates: Path) -> tuple[list[str], list[str]]:
    """(jinja2 templates, plain YAML files) under ``templates``, as sorted relative posix paths."""
    rendered, plain = [], []
    for path in sorted(templates.rglob("*")):
        if not path.is_file() or path.name.startswith(("_", ".")):
            continue
        rel = path.relative_to(templates).as_posix()
        if rel.endswith(TEMPLATE_SUFFIXES):
            rendered.append(rel)
        elif rel.endswith(PLAIN_SUFFIXES):
            plain.append(rel)
    return rendered, plain


def _template_frame(exc: BaseException, templates: Path) -> tuple[str, int] | None:
    """The innermost template file and line ``exc`` was raised from (jinja2 rewrites
    tracebacks so that template frames carry the template's file name and line)."""
    root = os.path.normpath(str(templates)) + os.sep
    found = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename.startswith(root) and frame.lineno:
            found = (frame.filename, frame.lineno)
    return found


TEMPLATE_HINT = (
    "templates see release.<component>.{ref,digest,repository,tags,version,platforms}, "
    "values.<key> and image('<component>')"
)


def render_templates(templates: Path, lock: ReleaseLock, values: Mapping[str, Any]) -> tuple[list[Document], list[str]]:
    """Every document of every template and plain YAML file, and every template problem."""
    env = _Sandbox(
        loader=_ContainedLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.globals.update(release=release_context(lock), values=dict(values), image=_image_helper(lock))
    rendered_names, plain_names = _template_names(templates)
    docs: list[Document] = []
    problems: list[str] = []
    for name in rendered_names:
        shown = _display(templates / name)
        try:
            template = env.get_template(name)
            text = _bounded(template.generate())
        except jinja2.TemplateSyntaxError as e:
            where = _display(Path(e.filename)) if e.filename else shown
            problems.append(f"{where}:{e.lineno}: template syntax error: {e.message}")
            continue
        except _TooLarge as e:
            problems.append(f"{shown}: {e}")
            continue
        except Exception as e:  # an error raised while rendering: name the template line
            frame = _template_frame(e, templates)
            where = f"{_display(Path(frame[0]))}:{frame[1]}" if frame else f"{shown}:?"
            message = str(e) if isinstance(e, jinja2.TemplateError | _UnknownComponent) else f"{type(e).__name__}: {e}"
            included = frame is not None and frame[0] != os.path.normpath(str(templates / name))
            problems.append(f"{where}: {message}" + (f" (rendering {shown})" if included else ""))
            continue
        try:
            docs += _documents(text, name, f"{shown} (rendered)", "rendered line")
        except ConfigError as e:
            problems.append(e.message)
    for name in plain_names:
        shown = _display(templates / name)
        if not (templates / name).resolve().is_relative_to(templates.resolve()):
            problems.append(f"{shown}: leads outside the templates directory (a symbolic link)")
            continue
        try:
            docs += _documents((templates / name).read_text(), name, shown, "line")
        except ConfigError as e:
            problems.append(e.message)
    return docs, problems


def _documents(text: str, source: str, label: str, where: str) -> list[Document]:
    out = []
    for index, body in load_documents(text, label, where):
        if not isinstance(body, dict):
            raise ConfigError(f"{label}: document {index + 1} is a {type(body).__name__}, not a mapping")
        out.append(Document(source, index, body))
    return out


# --- upstream manifests: rewrite images to ours, by digest --------------------------------
@dataclass(frozen=True)
class ImageMap:
    """How upstream manifests name our images.

    ``by_name``: a normalised ``registry/repository`` (tag and digest ignored) -> component;
    it applies to every ``image:`` field. ``by_text``: a literal (a placeholder such as
    ``RECONCILER_IMAGE``, or a reference with a '/') -> component; it also applies inside
    any other string (args, ConfigMap data), with an optional ``:tag``/``@digest`` after it.
    A component may be missing from the lock: that is an error only where a document uses it.
    """

    by_name: Mapping[str, str]
    by_text: Mapping[str, str]

    @classmethod
    def build(cls, lock: ReleaseLock, replacements: Mapping[str, str]) -> ImageMap:
        by_name: dict[str, str] = {}
        by_text: dict[str, str] = {}
        pairs = list(replacements.items())
        for name, c in lock.components.items():  # our own repositories, and what mirrors copy
            pairs.append((c.repository, name))
            if c.source_image:
                pairs.append((c.source_image, name))
        for text, component in pairs:
            try:
                ref = ImageRef.parse(text)
            except RefError:
                by_text.setdefault(text, component)
                continue
            by_name.setdefault(ref.name, component)
            bare = text.split("@")[0]
            if "/" in bare:
                bare = bare if ref.tag is None else bare[: -len(ref.tag) - 1]
                by_text.setdefault(bare, component)
        return cls(by_name, by_text)

    def _pattern(self) -> re.Pattern[str] | None:
        return _names_pattern(self.by_text) if self.by_text else None


def _names_pattern(names: Iterable[str]) -> re.Pattern[str]:
    """Any of ``names`` standing alone in a string, with an optional ``:tag`` and ``@digest`` after it."""
    alternatives = "|".join(re.escape(t) for t in sorted(names, key=lambda t: (-len(t), t)))
    return re.compile(
        rf"(?<![\w./-])({alternatives})(?::[\w][\w.-]{{0,127}})?(?:@sha256:[a-f0-9]{{64}})?(?![\w/-])",
        re.ASCII,  # docker's reference grammar is ASCII: \w is [A-Za-z0-9_] here
    )


@dataclass(frozen=True)
class Missing:
    """A reference an upstream manifest makes to a component the release lock does not have."""

    path: str  # field path in the document
    text: str  # the reference as the upstream writes it
    component: str
    document: str = ""  # Document.where

    def __str__(self) -> str:
        return f"{self.document}: {self.path}: '{self.text}' is component '{self.component}'"


def rewrite_images(body: Any, lock: ReleaseLock, images: ImageMap) -> tuple[Any, int, list[Missing]]:
    """``body`` with our images pinned by digest; how many references were rewritten; and the
    references to components the lock does not have (left as they are)."""
    pattern = images._pattern()
    count = 0
    missing: list[Missing] = []

    def pinned(component: str, found: str, path: str) -> str:
        nonlocal count
        if component not in lock.components:
            missing.append(Missing(path, found, component))
            return found
        count += 1
        return str(lock.components[component].ref)

    def text(value: str, path: str) -> str:
        if pattern is None:
            return value
        return pattern.sub(lambda m: pinned(images.by_text[m.group(1)], m.group(0), path), value)

    def image(value: str, path: str) -> str:
        if value in images.by_text:
            return pinned(images.by_text[value], value, path)
        try:
            ref = ImageRef.parse(value)
        except RefError:
            return text(value, path)
        if ref.name in images.by_name:
            return pinned(images.by_name[ref.name], value, path)
        return value

    def walk(node: Any, path: str, key: str | None) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, f"{path}.{k}" if path else str(k), str(k)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, f"{path}[{i}]", None) for i, v in enumerate(node)]
        if isinstance(node, str):
            return image(node, path) if key == "image" else text(node, path)
        return node

    return walk(body, "", None), count, missing


def load_upstream(
    files: Sequence[UpstreamFile], lock: ReleaseLock, images: ImageMap
) -> tuple[list[Document], list[Missing]]:
    """The upstream documents with our images pinned, and every reference to a component the
    lock does not have (all of them, in every file)."""
    docs: list[Document] = []
    missing: list[Missing] = []
    for f in files:
        try:
            content = f.path.read_text()
        except OSError as e:
            raise ConfigError(f"{f.label}: cannot read the upstream manifest {f.path}: {e.strerror}") from None
        for doc in _documents(content, f.label, f.label, "line"):
            body, _, found = rewrite_images(doc.body, lock, images)
            docs.append(Document(doc.source, doc.index, body))
            missing += [dataclasses.replace(m, document=doc.where) for m in found]
    return docs, missing


def image_references(docs: Sequence[Document], lock: ReleaseLock) -> list[ImageReference]:
    """Every reference to an image of the release in ``docs``: any string that names a component's
    repository (with or without tag or digest), container images and other fields alike."""
    by_repo = {c.repository: name for name, c in lock.components.items()}
    if not by_repo:
        return []
    pattern = _names_pattern(by_repo)
    out: list[ImageReference] = []

    def walk(node: Any, path: str, doc: Document) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{path}.{k}" if path else str(k), doc)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{path}[{i}]", doc)
        elif isinstance(node, str):
            out.extend(
                ImageReference(m.group(0), by_repo[m.group(1)], f"{doc.where}: {path}") for m in pattern.finditer(node)
            )

    for doc in docs:
        walk(doc.body, "", doc)
    return out


# --- complete or refuse -----------------------------------------------------------------
def _pod_specs(body: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    if body.get("kind") == "Pod" and isinstance(body.get("spec"), dict):
        yield "spec", body["spec"]
    for path in POD_SPEC_PATHS:
        node: Any = body
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            yield ".".join(path), node


def _container_images(body: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """(path, image value) for every container of every pod spec in a document."""
    for spec_path, spec in _pod_specs(body):
        for key in CONTAINER_LISTS:
            containers = spec.get(key)
            if not isinstance(containers, list):
                continue
            for i, container in enumerate(containers):
                value = container.get("image") if isinstance(container, dict) else None
                yield f"{spec_path}.{key}[{i}].image", value


def image_problems(doc: Document, lock: ReleaseLock) -> list[str]:
    """Every container image of ``doc`` that is not pinned by digest to a component of ``lock``."""
    by_repo = {ImageRef.parse(c.repository).name: c for c in lock.components.values()}
    problems = []
    for path, value in _container_images(doc.body):
        prefix = f"{doc.where}: {path}"
        if not isinstance(value, str) or not value:
            problems.append(f"{prefix}: no image")
            continue
        try:
            ref = ImageRef.parse(value)
        except RefError as e:
            problems.append(f"{prefix}: {e}")
            continue
        component = by_repo.get(ref.name)
        if ref.digest is None:
            what = f"component '{component.name}'" if component else "no component of the release"
            problems.append(f"{prefix}: '{value}' is a tag, not a digest ({what})")
        elif component is None:
            problems.append(f"{prefix}: '{value}' is not an image of the release (no component has {ref.name})")
        elif ref.digest != component.index_digest:
            platform = next((p for p, d in component.platforms.items() if d == ref.digest), None)
            if platform:
                problems.append(f"{prefix}: '{value}' pins the {platform} manifest only; use the index {component.ref}")
            else:
                problems.append(
                    f"{prefix}: '{value}' is not the released digest of component '{component.name}' "
                    f"({component.index_digest})"
                )
    return problems


# --- validation -------------------------------------------------------------------------
def validation_problems(doc: Document, kubernetes_version: str = KUBERNETES_VERSION) -> list[str]:
    body = doc.body
    missing = [
        f
        for f, v in (("apiVersion", body.get("apiVersion")), ("kind", body.get("kind")), ("metadata.name", doc.name))
        if not isinstance(v, str) or not v
    ]
    if missing:
        return [f"{doc.where}: missing {', '.join(missing)}"]
    if not isinstance(body.get("metadata"), dict):
        return [f"{doc.where}: metadata is not a mapping"]
    try:
        kubernetes_validate.validate(body, kubernetes_version, strict=True)
    except kv_utils.ValidationError as e:
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e.path).lstrip(".") or "(document)"
        return [f"{doc.where}: {path}: {e.message} (Kubernetes {e.version} schema)"]
    except kv_utils.SchemaNotFoundError:
        if _BUILTIN_GROUP_RE.match(doc.group):
            return [
                f"{doc.where}: Kubernetes {kubernetes_version} has no kind {doc.kind} in apiVersion {doc.api_version}"
            ]
    return []


def check_kubernetes_version(version: str) -> str:
    """``version`` as ``MAJOR.MINOR`` when kubernetes-validate ships its schemas, else a ConfigError."""
    shipped = sorted(
        {kv_utils.major_minor(v) for v in kv_utils.all_versions()}, key=lambda v: tuple(map(int, v.split(".")))
    )
    wanted = str(kv_utils.major_minor(version.removeprefix("v")))
    if wanted not in shipped:
        raise ConfigError(
            f"no Kubernetes schemas for version '{version}' here",
            hint=f"kubernetes-validate ships {shipped[0]} to {shipped[-1]}",
        )
    return wanted


# --- the step ----------------------------------------------------------------------------
def render(
    lock: ReleaseLock,
    *,
    templates: Path | None = None,
    values: Mapping[str, Any] | None = None,
    upstream: Sequence[UpstreamFile] = (),
    replacements: Mapping[str, str] | None = None,
    kubernetes_version: str = KUBERNETES_VERSION,
) -> Rendered:
    """Render, rewrite, check and order the documents of a release (pure: reads files, writes none).

    ``replacements`` maps names used in upstream manifests (image names, placeholders) to
    component names; each component's own repository and a mirror's source image are
    added from the lock. Raises :class:`ConfigError` listing every problem found.
    """
    if lock.partial_platform:
        raise ConfigError(
            f"the release lock is partial (platform {lock.partial_platform} only)",
            hint="run 'archlift merge' to combine the per-platform locks first",
        )
    kubernetes_version = check_kubernetes_version(kubernetes_version)
    images = ImageMap.build(lock, replacements or {})
    docs: list[Document] = []
    template_problems: list[str] = []
    if templates is not None:
        if not templates.is_dir():
            raise ConfigError(f"{_display(templates)}: the templates directory does not exist")
        docs, template_problems = render_templates(templates, lock, values or {})
    upstream_docs, missing = load_upstream(upstream, lock, images)
    docs += upstream_docs
    if template_problems or missing:
        _refuse(template_problems, missing, templates)
    if not docs:
        raise ConfigError("nothing to render: no templates and no upstream manifests produced a document")

    problems: list[str] = []
    unpinned = False
    for doc in docs:
        problems += validation_problems(doc, kubernetes_version)
        unpinned_here = image_problems(doc, lock)
        unpinned = unpinned or bool(unpinned_here)
        problems += unpinned_here
    problems += _duplicates(docs)
    if problems:
        shown = problems[:_MAX_PROBLEMS]
        more = f"\n  ... and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        hint = (
            "every container image must be pinned by digest to a component of the release "
            "(image('<component>') in a template; 'replaces:' for upstream manifests)"
        )
        raise ConfigError(
            f"{len(problems)} problem(s) in the rendered manifests:\n  " + "\n  ".join(shown) + more,
            hint=hint if unpinned else "",
        )

    docs.sort(key=lambda d: d.sort_key)
    files: dict[str, bytes] = {}
    owners: dict[str, Document] = {}
    for doc in docs:
        name = doc.file_name
        if name in files:
            raise ConfigError(f"{doc.where} and {owners[name].where} would both be written to {name}")
        files[name] = dump_document(doc.body)
        owners[name] = doc
    return Rendered(tuple(docs), tuple(sorted(files.items())), tuple(image_references(docs, lock)))


def _refuse(template_problems: list[str], missing: list[Missing], templates: Path | None) -> None:
    """One error for every template problem and every reference to a component the lock lacks."""
    parts, hints = [], []
    if template_problems:
        where = _display(templates) if templates else "the templates"
        parts.append(f"{len(template_problems)} template problem(s) in {where}:\n  " + "\n  ".join(template_problems))
        hints.append(TEMPLATE_HINT)
    if missing:
        components = sorted({m.component for m in missing})
        parts.append(
            f"{len(missing)} reference(s) in the upstream manifests to component(s) the release lock does not "
            f"have ({', '.join(components)}):\n  " + "\n  ".join(map(str, missing))
        )
        hints.append("build (or merge) a lock that includes them, or leave out of the install what references them")
    raise ConfigError("\n".join(parts), hint="; ".join(hints))


def _duplicates(docs: Sequence[Document]) -> list[str]:
    seen: dict[tuple[str, str, str, str], Document] = {}
    problems = []
    for doc in docs:
        if doc.identity in seen:
            problems.append(f"{doc.where}: the same object as {seen[doc.identity].where}")
        else:
            seen[doc.identity] = doc
    return problems
