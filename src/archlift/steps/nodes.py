"""Node registry configuration: what containerd and CRI-O need to pull every image of a release
from a mirror under the image's upstream name (``archlift mirror-config``).

For installs that cannot be rewritten to the mirror (a Helm chart applied as is, an operator that
names images at runtime), the node's runtime rewrites instead: a pull of ``HOST/PATH`` goes to
``MIRROR/PREFIX/<host segment>/PATH``, which is where the mirror's ``upstream`` layout
(``archlift mirror --layout upstream``, :class:`archlift.steps.mirror.Target`) puts every image
under each of its names. So one entry per upstream registry host is enough:

- containerd: ``<host>/hosts.toml`` (the ``config_path`` directory, ``/etc/containerd/certs.d``),
  a ``[host."<scheme>://MIRROR/v2/PREFIX/<host segment>"]`` with ``override_path = true`` (the
  path is the API root: containerd appends ``/<path>/manifests/<reference>`` to it);
- CRI-O (containers-registries.conf v2): a drop-in with one ``[[registry]]`` per host,
  ``prefix = location = "<host>"``, and a ``[[registry.mirror]]`` at
  ``MIRROR/PREFIX/<host segment>`` (the prefix of a name is replaced by the mirror's location).

``lock + target -> NodeConfig`` is pure (``node_config``); ``NodeConfig.write`` puts the files
under a directory, never over a file that archlift did not write.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, UsageError
from ..lock import ReleaseLock
from ..refs import DEFAULT_DOMAIN
from .mirror import UPSTREAM, Target, host_segment, names

CONTAINERD = "containerd"
CRIO = "cri-o"
FORMATS = (CONTAINERD, CRIO)
DOCKER_HUB_SERVER = "https://registry-1.docker.io"  # containerd's docker.io endpoint
CA_NAME = "archlift-mirror-ca.crt"  # containerd: next to each hosts.toml (a relative "ca" is read from there)
DROP_IN = "registries.conf.d/50-archlift-mirror.conf"
MARK = "# written by archlift mirror-config"


@dataclass(frozen=True)
class UpstreamImage:
    repository: str  # the path under its upstream host
    component: str
    tags: tuple[str, ...]  # the tags the mirror holds it at (a pull by another tag misses the mirror)


@dataclass(frozen=True)
class UpstreamHost:
    """An upstream registry host the release's images are named under, and those images."""

    host: str  # as names carry it: docker.io, gcr.io, registry.example:5000
    images: tuple[UpstreamImage, ...]
    mirror: str  # MIRROR/PREFIX/<host segment>: where the mirror holds them


@dataclass(frozen=True)
class NodeFile:
    path: str  # relative to the output directory, '/'-separated
    data: bytes


@dataclass(frozen=True)
class NodeConfig:
    format: str
    target: Target
    plain_http: bool
    hosts: tuple[UpstreamHost, ...]
    files: tuple[NodeFile, ...]

    def write(self, out: Path) -> list[Path]:
        """Write the files under ``out`` (each atomically). Refuses, before writing anything, to
        replace a file there that archlift did not write (an existing hosts.toml, drop-in or CA)."""
        for f in self.files:
            path = out / f.path
            if path.is_symlink() or path.exists():
                try:
                    old = path.read_bytes()
                except OSError as e:
                    raise ConfigError(f"{path}: cannot be read ({e.strerror}); nothing was written") from None
                if old != f.data and not old.startswith(MARK.encode()):
                    raise ConfigError(
                        f"{path} exists and was not written by archlift mirror-config; nothing was written",
                        hint="merge the mirror entry into it by hand, or give another --out directory",
                    )
        written = []
        for f in self.files:
            path = out / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}")
            tmp.write_bytes(f.data)
            os.replace(tmp, path)
            written.append(path)
        return written

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "mirror": str(self.target),
            "plain_http": self.plain_http,
            "hosts": [
                {
                    "host": h.host,
                    "mirror": h.mirror,
                    "images": [
                        {"repository": i.repository, "component": i.component, "tags": list(i.tags)} for i in h.images
                    ],
                }
                for h in self.hosts
            ],
            "files": [f.path for f in self.files],
        }


def upstream_hosts(lock: ReleaseLock, target: Target) -> tuple[UpstreamHost, ...]:
    """Every registry host the release's images are named under (``names``), sorted, with the
    images under it and the tags the mirror holds each at (``Target.places``)."""
    found: dict[str, dict[str, UpstreamImage]] = {}
    for comp in sorted(lock.components.values(), key=lambda c: c.name):
        tags = dict(target.places(comp))
        for name in names(comp):
            image = UpstreamImage(name.repository, comp.name, tags[target.map(name.name)])
            found.setdefault(name.registry, {}).setdefault(name.repository, image)
    prefix = f"{target.registry}/{target.prefix}" if target.prefix else target.registry
    return tuple(
        UpstreamHost(host, tuple(images[r] for r in sorted(images)), f"{prefix}/{host_segment(host)}")
        for host, images in sorted(found.items())
    )


def node_config(
    lock: ReleaseLock, target: Target, fmt: str, *, plain_http: bool, ca: bytes | None = None
) -> NodeConfig:
    """The files for ``fmt`` that send every upstream host of the release to ``target`` (a mirror
    in the upstream layout), over plain HTTP or TLS (trusting ``ca`` as well, when given)."""
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt}: not a node format (choose {' or '.join(FORMATS)})")
    if target.layout != UPSTREAM:
        raise ConfigError(f"{target}: node configuration needs the upstream layout (archlift mirror --layout upstream)")
    if plain_http and ca is not None:
        raise UsageError("--ca-file is for a TLS mirror; a plain-HTTP mirror (loopback or --insecure) has no CA")
    hosts = upstream_hosts(lock, target)
    if not hosts:
        raise ConfigError("the release lock has no component: there is nothing for the nodes to pull")
    files = _containerd(hosts, target, plain_http, ca) if fmt == CONTAINERD else _crio(hosts, target, plain_http, ca)
    return NodeConfig(fmt, target, plain_http, hosts, tuple(files))


def _header(what: str, target: Target, then: str, images: Sequence[tuple[str, UpstreamImage]]) -> str:
    """The comment that opens each file: what it does, and the images it is for (and their tags)."""
    lines = [
        f"{MARK}: pulls of {what} go to the mirror",
        f"# {target} (filled by 'archlift mirror --layout upstream') first, then to {then}.",
        "# The release's images there, by digest and by these tags:",
    ]
    lines += [f"#   {name}: {', '.join(i.tags) or '(by digest only)'}" for name, i in images]
    return "\n".join(lines) + "\n"


def _containerd(hosts: Sequence[UpstreamHost], target: Target, plain: bool, ca: bytes | None) -> list[NodeFile]:
    scheme = "http" if plain else "https"
    files = []
    for h in hosts:
        server = DOCKER_HUB_SERVER if h.host == DEFAULT_DOMAIN else f"https://{h.host}"
        text = _header(f"{h.host} images", target, "the server", [(i.repository, i) for i in h.images])
        text += f'server = "{server}"\n\n'
        text += f'[host."{scheme}://{target.registry}/v2/{h.mirror.partition("/")[2]}"]\n'
        text += '  capabilities = ["pull", "resolve"]\n  override_path = true\n'
        if ca is not None:
            text += f'  ca = "{CA_NAME}"\n'
        files.append(NodeFile(f"{h.host}/hosts.toml", text.encode()))
        if ca is not None:
            files.append(NodeFile(f"{h.host}/{CA_NAME}", ca))
    return files


def _crio(hosts: Sequence[UpstreamHost], target: Target, plain: bool, ca: bytes | None) -> list[NodeFile]:
    images = [(f"{h.host}/{i.repository}", i) for h in hosts for i in h.images]
    blocks = [_header("the registries below", target, "the registry", images)]
    for h in hosts:
        block = f'[[registry]]\nprefix = "{h.host}"\nlocation = "{h.host}"\n\n'
        block += f'[[registry.mirror]]\nlocation = "{h.mirror}"\n'
        blocks.append(block + ("insecure = true\n" if plain else ""))
    files = [NodeFile(DROP_IN, "\n".join(blocks).encode())]
    if ca is not None:
        files.append(NodeFile(f"certs.d/{target.registry}/ca.crt", ca))
    return files
