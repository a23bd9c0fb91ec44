"""The JSON Schema of images.yaml, generated from the model's own key lists (``config.model``).

Editors that speak the YAML language server complete and check images.yaml with it: each
images.yaml names it in a ``# yaml-language-server: $schema=...`` line. ``archlift schema``
prints it; the package ships it as ``archlift/data/images.schema.json`` (a test keeps the
file equal to what ``schema()`` makes, and validates the examples and the root images.yaml
with it). The loader stays the authority: it checks what a schema cannot (files that exist,
references that parse, templates that fill); the schema never refuses what the loader takes.

Every key the loader accepts must be described here (``schema()`` raises on a key without a
description), so a new field cannot be forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..refs import KNOWN_PLATFORMS
from . import model

SCHEMA_ID = "https://archlift.dev/schemas/images.schema.json"
# A value may be written as ${VAR} or ${VAR:-default}: the loader fills it from the environment.
_INTERPOLATED = r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}"


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _strings(description: str, item: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "array", "description": description, "items": item or {"type": "string", "minLength": 1}}


def _pattern_or_variable(pattern: str) -> str:
    return f"({pattern.strip('^$')})|{_INTERPOLATED}"


PLATFORM = {"type": "string", "enum": [*KNOWN_PLATFORMS, "linux/arm64/v8", "linux/x86_64", "linux/aarch64"]}
PLATFORMS = {
    "type": "array",
    "description": "platforms to build, os/architecture[/variant]",
    "items": PLATFORM,
    "minItems": 1,
    "uniqueItems": True,
}
TAGS = _strings(
    "tag templates: {version}, {commit}, {short_commit}, {state} (clean|dirty), {component}, {inputs}, {patches}"
)

BUILD: dict[str, dict[str, Any]] = {
    "context": _string("the build context, relative to the source root (default: .)"),
    "dockerfile": _string("the Dockerfile, relative to the source root (default: Dockerfile)"),
    "dockerfile_local": _string("a Dockerfile this repository supplies, relative to images.yaml"),
    "target": _string("the Dockerfile stage to build"),
    "args": {
        "type": "object",
        "description": "build args; values may use the tag template fields",
        "additionalProperties": {"type": "string"},
    },
    "contexts": {
        "type": "object",
        "description": "named build contexts: a FROM name -> docker-image://REF, oci-layout://PATH, target:STAGE, "
        "a URL, or a local path (./...)",
        "additionalProperties": {"type": "string", "minLength": 1},
    },
}

SOURCE: dict[str, dict[str, Any]] = {
    "git": _string("a git repository: a URL, or a path relative to images.yaml"),
    "path": _string("a local directory used as it is (instead of git)"),
    "ref": _string("the tag, branch or full commit to build"),
    "commit": _string(
        "the commit the ref must resolve to (40 lowercase hex digits)",
        pattern=_pattern_or_variable("^[0-9a-f]{40}$"),
    ),
    "patches": _strings("the patch queue, in order (default: patches/<name>/*.patch)"),
    "build": {"$ref": "#/$defs/build"},
}

COMPONENT: dict[str, dict[str, Any]] = {
    "image": _string("the repository to publish, under 'registry:' unless it names a host (default: the name)"),
    "source": {
        "description": "a source named under 'sources:', or one of the component's own",
        "oneOf": [{"type": "string", "minLength": 1}, {"$ref": "#/$defs/source"}],
    },
    "mirror": _string("a third-party image copied as it is, pinned: REPO:TAG or REPO@sha256:..."),
    "patches": _strings("the component's own patch queue (replaces its source's)"),
    "build": {"$ref": "#/$defs/build"},
    "platforms": PLATFORMS,
    "tags": TAGS,
    "replaces": _strings("how upstream manifests name this image (placeholders or repositories)"),
    "description": _string("what the component is, for people"),
    "binaries": {"$ref": "#/$defs/binaries"},
}

BINARIES: dict[str, dict[str, Any]] = {
    "check": {
        "type": "string",
        "enum": ["fail", "warn"],
        "description": "what a binary of another machine does: fail the component, or (mirrored only, the "
        "default there) warn in the summary",
    },
    "allow": _strings(
        "absolute path patterns that may hold binaries of another machine on purpose ('*' within one "
        "directory, '**' across directories)",
        {"type": "string", "pattern": "^/"},
    ),
    "reason": _string("why the allowed paths hold binaries of another machine (required with allow)"),
}

CACHE: dict[str, dict[str, Any]] = {
    "type": {"type": "string", "enum": ["registry", "none"], "description": "the build cache (default: registry)"},
    "repository": _string("where the cache lives; must mention {repository}", pattern=r"\{repository\}"),
}

ATTESTATIONS: dict[str, dict[str, Any]] = {
    "provenance": {"type": "boolean", "description": "SLSA provenance (mode=min) for every image"},
    "sbom": {"type": "boolean", "description": "an SPDX SBOM for every image"},
    "sbom_generator": _string("the BuildKit SBOM scanner image (default: BuildKit's own)"),
}

UPSTREAM: dict[str, dict[str, Any]] = {
    "path": _string("a manifest file, relative to the source's tree (or to images.yaml)"),
    "source": _string("the source whose pinned, patched tree holds it"),
}

MANIFESTS: dict[str, dict[str, Any]] = {
    "templates": _string("a directory of *.yaml.j2 templates and plain *.yaml files"),
    "values": {"type": "object", "description": "values the templates see as values.<key>"},
    "upstream": {
        "type": "array",
        "description": "upstream manifests taken as they are",
        "items": {"$ref": "#/$defs/upstream"},
    },
}

TOP: dict[str, dict[str, Any]] = {
    "archlift": {"type": "integer", "const": model.FORMAT_VERSION, "description": "the format version"},
    "registry": _string("where images go: a registry host and an optional path prefix"),
    "platforms": PLATFORMS,
    "tags": TAGS,
    "concurrency": {"type": "integer", "minimum": 1, "description": "components built at once (default 2)"},
    "builder": _string("the buildx builder to use (default: the current one)"),
    "cache": {"$ref": "#/$defs/cache"},
    "attestations": {"$ref": "#/$defs/attestations"},
    "reproducible": {"type": "boolean", "description": "SOURCE_DATE_EPOCH and rewritten layer timestamps"},
    "sources": {
        "type": "object",
        "description": "upstream sources shared by components",
        "additionalProperties": {"$ref": "#/$defs/source"},
    },
    "components": {
        "type": "object",
        "description": "every image of the release: built from a source, or mirrored",
        "minProperties": 1,
        "propertyNames": {"pattern": model.NAME_PATTERN},
        "additionalProperties": {"$ref": "#/$defs/component"},
    },
    "manifests": {"$ref": "#/$defs/manifests"},
}


def _object(keys: Sequence[str], described: dict[str, dict[str, Any]], what: str, **extra: Any) -> dict[str, Any]:
    missing = [k for k in keys if k not in described]
    extra_keys = [k for k in described if k not in keys]
    if missing or extra_keys:
        raise AssertionError(f"schema of {what}: undescribed keys {missing}, unknown keys {extra_keys}")
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {k: described[k] for k in keys},
        **extra,
    }


def schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of images.yaml."""
    either = [{"required": ["source"]}, {"required": ["mirror"]}]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "archlift images.yaml",
        "description": "The release definition of archlift: every image, its upstream, build and platforms "
        "(docs/images-yaml.md).",
        **_object(model.TOP_KEYS, TOP, "the top level", required=["components"]),
        "$defs": {
            "build": _object(
                model.BUILD_KEYS, BUILD, "build", **{"not": {"required": ["dockerfile", "dockerfile_local"]}}
            ),
            "source": _object(
                model.SOURCE_KEYS,
                SOURCE,
                "a source",
                oneOf=[{"required": ["git", "ref"]}, {"required": ["path"]}],
            ),
            "component": _object(model.COMPONENT_KEYS, COMPONENT, "a component", oneOf=either),
            "binaries": _object(
                model.BINARIES_KEYS,
                BINARIES,
                "binaries",
                dependentRequired={"allow": ["reason"], "reason": ["allow"]},
            ),
            "cache": _object(model.CACHE_KEYS, CACHE, "cache"),
            "attestations": _object(model.ATTEST_KEYS, ATTESTATIONS, "attestations"),
            "manifests": _object(model.MANIFESTS_KEYS, MANIFESTS, "manifests"),
            "upstream": _object(model.UPSTREAM_KEYS, UPSTREAM, "an upstream manifest", required=["path"]),
        },
    }


def schema_json() -> str:
    """The schema as the package ships it: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"
