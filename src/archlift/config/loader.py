"""YAML read as nodes that remember where they stand, so every error about
an input file names file:line:column and the field path.

``compose`` gives PyYAML nodes; ``Field`` wraps one node with its path and
offers typed accessors that raise :class:`ConfigError` with the location,
what was expected, what was found and the closest valid key.

Every YAML archlift reads (images.yaml, templates' output, upstream manifests,
what ``audit`` reads) goes through :class:`BoundedLoader`: aliases may add at most
``ALIAS_BUDGET`` nodes to a stream (a "billion laughs" of a few hundred bytes would
otherwise expand to billions of nodes in every later walk), an alias may not refer
to the node that contains it, and nesting stops at ``MAX_DEPTH`` levels.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError

_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
_TAGS = {
    "tag:yaml.org,2002:str": "a string",
    "tag:yaml.org,2002:int": "a number",
    "tag:yaml.org,2002:float": "a number",
    "tag:yaml.org,2002:bool": "a boolean",
    "tag:yaml.org,2002:null": "nothing (null)",
    "tag:yaml.org,2002:seq": "a list",
    "tag:yaml.org,2002:map": "a mapping",
}


ALIAS_BUDGET = 100_000  # nodes that aliases may add to one YAML stream
MAX_DEPTH = 100  # nesting levels
_NO_ALIASES = "write the YAML out without anchors and aliases"


class YAMLBudgetError(yaml.composer.ComposerError):
    """YAML refused for its shape (aliases expanding too far, a recursive alias, nesting too deep);
    ``note`` says what to do."""


class BoundedLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader with a budget: see the module's docstring."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._expanded = 0  # nodes added by aliases, this stream
        self._depth = 0
        self._open: set[str] = set()  # anchors of the nodes being composed
        self._sizes: dict[int, int] = {}  # id(node) -> nodes it expands to, this document

    def compose_document(self) -> yaml.Node | None:
        self._sizes = {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event: Any = self.peek_event()  # type: ignore[no-untyped-call]
        mark: Any = event.start_mark
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open:
                raise YAMLBudgetError(
                    None, None, f"alias *{event.anchor} refers to the node that contains it", mark, _NO_ALIASES
                )
            target = self.anchors.get(event.anchor)
            if target is not None:
                self._expanded += self._size(target)
                if self._expanded > ALIAS_BUDGET:
                    raise YAMLBudgetError(
                        None,
                        None,
                        f"aliases expand this YAML beyond {ALIAS_BUDGET} nodes (at *{event.anchor}); "
                        "archlift refuses it (an alias bomb?)",
                        mark,
                        _NO_ALIASES,
                    )
            return super().compose_node(parent, index)
        anchor = getattr(event, "anchor", None)
        if self._depth >= MAX_DEPTH:
            raise YAMLBudgetError(None, None, f"nested deeper than {MAX_DEPTH} levels", mark, "flatten the structure")
        self._depth += 1
        if anchor:
            self._open.add(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open.discard(anchor or "")

    def _size(self, node: yaml.Node) -> int:
        """How many nodes ``node`` stands for with every alias in it expanded (memoised, no recursion)."""
        stack = [node]
        while stack:
            top = stack[-1]
            if id(top) in self._sizes:
                stack.pop()
                continue
            children = _children(top)
            todo = [c for c in children if id(c) not in self._sizes]
            if todo:
                stack += todo
                continue
            self._sizes[id(top)] = 1 + sum(self._sizes[id(c)] for c in children)
            stack.pop()
        return self._sizes[id(node)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def describe(node: yaml.Node) -> str:
    """'a list', 'a string ("x")': what a node is, for error messages."""
    kind = _TAGS.get(node.tag, node.tag)
    if isinstance(node, yaml.ScalarNode) and node.value != "":
        value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
        return f'{kind} ("{value}")'
    return kind


def closest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""


@dataclass(frozen=True)
class Field:
    """One node of the file, with its dotted path (``components.hello.build``)."""

    node: yaml.Node
    path: str
    file: Path

    # --- errors -------------------------------------------------------
    def where(self) -> str:
        mark = self.node.start_mark
        return f"{self.file}:{mark.line + 1}:{mark.column + 1}"

    def error(self, message: str, hint: str = "") -> ConfigError:
        field = f" {self.path}:" if self.path else ""
        return ConfigError(f"{self.where()}:{field} {message}", hint=hint)

    def expected(self, what: str, hint: str = "") -> ConfigError:
        return self.error(f"expected {what}, found {describe(self.node)}", hint)

    # --- mappings -----------------------------------------------------
    def is_mapping(self) -> bool:
        return isinstance(self.node, yaml.MappingNode)

    def items(self, allowed: tuple[str, ...] | None = None) -> Iterator[tuple[str, Field]]:
        """Key/value pairs of a mapping; rejects unknown and duplicate keys."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.expected("a mapping")
        seen: dict[str, yaml.Node] = {}
        for key_node, value_node in self.node.value:
            key_field = Field(key_node, self.path, self.file)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != "tag:yaml.org,2002:str":
                raise key_field.expected("a plain string key")
            key = key_node.value
            sub = f"{self.path}.{key}" if self.path else key
            if key in seen:
                first = seen[key].start_mark.line + 1
                raise Field(key_node, sub, self.file).error(
                    f"duplicate key '{key}' (first defined on line {first})", "remove or rename one of them"
                )
            seen[key] = key_node
            if allowed is not None and key not in allowed:
                hint = closest(key, allowed) or f"valid keys here: {', '.join(allowed)}"
                raise Field(key_node, sub, self.file).error(f"unknown key '{key}'", hint)
            yield key, Field(value_node, sub, self.file)

    def mapping(self, allowed: tuple[str, ...] | None = None) -> dict[str, Field]:
        return dict(self.items(allowed))

    def key_fields(self) -> dict[str, Field]:
        """The keys of a mapping as fields (where each key is written), in order."""
        if not isinstance(self.node, yaml.MappingNode):
            raise self.expected("a mapping")
        return {
            k.value: Field(k, f"{self.path}.{k.value}" if self.path else k.value, self.file)
            for k, _ in self.node.value
            if isinstance(k, yaml.ScalarNode)
        }

    # --- scalars and lists ----------------------------------------------
    def string(self, what: str = "a string") -> str:
        node = self.node
        if not isinstance(node, yaml.ScalarNode) or node.tag not in (
            "tag:yaml.org,2002:str",
            "tag:yaml.org,2002:int",
            "tag:yaml.org,2002:float",
        ):
            raise self.expected(what)
        return self.interpolate(str(node.value))

    def nonempty(self, what: str = "a non-empty string") -> str:
        value = self.string(what)
        if not value.strip():
            raise self.expected(what)
        return value

    def integer(self, minimum: int | None = None) -> int:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != "tag:yaml.org,2002:int":
            raise self.expected("a whole number")
        value = int(self.node.value)
        if minimum is not None and value < minimum:
            raise self.error(f"expected a whole number of at least {minimum}, found {value}")
        return value

    def boolean(self) -> bool:
        if not isinstance(self.node, yaml.ScalarNode) or self.node.tag != "tag:yaml.org,2002:bool":
            raise self.expected("true or false")
        return self.node.value.lower() in ("true", "yes", "on")

    def sequence(self, what: str = "a list") -> list[Field]:
        if not isinstance(self.node, yaml.SequenceNode):
            raise self.expected(what)
        return [Field(n, f"{self.path}[{i}]", self.file) for i, n in enumerate(self.node.value)]

    def strings(self, what: str = "a list of strings") -> list[str]:
        return [item.nonempty("a non-empty string") for item in self.sequence(what)]

    def string_map(self) -> dict[str, str]:
        return {k: v.string("a string (quote numbers and booleans)") for k, v in self.items()}

    def interpolate(self, text: str) -> str:
        """``${VAR}`` and ``${VAR:-default}`` from the environment (compose style)."""

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if value:
                return value
            if default is not None:
                return default
            raise self.error(
                f"environment variable '{name}' is not set",
                f"set it, or write ${{{name}:-default}} in {self.file.name}",
            )

        return _ENV_RE.sub(sub, text)


def compose(path: Path) -> Field:
    """Parse ``path`` into a root Field; YAML errors become located ConfigErrors."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found", hint="pass the path of an images.yaml") from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read as a text file ({e.__class__.__name__})") from None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.lstrip(" ")
        if stripped.startswith("\t"):
            raise ConfigError(
                f"{path}:{number}:{len(line) - len(stripped) + 1}: a tab is used for indentation",
                hint="YAML indents with spaces only: replace the tab with spaces",
            )
    try:
        node = yaml.compose(text, Loader=BoundedLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = e.problem or e.context or "invalid YAML"
        if isinstance(e, YAMLBudgetError):
            raise ConfigError(f"{where}: {problem}", hint=e.note or "") from None
        raise ConfigError(f"{where}: YAML syntax error: {problem}", hint="fix the YAML syntax at that spot") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML error: {e}") from None
    if node is None:
        raise ConfigError(f"{path}:1:1: the file is empty", hint="an images.yaml needs at least 'components:'")
    return Field(node, "", path)
