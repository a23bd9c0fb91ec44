"""archlift render: the install manifests of a release, every image pinned by digest."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config.model import Config, load_config
from ..errors import ConfigError
from ..lock import ReleaseLock
from ..steps.render import KUBERNETES_VERSION, Rendered, UpstreamFile, render
from .common import DEFAULT_LOCK, add_config_arg, add_json_arg, add_layout_arg, print_json

DEFAULT_OUT = Path("dist/manifests")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "render",
        help="render the install manifests with every image pinned by digest",
        description="Render the templates under manifests.templates and the upstream manifests of images.yaml "
        "against the release lock, pin every image by digest, validate every document offline against the "
        "Kubernetes schemas, and write one file per document to dist/manifests/. Refuses (exit 2) when an image "
        "is not pinned to a component of the release.",
    )
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("--lock", type=Path, default=DEFAULT_LOCK, help=f"the release lock (default: {DEFAULT_LOCK})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory, replaced (default: {DEFAULT_OUT})")
    p.add_argument(
        "--registry",
        metavar="REGISTRY[/PREFIX]",
        help="point every image at this registry instead, by the same digest: where 'archlift mirror --to' "
        "copied the release, for an air-gapped cluster that pulls only from there",
    )
    add_layout_arg(p)
    p.add_argument(
        "--kubernetes-version",
        default=KUBERNETES_VERSION,
        help=f"validate against this Kubernetes version's schemas (default: {KUBERNETES_VERSION})",
    )
    p.set_defaults(func=run)


def upstream_files(config: Config) -> list[UpstreamFile]:
    """The upstream manifests of images.yaml, located: in a source's pinned and patched tree, or a path."""
    files = []
    for item in config.manifests.upstream:
        if item.source is None:
            base = config.root
            label = item.path
        else:
            from ..steps.trees import source_tree

            base = source_tree(config, item.source)
            label = f"{item.source}:{item.path}"
        path = base / item.path
        if not path.is_file():
            raise ConfigError(f"{config.path}: upstream manifest {label} not found ({path})")
        files.append(UpstreamFile(path, label))
    return files


def replacements(config: Config) -> dict[str, str]:
    """Names upstream manifests use for our images -> component: 'replaces:', mirrored images, our own."""
    out: dict[str, str] = {}
    for comp in config.components.values():
        for name in comp.replaces:
            out.setdefault(name, comp.name)
        if comp.mirror:
            out.setdefault(comp.mirror.name, comp.name)
        out.setdefault(comp.image.name, comp.name)
    return out


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    lock = ReleaseLock.read(args.lock)
    if args.registry:
        from ..steps.mirror import Target

        lock = lock.relocated(Target.parse(args.registry, "--registry", args.layout).map)
    if config.manifests.templates is None and not config.manifests.upstream:
        raise ConfigError(
            f"{config.path}: no 'manifests:' to render", hint="add manifests.templates and/or manifests.upstream"
        )
    rendered = render(
        lock,
        templates=config.manifests.templates,
        values=config.manifests.values,
        upstream=upstream_files(config),
        replacements=replacements(config),
        kubernetes_version=args.kubernetes_version,
    )
    paths = rendered.write(args.out)
    if args.json:
        print_json(
            {
                "out": str(args.out),
                "files": [p.name for p in paths],
                "documents": [
                    {"file": d.file_name, "kind": d.kind, "namespace": d.namespace, "name": d.name, "source": d.source}
                    for d in rendered.documents
                ],
                "images": rendered.images(),
                "references": [
                    {"image": r.image, "component": r.component, "where": r.where, "pinned": r.pinned}
                    for r in rendered.references
                ],
            }
        )
        return 0
    for doc in rendered.documents:
        print(f"  {doc.file_name:<60} from {doc.source}")
    print(summary(rendered, lock, len(paths), args.out))
    return 0


def summary(rendered: Rendered, lock: ReleaseLock, files: int, out: Path) -> str:
    """What the output holds: every reference to a release image, per image, and which are pinned."""
    refs = rendered.references
    head = f"rendered {files} document(s) to {out}"
    if not refs:
        return f"{head}; they reference no image of the release"
    components = sorted({r.component for r in refs})
    loose = [r for r in refs if not r.pinned]
    state = "all pinned by digest" if not loose else f"{len(refs) - len(loose)} pinned by digest, {len(loose)} not"
    lines = [f"{head}: {len(refs)} reference(s) to {len(components)} image(s), {state}:"]
    for name in components:
        n = sum(1 for r in refs if r.component == name)
        lines.append(f"  {lock.components[name].ref} ({n} reference{'s' if n > 1 else ''})")
    lines += [f"  not pinned: '{r.image}' in {r.where}" for r in loose]
    return "\n".join(lines)
