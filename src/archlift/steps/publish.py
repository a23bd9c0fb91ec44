"""Publish rendered manifests as OCI artifacts that Config Sync and Flux sync (see docs/manifests.md).

Two forms of the same files, pushed with oras-py to one repository under two tags:

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
import logging
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import oras.provider

from ..errors import ConfigError, PublishError, RegistryError
from ..lock import write_atomic
from ..oci import auth
from ..oci.client import RegistryClient, is_loopback
from ..refs import Digest, ImageRef, is_tag
from .render import dump_document

log = logging.getLogger("archlift.steps.publish")

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
FLUX_CONFIG = "application/vnd.cncf.flux.config.v1+json"
FLUX_CONTENT = "application/vnd.cncf.flux.content.v1.tar+gzip"
ARTIFACT_TYPE = "application/vnd.archlift.manifests.v1"
TITLE = "org.opencontainers.image.title"
_RETRIES = 4
_TEMPORARY = (429, 500, 502, 503, 504)
_CREDENTIALS_HINT = "check the credentials (docker login, or ARCHLIFT_REGISTRY_USERNAME/PASSWORD)"


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
class _Oras(oras.provider.Registry):  # type: ignore[misc]
    """oras-py's registry without its retry-on-any-exception: retry only what is temporary."""

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> Any:
        once = oras.provider.Registry.do_request.__wrapped__
        for attempt in range(_RETRIES):
            last = attempt == _RETRIES - 1
            try:
                resp = once(self, url, method, data, dict(headers or {}), json, stream)
            except OSError as e:  # requests' ConnectionError and timeouts are OSErrors
                if last or "refused" in str(e).lower():
                    raise PublishError(f"{method} {url}: {e}") from None
                log.debug("%s %s: %s; retrying", method, url, e)
            else:
                if resp.status_code not in _TEMPORARY or last:
                    return resp
                log.debug("%s %s: HTTP %s; retrying", method, url, resp.status_code)
            time.sleep(0.2 * 2**attempt)
        raise AssertionError("unreachable")


@dataclass(frozen=True)
class Endpoint:
    host: str
    scheme: str  # "https" | "http"
    tls_verify: bool | str  # False, True, or a CA bundle
    challenge: str  # "basic" | "bearer" | "" (none asked)
    token: str = field(default="", repr=False)  # for "bearer": one to pull and push the target


def probe(target: ImageRef, *, insecure: bool = False, ca_file: str | None = None) -> Endpoint:
    """How to talk to the registry of ``target`` (the registry client's choice of scheme and CA:
    HTTPS, or plain HTTP only for loopback or ``insecure``), which authentication ``/v2/`` asks
    for, and for a token service, a token to push ``target`` with: oras-py keeps the first token
    it is given, whatever its scope, so a pull token would fail the push."""
    host = target.registry
    with RegistryClient(insecure=insecure, ca_file=ca_file, retries=2) as client:
        try:
            challenge = client.ping(host)
            token = client.token(target, "pull,push") if challenge == "bearer" else ""
        except RegistryError as e:
            raise PublishError(e.message, hint=e.hint) from None
        scheme = client.scheme(host)
        return Endpoint(host, scheme, client.tls_verify(host) if scheme == "https" else False, challenge, token)


def push(artifact: Artifact, ref: ImageRef, endpoint: Endpoint) -> bool:
    """Push ``artifact`` to ``ref`` (a tag) with oras-py. HEAD first: returns False, writing
    nothing, when the tag already points at this very artifact."""
    client = _Oras(
        hostname=ref.registry,
        insecure=endpoint.scheme == "http",
        tls_verify=endpoint.tls_verify,
        auth_backend="basic" if endpoint.challenge == "basic" else "token",
    )
    creds = auth.NO_CREDENTIALS if endpoint.token else auth.lookup(ref.registry)
    if endpoint.token:  # checked already, with the credentials, by the token service
        client.auth.set_token_auth(endpoint.token)
    elif creds.username or creds.password:
        client.auth.set_basic_auth(creds.username, creds.password)
    elif endpoint.challenge == "basic":
        raise PublishError(
            f"pushing {ref}: the registry asks for a user name and password, and none are configured for "
            f"{ref.registry}",
            hint=f"docker login {ref.registry}, or set {auth.env_name(ref.registry)}=user:password",
        )
    container = client.get_container(str(ref))
    context = f"pushing {ref} ({artifact.form.name})"
    try:
        if creds:  # check the credentials once, with a clear message when they are refused
            resp = client.do_request(f"{client.prefix}://{ref.registry}/v2/", "GET")
            if resp.status_code in (401, 403):
                raise PublishError(
                    f"{context}: the registry refused the credentials from {creds.source} (HTTP {resp.status_code})",
                    hint=f"check them: docker login {ref.registry}, or {auth.env_name(ref.registry)}=user:password",
                )
        url = f"{client.prefix}://{container.manifest_url(ref.tag)}"
        resp = client.do_request(url, "HEAD", headers={"Accept": OCI_MANIFEST})
        if resp.status_code == 200 and resp.headers.get("Docker-Content-Digest") == str(artifact.digest):
            return False
        with tempfile.TemporaryDirectory(prefix="archlift-publish-") as tmp:
            for blob in (artifact.layer, artifact.config):
                path = Path(tmp) / blob.digest.hex
                path.write_bytes(blob.data)
                resp = client.upload_blob(str(path), container, blob.descriptor())
                _check(resp, f"{context}: uploading blob {blob.digest.short()}")
        resp = client.do_request(url, "PUT", data=artifact.manifest, headers={"Content-Type": OCI_MANIFEST})
        _check(resp, f"{context}: putting the manifest")
    except PublishError:
        raise
    except (ValueError, OSError) as e:  # what oras-py raises (auth failures, bad answers)
        raise PublishError(f"{context}: {e}") from e
    stored = resp.headers.get("Docker-Content-Digest", "")
    if stored and stored != str(artifact.digest):
        raise PublishError(f"{context}: the registry stored {stored}, expected {artifact.digest}")
    return True


def _check(resp: Any, context: str) -> None:
    if resp.status_code in (200, 201, 202):
        return
    detail = ""
    try:
        errors = resp.json().get("errors") or []
        detail = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}" for e in errors)
    except ValueError:
        detail = resp.text[:300]
    hint = _CREDENTIALS_HINT if resp.status_code in (401, 403) else ""
    raise PublishError(f"{context}: HTTP {resp.status_code}" + (f" ({detail})" if detail else ""), hint=hint)


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
    endpoint = None if dry_run else probe(target, insecure=insecure, ca_file=ca_file)
    out = []
    tag = target.tag or "latest"
    for artifact in artifacts:
        ref = target.with_tag(tag + artifact.form.tag_suffix)
        pushed = endpoint is not None and push(artifact, ref, endpoint)
        out.append(
            Published(
                artifact.form.name,
                ImageRef(ref.registry, ref.repository, ref.tag, artifact.digest),
                artifact.layer.media_type,
                artifact.layer.digest,
                pushed,
            )
        )
    plain = endpoint.scheme == "http" if endpoint else is_loopback(target.registry)
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
