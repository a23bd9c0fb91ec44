"""Publish rendered manifests as OCI artifacts that Config Sync and Flux sync (see docs/manifests.md).

Two forms of the same files, pushed to one repository under two tags with the one copy
(``archlift.oci.copy``, archlift's registry client: see docs/manifests.md):

- ``TAG``: for Config Sync's ``RootSync`` with ``sourceType: oci``: one layer, a tar of
  the YAML files (``application/vnd.oci.image.layer.v1.tar``), as ``oras push dir.tar``
  makes it (seed 001). Config Sync pulls it with go-containerregistry and untars every
  layer (``mutate.Extract``), so the files land at the root: ``dir: .``.
- ``TAG-flux``: for Flux's ``OCIRepository``: config ``application/vnd.cncf.flux.config.v1+json``
  and one layer ``application/vnd.cncf.flux.content.v1.tar+gzip`` (the same tar, gzipped),
  as ``flux push artifact`` makes it.

Everything is deterministic: names sorted, mtime 0, uid/gid 0, no pax headers, gzip with
mtime 0, no timestamp annotations, the manifest JSON written by us with sorted keys. The
same rendered bytes give the same two digests, computed before anything is pushed.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, PublishError, RegistryError
from ..lock import write_atomic
from ..oci import Descriptor, Manifest, auth
from ..oci.client import RegistryClient, chunks_of, is_loopback
from ..oci.copy import ImagePlan, copy
from ..oci.layout import LayoutStore
from ..oci.store import Opener, RegistryStore
from ..refs import Digest, ImageRef, is_tag
from .render import dump_document

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
ARTIFACT_TYPE = "application/vnd.archlift.manifests.v1"
TITLE = "org.opencontainers.image.title"


@dataclass(frozen=True)
class Form:
    name: str  # "configsync" | "flux"
    tag_suffix: str
    config_media_type: str
    layer_media_type: str
    layer_title: str
    gzip: bool
    artifact_type: str | None = None


CONFIG_SYNC = Form("configsync", "", OCI_EMPTY, OCI_TAR, "manifests.tar", False, ARTIFACT_TYPE)
FLUX = Form("flux", "-flux", FLUX_CONFIG, FLUX_CONTENT, "manifests.tar.gz", True)
FORMS = (CONFIG_SYNC, FLUX)


# --- packing (pure) -------------------------------------------------------------------
def collect_files(directory: Path) -> list[tuple[str, bytes]]:
    """The regular files under ``directory`` (hidden ones skipped), as sorted relative posix paths."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: no rendered manifests here", hint="run 'archlift render' first")
    files = []
    for path in sorted(directory.rglob("*")):
        rel = path.relative_to(directory)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_symlink():
            raise ConfigError(f"{path}: a symbolic link; the manifests directory must hold plain files")
        if path.is_file():
            files.append((rel.as_posix(), path.read_bytes()))
    if not files:
        raise ConfigError(f"{directory}: no files to publish", hint="run 'archlift render' first")
    return files


def tar_bytes(files: Sequence[tuple[str, bytes]]) -> bytes:
    """A reproducible tar: sorted names, parent directories first, mtime 0, root-owned, no pax headers."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        dirs_done: set[str] = set()
        for name, data in sorted(files):
            parts = name.split("/")[:-1]
            for i in range(1, len(parts) + 1):  # Config Sync's untar does not create parents
                d = "/".join(parts[:i])
                if d not in dirs_done:
                    dirs_done.add(d)
                    tar.addfile(_info(d + "/", tarfile.DIRTYPE, 0o755, 0))
            tar.addfile(_info(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _info(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size, info.mtime = kind, mode, size, 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def gzip_bytes(data: bytes) -> bytes:
    """gzip with no file name and mtime 0 (same input, same bytes with the same zlib)."""
    return gzip.compress(data, compresslevel=9, mtime=0)


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def digest(self) -> Digest:
        return Digest.of(self.data)

    def descriptor(self) -> dict[str, Any]:
        d: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": len(self.data)}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass(frozen=True)
class Artifact:
    form: Form
    config: Blob
    layer: Blob
    manifest: bytes

    @property
    def digest(self) -> Digest:
        return Digest.of(self.manifest)


def build_artifact(form: Form, tar: bytes) -> Artifact:
    config = Blob(form.config_media_type, b"{}")
    layer = Blob(form.layer_media_type, gzip_bytes(tar) if form.gzip else tar, {TITLE: form.layer_title})
    manifest: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    }
    if form.artifact_type:
        manifest["artifactType"] = form.artifact_type
    raw = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    return Artifact(form, config, layer, raw)


def build_artifacts(files: Sequence[tuple[str, bytes]]) -> tuple[Artifact, ...]:
    tar = tar_bytes(files)
    return tuple(build_artifact(form, tar) for form in FORMS)


# --- pushing ----------------------------------------------------------------------------
def push_all(
    artifacts: Sequence[Artifact], target: ImageRef, *, insecure: bool = False, ca_file: str | None = None
) -> tuple[dict[str, bool], bool]:
    """Push every artifact to ``target`` under its tag with the one copy (``archlift.oci.copy``),
    by way of a layout directory: each tag is asked for first, and when it already points at the
    artifact nothing is written. Returns ``form -> pushed`` and whether the registry speaks plain HTTP."""
    host, repo = target.registry, ImageRef(target.registry, target.repository)
    tag = target.tag or "latest"
    with RegistryClient(insecure=insecure, ca_file=ca_file) as client, tempfile.TemporaryDirectory() as tmp:
        try:
            challenge = client.ping(host)  # the scheme, TLS, and what the registry asks for
            if challenge == "basic" and not auth.lookup(host):
                raise PublishError(
                    f"pushing {target}: the registry asks for a user name and password, and none are configured "
                    f"for {host}",
                    hint=f"docker login {host}, or set {auth.env_name(host)}=user:password",
                )
            client.token(repo, "pull,push")  # the credentials, checked once with a clear refusal
        except RegistryError as e:
            raise PublishError(e.message, hint=e.hint) from None
        layout = LayoutStore(Path(tmp))
        images = []
        for artifact in artifacts:
            for blob in (artifact.config, artifact.layer):
                desc = Descriptor(blob.media_type, blob.digest, len(blob.data))
                layout.put_blob(repo, desc, _reader(blob.data), origin="publish")
            layout.put_manifest(repo.with_digest(artifact.digest), Manifest.of(artifact.manifest, OCI_MANIFEST))
            tags = (tag + artifact.form.tag_suffix,)
            images.append(ImagePlan(artifact.form.name, repo.with_digest(artifact.digest), repo, tags, ()))
        results = copy(images, layout, RegistryStore(client), jobs=2)
        failed = [r for r in results if r.error]
        if failed:
            raise PublishError("; ".join(f"pushing {target.name}:{r.tags[0]} ({r.name}): {r.error}" for r in failed))
        return {r.name: not r.up_to_date for r in results}, client.scheme(host) == "http"


def _reader(data: bytes) -> Opener:
    return lambda: (chunks_of(data), lambda: None)


# --- the step -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    form: str
    ref: ImageRef  # repository:tag@digest
    layer_media_type: str
    layer_digest: Digest
    pushed: bool = False  # False: the tag already pointed at it (or a dry run)


@dataclass(frozen=True)
class Publication:
    repository: ImageRef  # no tag
    files: tuple[str, ...]
    artifacts: tuple[Published, ...]
    plain_http: bool

    def by_form(self, form: Form) -> Published:
        return next(a for a in self.artifacts if a.form == form.name)

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository.name,
            "files": list(self.files),
            "plain_http": self.plain_http,
            "artifacts": {
                a.form: {
                    "ref": str(a.ref),
                    "tag": a.ref.tag,
                    "digest": str(a.ref.digest),
                    "pushed": a.pushed,
                    "layer": {"mediaType": a.layer_media_type, "digest": str(a.layer_digest)},
                }
                for a in self.artifacts
            },
        }


def parse_target(text: str) -> ImageRef:
    """``REGISTRY/REPO[:TAG]``; the tag defaults to ``latest``; a digest is refused."""
    try:
        ref = ImageRef.parse(text)
    except ValueError as e:
        raise ConfigError(f"--to {text}: {e}") from None
    if ref.digest:
        raise ConfigError(f"--to {text}: give a repository and tag, not a digest (the digest is the result)")
    tag = ref.tag or "latest"
    if not is_tag(tag + FLUX.tag_suffix):
        raise ConfigError(f"--to {text}: tag '{tag}' is too long for the '{tag}{FLUX.tag_suffix}' tag")
    return ref.with_tag(tag)


def publish(
    directory: Path, target: ImageRef, *, insecure: bool = False, ca_file: str | None = None, dry_run: bool = False
) -> Publication:
    """Push both forms of the files under ``directory`` to ``target`` (``TAG`` and ``TAG-flux``)."""
    files = collect_files(directory)
    artifacts = build_artifacts(files)
    pushed: dict[str, bool] = {}
    plain = is_loopback(target.registry)
    if not dry_run:
        pushed, plain = push_all(artifacts, target, insecure=insecure, ca_file=ca_file)
    out = []
    tag = target.tag or "latest"
    for artifact in artifacts:
        ref = target.with_tag(tag + artifact.form.tag_suffix)
        out.append(
            Published(
                artifact.form.name,
                ImageRef(ref.registry, ref.repository, ref.tag, artifact.digest),
                artifact.layer.media_type,
                artifact.layer.digest,
                pushed.get(artifact.form.name, False),
            )
        )
    return Publication(target.with_tag(tag), tuple(n for n, _ in files), tuple(out), plain)


# --- what to apply in the cluster ---------------------------------------------------------
def rootsync(pub: Publication, name: str, namespace: str = "config-management-system") -> dict[str, Any]:
    """A Config Sync ``RootSync`` that syncs the artifact by digest."""
    a = pub.by_form(CONFIG_SYNC)
    return {
        "apiVersion": "configsync.gke.io/v1beta1",
        "kind": "RootSync",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "sourceFormat": "unstructured",
            "sourceType": "oci",
            "oci": {"image": f"{a.ref.name}@{a.ref.digest}", "dir": ".", "auth": "none"},
        },
    }


def flux_objects(pub: Publication, name: str, namespace: str = "flux-system") -> list[dict[str, Any]]:
    """A Flux ``OCIRepository`` pinned by digest and a ``Kustomization`` that applies it."""
    a = pub.by_form(FLUX)
    assert a.ref.digest is not None
    spec: dict[str, Any] = {
        "interval": "10m",
        "url": f"oci://{a.ref.name}",
        "ref": {"digest": str(a.ref.digest)},
        "layerSelector": {"mediaType": FLUX_CONTENT, "operation": "extract"},
    }
    if pub.plain_http:
        spec["insecure"] = True
    return [
        {
            "apiVersion": "source.toolkit.fluxcd.io/v1beta2",
            "kind": "OCIRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        },
        {
            "apiVersion": "kustomize.toolkit.fluxcd.io/v1",
            "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "interval": "10m",
                "sourceRef": {"kind": "OCIRepository", "name": name},
                "path": "./",
                "prune": True,
                "wait": True,
            },
        },
    ]


def yaml_stream(docs: Sequence[dict[str, Any]]) -> str:
    return "".join("---\n" + dump_document(d).decode() for d in docs)


def write_outputs(pub: Publication, out: Path, name: str) -> dict[str, Path]:
    """``rootsync.yaml``, ``flux.yaml`` and ``manifests-artifact.json`` under ``out``."""
    paths = {
        "rootsync": out / "rootsync.yaml",
        "flux": out / "flux.yaml",
        "record": out / "manifests-artifact.json",
    }
    write_atomic(paths["rootsync"], yaml_stream([rootsync(pub, name)]))
    write_atomic(paths["flux"], yaml_stream(flux_objects(pub, name)))
    write_atomic(paths["record"], json.dumps(pub.to_json(), indent=2, sort_keys=True) + "\n")
    return paths
