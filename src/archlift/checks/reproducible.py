"""Reproducible images: build a component twice from empty caches and compare.

Both builds set ``SOURCE_DATE_EPOCH`` to the upstream commit's committer time
(build arg and environment) and export an OCI layout with BuildKit's
``rewrite-timestamp=true``, so file times in the layers, the image configs'
``created`` and the layout's annotations come from the commit, not the clock.
``--no-cache`` and no registry cache import make each build start empty.

Attestations: BuildKit's provenance records ``buildStartedOn`` /
``buildFinishedOn`` and the build's invocation ID, so two builds of the same
inputs never give the same provenance, and an index that lists attestation
manifests cannot keep its digest. By default both builds therefore run with
provenance and SBOM off and the *index digests* must be equal. With
``attestations=True`` the builds use the images.yaml settings; then every
*platform manifest* must be equal, and the attestation documents that differ
are listed with the JSON fields that differ (expected: timestamps and IDs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.model import Config
from ..errors import BuildError, ConfigError
from ..oci import Descriptor, Manifest
from ..oci.layout import Layout
from ..refs import Digest
from ..steps.engine import BuildJob, bake_target, failure_text

Say = Callable[[str], None]

ATTESTATIONS_OFF = (
    "attestations: off for both builds (BuildKit provenance carries build start/finish times and an "
    "invocation ID); compared: the image index, its platform manifests, configs and layers"
)
ATTESTATIONS_ON = (
    "attestations: as images.yaml sets them; provenance carries build times and an invocation ID, so the "
    "index digest is not compared: every platform manifest (config and layers) must be equal, and the "
    "attestation documents that differ are listed"
)


@dataclass(frozen=True)
class Difference:
    """The first place where two builds differ."""

    platform: str  # "linux/arm64", or "" for the index itself
    what: str  # index | platforms | manifest | config | layer | attestation
    detail: str
    first: Digest | None = None
    second: Digest | None = None
    layer: int | None = None  # 1-based position in the manifest's layers
    path: str = ""  # the file inside the layer, or the JSON path in a config / attestation

    def describe(self) -> str:
        where = self.platform or "index"
        text = f"{where}: {self.what}"
        if self.layer is not None:
            text += f" {self.layer}"
        if self.first and self.second:
            text += f" ({self.first.short()} vs {self.second.short()})"
        if self.path:
            text += f": {self.path}"
        return f"{text}: {self.detail}"


@dataclass(frozen=True)
class Comparison:
    first: Digest
    second: Digest
    platforms: dict[str, tuple[Digest, Digest | None]]  # platform -> (first, second) manifest digests
    differences: tuple[Difference, ...] = ()  # image differences, first one first
    attestation_differences: tuple[Difference, ...] = ()

    @property
    def same_index(self) -> bool:
        return self.first == self.second

    @property
    def same_images(self) -> bool:
        return not self.differences


@dataclass(frozen=True)
class Result:
    component: str
    epoch: int
    commit: str
    attestations: bool
    comparison: Comparison
    kept: tuple[Path, ...] = ()
    released: dict[str, Digest] | None = None  # the lock's platform manifests, when compared with them

    @property
    def matches_release(self) -> bool | None:
        """Whether the rebuilt platform manifests are the released ones (None: not compared)."""
        if self.released is None:
            return None
        rebuilt = {p: a for p, (a, _) in self.comparison.platforms.items()}
        return rebuilt == self.released

    @property
    def ok(self) -> bool:
        same = self.comparison.same_images if self.attestations else self.comparison.same_index
        return same and self.matches_release is not False

    def to_json(self) -> dict[str, Any]:
        c = self.comparison
        return {
            "component": self.component,
            "reproducible": self.ok,
            "source_date_epoch": self.epoch,
            "commit": self.commit,
            "attestations": self.attestations,
            "policy": ATTESTATIONS_ON if self.attestations else ATTESTATIONS_OFF,
            "index": [str(c.first), str(c.second)],
            "platforms": {p: [str(a), str(b) if b else None] for p, (a, b) in sorted(c.platforms.items())},
            "differences": [d.describe() for d in c.differences],
            "attestation_differences": [d.describe() for d in c.attestation_differences],
            "kept": [str(p) for p in self.kept],
            "released": {p: str(d) for p, d in sorted(self.released.items())} if self.released is not None else None,
            "matches_release": self.matches_release,
        }

    def text(self) -> str:
        c = self.comparison
        lines = [
            f"{self.component}: two builds from empty caches, SOURCE_DATE_EPOCH={self.epoch} "
            f"(committer time of {self.commit[:12]}), layer timestamps rewritten",
            ATTESTATIONS_ON if self.attestations else ATTESTATIONS_OFF,
            f"  build 1: {c.first}",
            f"  build 2: {c.second}",
        ]
        for platform, (a, b) in sorted(c.platforms.items()):
            mark = "same" if a == b else "DIFFERENT"
            lines.append(f"  {platform:<14} {a.short()} {b.short() if b else '-':<12} {mark}")
        if c.differences:
            lines.append(f"NOT reproducible: first difference: {c.differences[0].describe()}")
            lines += [f"  then: {d.describe()}" for d in c.differences[1:6]]
        for d in c.attestation_differences[:8]:
            lines.append(f"  attestation (expected to differ): {d.describe()}")
        if self.released is not None:
            for platform, digest in sorted(self.released.items()):
                rebuilt = c.platforms.get(platform, (None, None))[0]
                mark = "same as released" if rebuilt == digest else "DIFFERENT from the release"
                lines.append(f"  released {platform:<14} {digest.short()} {mark}")
            if not self.matches_release:
                lines.append(
                    "NOT the released image: the release build must use the same SOURCE_DATE_EPOCH, "
                    "rewrite-timestamp=true, build args, contexts and labels"
                )
        if self.ok:
            what = "index digests are equal" if c.same_index else "platform manifests are equal"
            lines.append(f"reproducible: the {what}" + (", and equal to the release" if self.released else ""))
        for p in self.kept:
            lines.append(f"  kept: {p}")
        return "\n".join(lines)


# --- building -----------------------------------------------------------------


def build_definition(job: BuildJob, config: Config, *, attestations: bool) -> dict[str, Any]:
    """The release's own bake target for ``job`` (``archlift.steps.engine.bake_target``), from an empty cache
    and always with SOURCE_DATE_EPOCH and rewritten timestamps."""
    return {"target": {job.target: bake_target(job, config, fresh=True, attestations=attestations, reproducible=True)}}


def verify_component(
    config: Config,
    name: str,
    *,
    attestations: bool = False,
    keep: Path | None = None,
    released: dict[str, Digest] | None = None,
    say: Say = lambda _: None,
) -> Result:
    """Build ``name`` twice from empty caches and compare the two OCI layouts (and, when ``released``
    names the platform manifests of a release, the rebuilt ones with them)."""
    from .. import buildx
    from ..steps.decide import Bases, inputs_for, open_run, source_of

    comp = config.components.get(name)
    if comp is None:
        raise ConfigError(f"no component '{name}' in {config.path}", hint=f"known: {', '.join(config.components)}")
    if comp.mirror or comp.build is None:
        raise ConfigError(f"'{name}' is mirrored, not built: there is nothing to reproduce")
    with open_run(config) as session:
        inputs, resolved = inputs_for(comp, config, session.resolver, session.trees, Bases(session.client))
        tree = session.trees.tree(source_of(comp), comp.name)
        epoch = resolved.commit_time
        work = Path(tempfile.mkdtemp(prefix="reproduce-", dir=session.trees.root))
        layouts: list[Path] = []
        digests: list[Digest] = []
        for n in (1, 2):
            job = BuildJob(comp, inputs, tree, work / f"build{n}")
            bakefile, metadata = work / f"build{n}.bake.json", work / f"build{n}.metadata.json"
            bakefile.write_text(json.dumps(build_definition(job, config, attestations=attestations), indent=2))
            say(f"{name}: build {n} of 2 (no cache, SOURCE_DATE_EPOCH={epoch})")
            built = buildx.bake(bakefile, metadata, [job.target], builder=config.builder)
            if built.returncode != 0:
                raise BuildError(f"{name}: reproducibility build {n}: {failure_text(list(built.lines))}")
            try:
                digests.append(Digest.parse(json.loads(metadata.read_text())[job.target]["containerimage.digest"]))
            except (OSError, KeyError, ValueError) as e:
                raise BuildError(f"{name}: build {n} wrote no image digest to its metadata file ({e})") from e
            layouts.append(job.layout)
        comparison = compare_layouts(Layout(layouts[0]), Layout(layouts[1]), digests[0], digests[1])
        kept: tuple[Path, ...] = ()
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            kept_paths = []
            for n, path in enumerate(layouts, 1):
                target = keep / f"{name}-build{n}"
                shutil.rmtree(target, ignore_errors=True)
                shutil.move(str(path), target)
                kept_paths.append(target)
            kept = tuple(kept_paths)
        return Result(name, epoch, resolved.commit, attestations, comparison, kept, released)


# --- comparing ----------------------------------------------------------------


def _platforms(layout: Layout, index: Manifest) -> tuple[dict[str, Descriptor], dict[str, Descriptor]]:
    """Platform -> image manifest, and platform -> attestation manifest (by the subject it names)."""
    images: dict[str, Descriptor] = {}
    by_digest: dict[str, str] = {}
    for desc in index.descriptors():
        if not desc.is_attestation and desc.platform:
            images[str(desc.platform)] = desc
            by_digest[str(desc.digest)] = str(desc.platform)
    attestations: dict[str, Descriptor] = {}
    for desc in index.descriptors():
        if desc.is_attestation:
            subject = desc.annotations.get("vnd.docker.reference.digest", "")
            attestations[by_digest.get(subject, subject)] = desc
    return images, attestations


def compare_layouts(a: Layout, b: Layout, first: Digest, second: Digest) -> Comparison:
    index_a, index_b = a.manifest(first), b.manifest(second)
    if not index_a.is_index:
        # One platform exported as a bare manifest: compare it as the only "platform".
        images_a = {"image": index_a.descriptor()}
        images_b = {"image": b.manifest(second).descriptor()}
        att_a: dict[str, Descriptor] = {}
        att_b: dict[str, Descriptor] = {}
    else:
        images_a, att_a = _platforms(a, index_a)
        images_b, att_b = _platforms(b, index_b)
    platforms = {p: (d.digest, images_b[p].digest if p in images_b else None) for p, d in images_a.items()}
    diffs: list[Difference] = []
    if set(images_a) != set(images_b):
        diffs.append(Difference("", "platforms", f"build 1 has {sorted(images_a)}, build 2 has {sorted(images_b)}"))
    for platform in sorted(set(images_a) & set(images_b)):
        da, db = images_a[platform], images_b[platform]
        if da.digest != db.digest:
            diffs += list(_compare_images(a, b, platform, da, db))
    if first != second and not diffs and not index_a.is_index:
        diffs.append(Difference("", "index", "the documents differ", first, second))
    att_diffs: list[Difference] = []
    for platform in sorted(set(att_a) & set(att_b)):
        if att_a[platform].digest != att_b[platform].digest:
            att_diffs += list(_compare_attestations(a, b, platform, att_a[platform], att_b[platform]))
    if first != second and not diffs and not att_diffs and index_a.is_index:
        for path in _json_paths(index_a.json(), index_b.json()):
            att_diffs.append(Difference("", "index", "the index documents differ", first, second, path=path))
    return Comparison(first, second, platforms, tuple(diffs), tuple(att_diffs))


def _compare_images(a: Layout, b: Layout, platform: str, da: Descriptor, db: Descriptor) -> Iterator[Difference]:
    """Layers first (the first differing one, down to the file), then the config, then the manifest itself."""
    ma, mb = a.manifest(da.digest, da.media_type), b.manifest(db.digest, db.media_type)
    ca, cb = ma.config, mb.config
    layers_a = [d for d in ma.descriptors() if d != ca]
    layers_b = [d for d in mb.descriptors() if d != cb]
    found = False
    if len(layers_a) != len(layers_b):
        found = True
        yield Difference(platform, "manifest", f"{len(layers_a)} layers vs {len(layers_b)}", da.digest, db.digest)
    layer_differs = False
    for n, (la, lb) in enumerate(zip(layers_a, layers_b, strict=False), 1):
        if la.digest != lb.digest:
            where, detail = compare_layer_blobs(a.read(la.digest), b.read(lb.digest), la.media_type)
            found = layer_differs = True
            yield Difference(platform, "layer", detail, la.digest, lb.digest, layer=n, path=where)
            break  # the first differing layer is named; later ones usually follow from it
    if ca and cb and ca.digest != cb.digest:
        paths = _json_paths(json.loads(a.read(ca.digest)), json.loads(b.read(cb.digest)))
        if layer_differs:  # the layer's digest is in rootfs.diff_ids: that follows, it is no second cause
            paths = [p for p in paths if not p.startswith("rootfs.diff_ids")]
        if paths:
            found = True
            yield Difference(
                platform, "config", "the image configs differ", ca.digest, cb.digest, path=", ".join(paths[:5])
            )
    if not found:
        paths = _json_paths(ma.json(), mb.json())
        yield Difference(platform, "manifest", "the manifests differ", da.digest, db.digest, path=", ".join(paths[:5]))


def _compare_attestations(a: Layout, b: Layout, platform: str, da: Descriptor, db: Descriptor) -> Iterator[Difference]:
    ma, mb = a.manifest(da.digest, da.media_type), b.manifest(db.digest, db.media_type)
    layers_a, layers_b = _attestation_parts(ma), _attestation_parts(mb)
    for kind in sorted(set(layers_a) & set(layers_b)):
        la, lb = layers_a[kind], layers_b[kind]
        if la.digest == lb.digest:
            continue
        try:
            paths = _json_paths(json.loads(a.read(la.digest)), json.loads(b.read(lb.digest)))
        except ValueError:
            paths = ["(not JSON)"]
        yield Difference(f"{platform} attestation", kind, "differs", la.digest, lb.digest, path=", ".join(paths[:6]))


def _attestation_parts(manifest: Manifest) -> dict[str, Descriptor]:
    """An attestation manifest's blobs by what they are: "config", or the in-toto predicate type."""
    config = manifest.config
    out = {}
    for n, desc in enumerate(manifest.descriptors()):
        if config is not None and desc == config:
            out["config"] = desc
        else:
            out[desc.annotations.get("in-toto.io/predicate-type", f"layer {n}")] = desc
    return out


def _json_paths(x: Any, y: Any, prefix: str = "") -> list[str]:
    """The JSON paths at which two documents differ (first ones first)."""
    if isinstance(x, dict) and isinstance(y, dict):
        out: list[str] = []
        for key in sorted(set(x) | set(y)):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in x or key not in y:
                out.append(where + (" (only in build 2)" if key not in x else " (only in build 1)"))
            else:
                out += _json_paths(x[key], y[key], where)
        return out
    if isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        out = []
        for i, (p, q) in enumerate(zip(x, y, strict=True)):
            out += _json_paths(p, q, f"{prefix}[{i}]")
        return out
    return [] if x == y else [prefix or "(document)"]


# --- layers ---------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    name: str
    type: str
    mode: int
    uid: int
    gid: int
    mtime: float
    size: int
    linkname: str
    sha256: str
    extra: dict[str, str] = field(default_factory=dict, hash=False)  # pax headers, uname, gname


def _decompress(blob: bytes, media_type: str) -> bytes:
    if media_type.endswith("+zstd") or blob[:4] == b"\x28\xb5\x2f\xfd":
        raise ValueError("zstd")
    if media_type.endswith("gzip") or blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    return blob


def members(blob: bytes, media_type: str = "") -> list[Member]:
    """The entries of a layer (tar, tar+gzip), in order, with a hash of each file's content."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(_decompress(blob, media_type)), mode="r:") as tar:
        for info in tar:
            digest = ""
            if info.isfile():
                f = tar.extractfile(info)
                digest = hashlib.sha256(f.read() if f else b"").hexdigest()
            extra = {f"pax:{k}": v for k, v in info.pax_headers.items()}
            extra.update({"uname": info.uname, "gname": info.gname})
            kind = "file" if info.isfile() else "dir" if info.isdir() else "symlink" if info.issym() else "other"
            if info.islnk():
                kind = "hardlink"
            out.append(
                Member(info.name, kind, info.mode, info.uid, info.gid, info.mtime, info.size, info.linkname, digest,
                       extra)
            )  # fmt: skip
    return out


_FIELDS = ("type", "sha256", "size", "mode", "uid", "gid", "mtime", "linkname", "extra")


def compare_layer_blobs(blob_a: bytes, blob_b: bytes, media_type: str = "") -> tuple[str, str]:
    """(file, what differs) for the first entry that differs between two layers."""
    try:
        ma, mb = members(blob_a, media_type), members(blob_b, media_type)
    except ValueError as e:
        if str(e) == "zstd":
            return "", "zstd-compressed layers differ (archlift lists gzip and plain tar layers only)"
        raise
    except (tarfile.TarError, OSError) as e:
        return "", f"the layers differ and one is not a readable tar ({e})"
    by_name_b = {m.name: m for m in mb}
    names_a = {m.name for m in ma}
    for m in ma:
        other = by_name_b.get(m.name)
        if other is None:
            return m.name, "only in build 1"
        for name in _FIELDS:
            x, y = getattr(m, name), getattr(other, name)
            if x != y:
                what = "content differs" if name == "sha256" else f"{name} {_show(name, x)} vs {_show(name, y)}"
                return m.name, what
    for m in mb:
        if m.name not in names_a:
            return m.name, "only in build 2"
    if [m.name for m in ma] != [m.name for m in mb]:
        return "", "the same entries in a different order"
    if len(blob_a) != len(blob_b) or blob_a != blob_b:
        try:
            if _decompress(blob_a, media_type) == _decompress(blob_b, media_type):
                return "", "the same tar, compressed differently"
        except ValueError:
            pass
    return "", "the same entries; the tar headers or padding differ"


def _show(name: str, value: Any) -> str:
    if name == "mode":
        return oct(value)
    if name == "mtime":
        return str(int(value))
    return repr(value) if isinstance(value, str | dict) else str(value)
