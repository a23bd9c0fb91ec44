"""Walking a manifest tree (an index, the indexes and manifests it names) without recursion.

``walk`` visits each manifest once (by digest), children before parents, and
collects the blobs the image manifests name. A tree deeper than ``MAX_DEPTH``
levels of indexes, or with more than ``MAX_MANIFESTS`` manifests, is refused
(``TreeError``): a registry or bundle that nests indexes without end cannot make
the walk run out of stack, memory or time. A child whose bytes are not as long
as its descriptor says is refused too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ..errors import RegistryError
from ..refs import Digest
from .model import Descriptor, Manifest

MAX_DEPTH = 8  # levels below the top: index -> index -> ... -> image manifest
MAX_MANIFESTS = 10_000


class TreeError(RegistryError):
    """A manifest tree archlift will not walk (too deep, too large, inconsistent)."""

    exit_code = 2
    title = "invalid registry answer"


@dataclass(eq=False)
class Walked:
    """Manifests in push order (children first) and the blobs they need."""

    manifests: list[Manifest] = field(default_factory=list)
    blobs: dict[Digest, Descriptor] = field(default_factory=dict)


def walk(
    fetch: Callable[[Digest], Manifest],
    top: Manifest,
    seen: set[Digest] | None = None,
    *,
    into: Walked | None = None,
    max_depth: int = MAX_DEPTH,
    max_manifests: int = MAX_MANIFESTS,
    what: str = "",
) -> Walked:
    """``top`` and everything below it, each manifest fetched (``fetch``) once. Manifests
    already in ``seen`` are skipped (and what is walked is added to it); ``into`` collects
    several walks in one ``Walked``. ``what`` names the image in errors."""
    out = into if into is not None else Walked()
    seen = seen if seen is not None else set()
    if top.digest in seen:
        return out
    seen.add(top.digest)
    name = f"{what}: " if what else ""
    count = 1
    stack: list[tuple[Manifest, Iterator[Descriptor]]] = [(top, iter(top.descriptors()))]
    while stack:
        manifest, children = stack[-1]
        for d in children:
            if not (manifest.is_index and d.is_manifest):
                out.blobs[d.digest] = d
                continue
            if d.digest in seen:
                continue
            if len(stack) > max_depth:
                raise TreeError(f"{name}indexes are nested more than {max_depth} levels deep (at {d.digest})")
            count += 1
            if count > max_manifests:
                raise TreeError(f"{name}the image holds more than {max_manifests} manifests")
            child = fetch(d.digest)
            if len(child.raw) != d.size:
                raise TreeError(
                    f"{name}manifest {d.digest} is {len(child.raw)} bytes, its index says {d.size}",
                )
            seen.add(d.digest)
            stack.append((child, iter(child.descriptors())))
            break
        else:
            stack.pop()
            out.manifests.append(manifest)
    return out
