"""Read a Dockerfile just enough to name its external images.

``external_images(text, args, contexts)`` lists every image a build pulls:
``FROM`` lines and ``COPY --from``/``RUN --mount=from=`` that name an image,
after ARG substitution (global ARG defaults, then build args), skipping
stage names, ``scratch`` and names replaced by a named build context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[-+]([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_FROM_FLAG_RE = re.compile(r"--from=(\S+)")
_MOUNT_FROM_RE = re.compile(r"--mount=\S*\bfrom=([^,\s]+)")


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env and env[name] != "":
            return env[name]
        return m.group(2) or ""

    return _VAR_RE.sub(sub, value)


def external_images(text: str, args: Mapping[str, str], contexts: Mapping[str, str]) -> list[str]:
    """External image references in build order, each once; named contexts replace FROM names."""
    env: dict[str, str] = {}
    stages: set[str] = set()
    found: list[str] = []
    seen_from = False
    for line in _logical_lines(text):
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "ARG" and not seen_from:
            name, _, default = rest.strip().partition("=")
            env[name] = args.get(name, default.strip().strip('"'))
        elif word == "FROM":
            seen_from = True
            parts = [p for p in rest.split() if not p.startswith("--")]
            image = _expand(parts[0], env) if parts else ""
            if len(parts) >= 3 and parts[1].lower() == "as":
                stages.add(parts[2].lower())
            _add(image, stages, contexts, found)
        elif word in ("COPY", "RUN", "ADD"):
            for m in (*_FROM_FLAG_RE.finditer(rest), *_MOUNT_FROM_RE.finditer(rest)):
                _add(_expand(m.group(1), env), stages, contexts, found)
    return found


def _add(image: str, stages: set[str], contexts: Mapping[str, str], found: list[str]) -> None:
    if not image or image.lower() in stages or image == "scratch" or image.isdigit():
        return
    if image in contexts:
        target = contexts[image]
        if not target.startswith("docker-image://"):
            return  # a local or git context: hashed with the build definition
        image = target.removeprefix("docker-image://")
    if image not in found:
        found.append(image)
