"""Read a Dockerfile just enough to name the images it pulls and the named contexts it uses.

BuildKit looks a name up among the named build contexts in three places: a stage's
name (``FROM x AS name``: the context replaces the whole stage), a ``FROM`` base that
is not an earlier stage, and a ``COPY --from``/``RUN --mount=from=`` that is not a
stage. It compares names as docker references (:func:`archlift.refs.context_name`:
``docker.io/library/`` and ``:latest`` implied), so ``FROM alpine:latest`` uses the
context keyed ``docker.io/library/alpine``.

``external_images(text, args, contexts)`` lists every image a build pulls (after ARG
substitution: global ARG defaults, then build args), with a name replaced by a
``docker-image://`` context giving that context's image; ``unused_contexts`` names
the context keys no lookup would find, which BuildKit would silently ignore.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from ..config.model import BuildSpec
from ..errors import ConfigError
from ..refs import RefError, context_name

_VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)(?::[-+]([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")
_FROM_FLAG_RE = re.compile(r"--from=(\S+)")
_MOUNT_FROM_RE = re.compile(r"--mount=\S*\bfrom=([^,\s]+)")
_NOT_LOOKED_UP = ("scratch", "context")  # BuildKit never looks these up among named contexts


@dataclass(frozen=True)
class Lookup:
    """A name BuildKit looks up among the named contexts, where the Dockerfile says it."""

    name: str  # as the Dockerfile writes it, ARGs expanded
    line: int  # 1-based line of the instruction
    kind: str  # "FROM", "stage name", "COPY --from", "RUN --mount from="

    @property
    def key(self) -> str | None:
        """The name BuildKit compares with the context keys (None: not a reference, never found)."""
        try:
            return context_name(self.name)
        except RefError:
            return None


@dataclass(frozen=True)
class _Stage:
    base: Lookup  # the FROM name
    name: str  # "" for an unnamed stage
    uses: tuple[Lookup, ...]  # COPY --from / RUN --mount from= in this stage


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, instruction) with continuation lines joined, comments and blanks skipped."""
    current, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        yield start, current + stripped
        current = ""
    if current:
        yield start, current


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(3)
        if name in env and env[name] != "":
            return env[name]
        return m.group(2) or ""

    return _VAR_RE.sub(sub, value)


def _stages(text: str, args: Mapping[str, str]) -> list[_Stage]:
    env: dict[str, str] = {}
    stages: list[_Stage] = []
    base: Lookup | None = None
    name, uses = "", list[Lookup]()
    for line, instruction in _logical_lines(text):
        word, _, rest = instruction.partition(" ")
        word = word.upper()
        if word == "ARG" and base is None:
            key, _, default = rest.strip().partition("=")
            env[key] = args.get(key, default.strip().strip('"'))
        elif word == "FROM":
            if base is not None:
                stages.append(_Stage(base, name, tuple(uses)))
            parts = [p for p in rest.split() if not p.startswith("--")]
            base = Lookup(_expand(parts[0], env) if parts else "", line, "FROM")
            name = parts[2].lower() if len(parts) >= 3 and parts[1].lower() == "as" else ""
            uses = []
        elif word in ("COPY", "RUN", "ADD") and base is not None:
            uses += [Lookup(_expand(m.group(1), env), line, "COPY --from") for m in _FROM_FLAG_RE.finditer(rest)]
            uses += [Lookup(_expand(m.group(1), env), line, "RUN --mount from=") for m in _MOUNT_FROM_RE.finditer(rest)]
    if base is not None:
        stages.append(_Stage(base, name, tuple(uses)))
    return stages


def lookups(text: str, args: Mapping[str, str], contexts: Mapping[str, str]) -> list[tuple[Lookup, str | None]]:
    """Every lookup BuildKit makes among the named contexts when it builds each stage, in order,
    with the context value found (None: the name is pulled as it is). A stage replaced by a
    context is not built, so its own FROM and COPY --from are not looked up."""
    by_key = {context_name(k): v for k, v in contexts.items()}
    stages = _stages(text, args)
    names = {s.name for s in stages if s.name}
    out: list[tuple[Lookup, str | None]] = []

    def look(use: Lookup) -> None:
        out.append((use, by_key.get(use.key) if use.key else None))

    earlier: set[str] = set()
    for stage in stages:
        if stage.name:
            look(Lookup(stage.name, stage.base.line, "stage name"))
            if out[-1][1] is not None:  # the whole stage is the context
                earlier.add(stage.name)
                continue
        if stage.base.name.lower() not in earlier and stage.base.name.lower() not in _NOT_LOOKED_UP:
            look(stage.base)
        for use in stage.uses:
            if use.name.lower() not in names and not use.name.isdigit() and use.name.lower() not in _NOT_LOOKED_UP:
                look(use)
        if stage.name:
            earlier.add(stage.name)
    return out


def external_images(text: str, args: Mapping[str, str], contexts: Mapping[str, str]) -> list[str]:
    """External image references in build order, each once; a name found among the named
    contexts gives its ``docker-image://`` image (a local or git context pulls nothing: it is
    hashed with the build definition)."""
    found: list[str] = []
    for use, value in lookups(text, args, contexts):
        if value is None and use.kind == "stage name":
            continue  # a stage built here
        if value is None:
            image = use.name
        elif value.startswith("docker-image://"):
            image = value.removeprefix("docker-image://")
        else:
            continue
        if image and image not in found:
            found.append(image)
    return found


def unused_contexts(text: str, args: Mapping[str, str], contexts: Mapping[str, str]) -> list[str]:
    """The context keys (as written) that no lookup of the Dockerfile finds: BuildKit ignores them."""
    used = {use.key for use, value in lookups(text, args, contexts) if value is not None}
    return [k for k in contexts if context_name(k) not in used]


def check_contexts(text: str, args: Mapping[str, str], build: BuildSpec) -> None:
    """Refuse named contexts that the Dockerfile ``text`` never uses (BuildKit would build on the
    image the FROM line names instead): one error naming each key where images.yaml sets it, with
    the closest name the Dockerfile looks up. ``args``: the build args, tag fields filled."""
    import difflib

    dockerfile = str(build.dockerfile_local or build.dockerfile)
    unused = unused_contexts(text, args, build.contexts)
    if not unused:
        return
    names: dict[str, Lookup] = {}
    for use, _ in lookups(text, args, {}):
        if use.key:
            names.setdefault(use.key, use)
    lines = []
    for key in unused:
        where = build.context_locations.get(key, "")
        looked_up = context_name(key)
        spelled = f" (BuildKit looks it up as '{looked_up}')" if looked_up != key else ""
        line = (
            f"{where + ': ' if where else ''}no FROM, COPY --from or RUN --mount from= in {dockerfile} "
            f"uses the named context '{key}'{spelled}"
        )
        match = difflib.get_close_matches(looked_up, list(names), n=1, cutoff=0.6)
        if match:
            use = names[match[0]]
            line += f"; did you mean '{use.name}' ({use.kind}, {dockerfile} line {use.line})?"
        lines.append(line)
    listed = ", ".join(sorted({u.name for u in names.values()})) or "none"
    head = [f"{len(lines)} named contexts that {dockerfile} never uses:"] if len(lines) > 1 else []
    raise ConfigError(
        "\n  ".join(head + lines),
        hint=f"a context is used only when its key names what the Dockerfile looks up ({listed}); "
        "docker.io/library/ and :latest are implied, as docker reads image names",
    )
