"""The docker/buildx surface, through python-on-whales (imported lazily: most commands never build).

- ``bake``: ``docker buildx bake`` of a bake file, its plain progress handed over line by line
  (the build engine reads exports and steps from it) and its metadata file written;
- ``preflight``: before a build, the builder's platforms (QEMU binfmt or native nodes) and the
  buildx and engine versions, checked once, so a missing piece is one clear sentence instead of a
  failure deep in BuildKit's output;
- ``imagetools_platforms``: the platforms ``docker buildx imagetools inspect`` lists for an image.

python-on-whales runs the same ``docker`` CLI a user would (DOCKER_HOST, DOCKER_CONFIG, contexts
and ``--builder`` honoured); every failure becomes an ``ArchliftError`` with buildx's own words.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import BuildError, ToolMissing

if TYPE_CHECKING:
    from python_on_whales import DockerClient

SETUP_HINT = "run scripts/setup-host.sh to install and start the Docker engine with buildx and QEMU"
MIN_BUILDX = (0, 13)  # rewrite-timestamp and OCI layouts with attestations


def _client() -> DockerClient:
    from python_on_whales import DockerClient

    return DockerClient()


def _docker_error(e: Exception) -> str:
    """The words of a python-on-whales error: the stderr of the command it ran (or the exception)."""
    stderr = getattr(e, "stderr", None)
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    text = (stderr or str(e)).strip()
    return "\n".join(text.splitlines()[-15:])


@dataclass(frozen=True)
class BakeResult:
    returncode: int
    lines: tuple[str, ...]  # buildx's progress output (its stderr), the last ``keep`` lines


def bake(
    bakefile: Path,
    metadata: Path,
    targets: Sequence[str],
    *,
    builder: str = "",
    on_line: Callable[[str], None] = lambda _: None,
    keep: int = 400,
) -> BakeResult:
    """Run ``docker buildx bake -f BAKEFILE --metadata-file METADATA --progress=plain TARGET...``;
    each progress line goes to ``on_line`` as it comes. Never raises on a failed build: the result
    says how it ended and what buildx printed last."""
    from python_on_whales.exceptions import DockerException

    kept: list[str] = []
    try:
        stream = _client().buildx.bake(
            list(targets),
            builder=builder or None,
            files=[bakefile],
            progress="plain",
            metadata_file=metadata,
            stream_logs=True,
        )
        assert not isinstance(stream, dict)
        for chunk in stream:
            for line in chunk.splitlines():
                kept = [*kept[-(keep - 1) :], line]
                on_line(line)
    except DockerException as e:
        return BakeResult(e.return_code or 1, tuple(kept))
    except FileNotFoundError:
        raise ToolMissing("the 'docker' command is not installed or not on PATH", hint=SETUP_HINT) from None
    return BakeResult(0, tuple(kept))


def _version(text: str) -> tuple[int, ...]:
    m = re.search(r"v?(\d+)\.(\d+)", text)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass(frozen=True)
class Builder:
    name: str
    driver: str
    platforms: tuple[str, ...]
    buildx: str  # buildx's version line
    engine: str  # the Docker engine's version


def builder(name: str = "") -> Builder:
    """What the builder (the current one, or ``name``) is and can build, with the versions."""
    from python_on_whales.exceptions import DockerException

    client = _client()
    try:
        found = client.buildx.inspect(name or None)
        buildx = client.buildx.version()
        server = client.version().server
    except FileNotFoundError:
        raise ToolMissing("the 'docker' command is not installed or not on PATH", hint=SETUP_HINT) from None
    except DockerException as e:
        raise ToolMissing(
            f"cannot use the buildx builder{f' {name!r}' if name else ''}:\n{_docker_error(e)}", hint=SETUP_HINT
        ) from None
    platforms = tuple(dict.fromkeys(p for node in found.nodes or () for p in node.platforms or ()))
    return Builder(found.name or name, found.driver or "", platforms, buildx, (server.version if server else "") or "")


def preflight(name: str, platforms: Sequence[str]) -> Builder:
    """Fail with one clear sentence when the builder cannot build ``platforms`` or buildx is too old."""
    found = builder(name)
    if _version(found.buildx.split()[-1] if found.buildx else "") < MIN_BUILDX:
        raise ToolMissing(
            f"docker buildx {found.buildx or '(unknown version)'} is too old: archlift needs buildx "
            f"{'.'.join(map(str, MIN_BUILDX))} or newer",
            hint=SETUP_HINT,
        )
    missing = [p for p in platforms if p not in found.platforms and _variantless(p) not in found.platforms]
    if missing:
        raise BuildError(
            f"the buildx builder '{found.name}' ({found.driver} driver) cannot build {', '.join(missing)}: "
            f"it lists {', '.join(found.platforms) or 'no platform'}",
            hint="enable QEMU binfmt for those architectures (scripts/setup-host.sh does arm64), or set "
            "'builder:' in images.yaml to a builder with native nodes for them",
        )
    return found


def _variantless(platform: str) -> str:
    return "/".join(platform.split("/")[:2])


def imagetools_platforms(ref: str) -> list[str]:
    """The platforms ``docker buildx imagetools inspect`` lists for ``ref`` (attestations left out)."""
    from python_on_whales.exceptions import DockerException

    try:
        manifest: Any = _client().buildx.imagetools.inspect(ref)
    except DockerException as e:
        raise BuildError(f"docker buildx imagetools inspect {ref} failed:\n{_docker_error(e)}") from None
    out = []
    for entry in manifest.manifests or ():
        plat = entry.platform
        if plat is None or plat.os in (None, "unknown"):
            continue
        out.append("/".join(p for p in (plat.os, plat.architecture, plat.variant) if p))
    return sorted(set(out))
