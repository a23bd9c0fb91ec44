"""publish (and render, diff) against the real registry, with a lock built from images seeded into it.

The artifacts are pulled back with the oras CLI and read the way Config Sync
(every layer untarred at the root) and Flux (the tar+gzip layer of its media
type) read them.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.registry import LocalRegistry

from archlift.checks.diff import diff_releases, format_text
from archlift.cli import main
from archlift.errors import ConfigError, PublishError
from archlift.lock import ComponentRelease, ReleaseLock, Upstream
from archlift.oci.auth import env_name
from archlift.proc import run
from archlift.refs import Digest, ImageRef
from archlift.steps.publish import (
    CONFIG_SYNC,
    FLUX,
    FLUX_CONFIG,
    FLUX_CONTENT,
    OCI_EMPTY,
    OCI_MANIFEST,
    OCI_TAR,
    build_artifacts,
    parse_target,
    publish,
    tar_bytes,
)
from archlift.steps.render import render

ROOT = Path(__file__).resolve().parents[2]
DEMO_TEMPLATES = ROOT / "examples" / "demo" / "manifests"
VALUES = {"namespace": "archlift-demo"}
INDEX = "application/vnd.oci.image.index.v1+json"
ACCEPT = ", ".join((INDEX, OCI_MANIFEST, "application/vnd.docker.distribution.manifest.list.v2+json"))


# --- a release seeded into the registry -----------------------------------------------------------
def _get_json(registry: LocalRegistry, repository: str, reference: str) -> tuple[dict[str, Any], bytes]:
    resp = registry.request("GET", f"/v2/{repository}/manifests/{reference}", headers={"Accept": ACCEPT})
    assert resp.status == 200, (repository, reference, resp.status)
    return json.loads(resp.data), resp.data


def _copy(registry: LocalRegistry, source: ImageRef, repository: str, tag: str) -> None:
    run(
        [
            "skopeo", "copy", "--all", "--preserve-digests", "--quiet",
            "--src-tls-verify=false", "--dest-tls-verify=false",
            f"docker://{source.name}@{source.digest}", f"docker://{registry.host}/{repository}:{tag}",
        ],
        context=f"copying {source} to {repository}:{tag}",
    )  # fmt: skip


def _put_variant(registry: LocalRegistry, repository: str, tag: str, from_tag: str, version: str) -> None:
    """The same platform images under a new index (another digest), as a rebuild would give."""
    index, _ = _get_json(registry, repository, from_tag)
    index["annotations"] = {"org.opencontainers.image.version": version}
    resp = registry.request(
        "PUT",
        f"/v2/{repository}/manifests/{tag}",
        body=json.dumps(index).encode(),
        headers={"Content-Type": index.get("mediaType", INDEX)},
    )
    assert resp.status == 201, resp.data


def _component(registry: LocalRegistry, name: str, repository: str, tag: str, version: str) -> ComponentRelease:
    index, raw = _get_json(registry, repository, tag)
    platforms = {
        f"{m['platform']['os']}/{m['platform']['architecture']}": Digest.parse(m["digest"])
        for m in index["manifests"]
        if m.get("platform", {}).get("os") != "unknown"
    }
    mirrored = name == "busybox"
    return ComponentRelease(
        name=name,
        kind="mirrored" if mirrored else "built",
        repository=f"{registry.host}/{repository}",
        index_digest=Digest.of(raw),
        platforms=platforms,
        tags=(tag,),
        upstream=None if mirrored else Upstream(f"https://example.com/{name}.git", version, "0" * 40, version),
        source_image="docker.io/library/busybox:1.35" if mirrored else None,
        media_type=index.get("mediaType", INDEX),
    )


@pytest.fixture(scope="module")
def releases(registry: LocalRegistry, seeded_base: ImageRef) -> tuple[ReleaseLock, ReleaseLock]:
    """Release A (hello v1.0.0) and release B (hello v1.1.0: another index digest), seeded for real."""
    for repository, tag in (("pubtest/hello", "v1.0.0"), ("pubtest/toolbox", "v0.3.0"), ("pubtest/busybox", "1.35")):
        _copy(registry, seeded_base, repository, tag)
    _put_variant(registry, "pubtest/hello", "v1.1.0", "v1.0.0", "v1.1.0")
    common = {
        "toolbox": _component(registry, "toolbox", "pubtest/toolbox", "v0.3.0", "v0.3.0"),
        "busybox": _component(registry, "busybox", "pubtest/busybox", "1.35", "1.35"),
    }
    a = ReleaseLock({**common, "hello": _component(registry, "hello", "pubtest/hello", "v1.0.0", "v1.0.0")})
    b = ReleaseLock({**common, "hello": _component(registry, "hello", "pubtest/hello", "v1.1.0", "v1.1.0")})
    assert a.components["hello"].index_digest != b.components["hello"].index_digest
    return a, b


@pytest.fixture()
def manifests(releases: tuple[ReleaseLock, ReleaseLock], tmp_path: Path) -> Path:
    out = tmp_path / "dist" / "manifests"
    render(releases[0], templates=DEMO_TEMPLATES, values=VALUES).write(out)
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _untar(data: bytes) -> dict[str, bytes]:
    out = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            f = tar.extractfile(member)
            if f is not None:
                out[member.name] = f.read()
    return out


def _oras_pull(ref: ImageRef, dest: Path) -> dict[str, bytes]:
    dest.mkdir(parents=True)
    run(["oras", "pull", "--plain-http", "-o", str(dest), f"{ref.name}@{ref.digest}"], context="oras pull")
    return _files(dest)


# --- the tests ------------------------------------------------------------------------------------
def test_rendered_images_are_served_for_amd64_and_arm64(
    registry: LocalRegistry, releases: tuple[ReleaseLock, ReleaseLock], manifests: Path
) -> None:
    images = render(releases[0], templates=DEMO_TEMPLATES, values=VALUES).images()
    assert len(images) == 3
    for text in images:
        ref = ImageRef.parse(text)
        assert ref.digest is not None and ref.registry == registry.host
        index, raw = _get_json(registry, ref.repository, str(ref.digest))
        assert Digest.of(raw) == ref.digest
        served = {f"{m['platform']['os']}/{m['platform']['architecture']}" for m in index["manifests"]}
        assert {"linux/amd64", "linux/arm64"} <= served
        assert text in "".join(p.read_text() for p in manifests.iterdir())


def test_oras_pull_gives_back_the_same_files(registry: LocalRegistry, manifests: Path, tmp_path: Path) -> None:
    pub = publish(manifests, parse_target(f"{registry.host}/pubtest/manifests:pull"))
    expected = _files(manifests)
    assert len(expected) == 5

    configsync = _oras_pull(pub.by_form(CONFIG_SYNC).ref, tmp_path / "cs")
    assert list(configsync) == ["manifests.tar"]
    assert _untar(configsync["manifests.tar"]) == expected

    flux = _oras_pull(pub.by_form(FLUX).ref, tmp_path / "flux")
    assert list(flux) == ["manifests.tar.gz"]
    assert _untar(gzip.decompress(flux["manifests.tar.gz"])) == expected


@pytest.mark.parametrize(
    ("form", "config_type", "layer_type", "title"),
    [(CONFIG_SYNC, OCI_EMPTY, OCI_TAR, "manifests.tar"), (FLUX, FLUX_CONFIG, FLUX_CONTENT, "manifests.tar.gz")],
)
def test_media_types_and_layout_are_what_config_sync_and_flux_read(
    registry: LocalRegistry, manifests: Path, form: Any, config_type: str, layer_type: str, title: str
) -> None:
    pub = publish(manifests, parse_target(f"{registry.host}/pubtest/layout:v1"))
    ref = pub.by_form(form).ref
    manifest, raw = _get_json(registry, ref.repository, str(ref.digest))
    assert Digest.of(raw) == ref.digest
    assert manifest["mediaType"] == OCI_MANIFEST and manifest["schemaVersion"] == 2
    assert manifest["config"]["mediaType"] == config_type
    assert "annotations" not in manifest  # no timestamps, nothing that changes between pushes
    assert len(manifest["layers"]) == 1
    layer = manifest["layers"][0]
    assert layer["mediaType"] == layer_type
    assert layer["annotations"] == {"org.opencontainers.image.title": title}
    config = registry.request("GET", f"/v2/{ref.repository}/blobs/{manifest['config']['digest']}").data
    assert config == b"{}"
    blob = registry.request("GET", f"/v2/{ref.repository}/blobs/{layer['digest']}").data
    assert Digest.of(blob) == Digest.parse(layer["digest"]) and len(blob) == layer["size"]
    if form is FLUX:
        assert blob[:2] == b"\x1f\x8b" and blob[4:8] == b"\0\0\0\0"  # gzip, mtime 0
        blob = gzip.decompress(blob)
    # Config Sync and Flux both untar at the root: the YAML files sit there, plain and root-owned
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(_files(manifests))
    assert all(m.isfile() and m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o644 for m in members)
    assert all(not m.pax_headers for m in members)


def test_publishing_twice_gives_the_same_digests(
    registry: LocalRegistry, releases: tuple[ReleaseLock, ReleaseLock], manifests: Path, tmp_path: Path
) -> None:
    target = parse_target(f"{registry.host}/pubtest/twice:v1")
    first = publish(manifests, target)
    assert all(a.pushed for a in first.artifacts)
    again_dir = tmp_path / "again"
    render(releases[0], templates=DEMO_TEMPLATES, values=VALUES).write(again_dir)  # a fresh render, new mtimes
    writes = registry.count("PUT") + registry.count("POST")
    second = publish(again_dir, target)
    dry = publish(again_dir, target, dry_run=True)
    assert [a.ref for a in first.artifacts] == [a.ref for a in second.artifacts] == [a.ref for a in dry.artifacts]
    assert not any(a.pushed for a in second.artifacts)  # HEAD first: the tags already point there
    assert registry.count("PUT") + registry.count("POST") == writes
    for a in first.artifacts:
        assert registry.manifest_digest(a.ref.repository, a.ref.tag or "") == a.ref.digest
    assert first.by_form(CONFIG_SYNC).ref.digest != first.by_form(FLUX).ref.digest


def test_cli_publish_prints_and_writes_rootsync_and_ocirepository(
    registry: LocalRegistry, manifests: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "dist"
    to = f"{registry.host}/pubtest/demo-manifests:1.0.0"
    assert main(["publish", "--to", to, "--manifests", str(manifests), "--out", str(out), "--name", "demo"]) == 0
    printed = capsys.readouterr().out
    record = json.loads((out / "manifests-artifact.json").read_text())
    cs, fx = record["artifacts"]["configsync"], record["artifacts"]["flux"]
    assert (cs["tag"], fx["tag"]) == ("1.0.0", "1.0.0-flux")
    for tag, digest in ((cs["tag"], cs["digest"]), (fx["tag"], fx["digest"])):
        assert str(registry.manifest_digest("pubtest/demo-manifests", tag)) == digest

    (root_sync,) = list(yaml.safe_load_all((out / "rootsync.yaml").read_text()))
    assert root_sync["apiVersion"] == "configsync.gke.io/v1beta1" and root_sync["kind"] == "RootSync"
    assert root_sync["metadata"] == {"name": "demo", "namespace": "config-management-system"}
    assert root_sync["spec"] == {
        "sourceFormat": "unstructured",
        "sourceType": "oci",
        "oci": {"image": f"{registry.host}/pubtest/demo-manifests@{cs['digest']}", "dir": ".", "auth": "none"},
    }
    repo, kustomization = list(yaml.safe_load_all((out / "flux.yaml").read_text()))
    assert repo["apiVersion"] == "source.toolkit.fluxcd.io/v1beta2" and repo["kind"] == "OCIRepository"
    assert repo["spec"]["url"] == f"oci://{registry.host}/pubtest/demo-manifests"
    assert repo["spec"]["ref"] == {"digest": fx["digest"]}
    assert repo["spec"]["insecure"] is True  # plain HTTP on loopback
    assert repo["spec"]["layerSelector"]["mediaType"] == FLUX_CONTENT
    assert kustomization["kind"] == "Kustomization"
    assert kustomization["spec"]["sourceRef"] == {"kind": "OCIRepository", "name": "demo"}
    assert kustomization["spec"]["path"] == "./"
    assert cs["digest"] in printed and fx["digest"] in printed and "kind: RootSync" in printed


def test_an_image_of_the_registry_that_is_no_component_is_refused(
    registry: LocalRegistry, releases: tuple[ReleaseLock, ReleaseLock], seeded_base: ImageRef, tmp_path: Path
) -> None:
    (tmp_path / "job.yaml.j2").write_text(
        textwrap.dedent(
            f"""\
            apiVersion: batch/v1
            kind: Job
            metadata: {{name: once, namespace: demo}}
            spec:
              template:
                spec:
                  restartPolicy: Never
                  containers:
                    - name: ok
                      image: {{{{ image("hello") }}}}
                    - name: base
                      image: {seeded_base.name}@{seeded_base.digest}
            """
        )
    )
    with pytest.raises(ConfigError) as e:
        render(releases[0], templates=tmp_path)
    assert (
        f"Job/demo/once (job.yaml.j2, document 1): spec.template.spec.containers[1].image: "
        f"'{seeded_base.name}@{seeded_base.digest}' is not an image of the release"
    ) in e.value.message


def test_upgrade_diff_shows_the_changed_digest(releases: tuple[ReleaseLock, ReleaseLock], tmp_path: Path) -> None:
    a, b = releases
    for name, lock in (("a", a), ("b", b)):
        render(lock, templates=DEMO_TEMPLATES, values=VALUES).write(tmp_path / name)
    result = diff_releases(a, b, (tmp_path / "a", tmp_path / "b"))
    text = format_text(result, stat=True)
    old, new = a.components["hello"].index_digest, b.components["hello"].index_digest
    assert "~ hello    v1.0.0 -> v1.1.0" in text
    assert f"{old} -> {new}" in text
    assert "~ Deployment/archlift-demo/hello" in text
    deployment = next(d for d in result.documents or () if d.title == "Deployment/archlift-demo/hello")
    assert f"-        image: {a.components['hello'].ref}" in deployment.diff
    assert f"+        image: {b.components['hello'].ref}" in deployment.diff


def test_auth_registry_needs_credentials(
    auth_registry: LocalRegistry, manifests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = parse_target(f"{auth_registry.host}/pubtest/private:v1")
    monkeypatch.setenv("DOCKER_CONFIG", str(manifests.parent / "no-docker-config"))
    for var in ("ARCHLIFT_REGISTRY_USERNAME", "ARCHLIFT_REGISTRY_PASSWORD", env_name(auth_registry.host)):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(PublishError, match="asks for a user name and password"):
        publish(manifests, target, ca_file=str(auth_registry.ca_file))
    monkeypatch.setenv(env_name(auth_registry.host), f"{auth_registry.username}:wrong")
    with pytest.raises(PublishError, match="refused the credentials from ARCHLIFT_AUTH_"):
        publish(manifests, target, ca_file=str(auth_registry.ca_file))
    with pytest.raises(PublishError, match=r"TLS certificate of .* does not verify"):
        publish(manifests, target)
    monkeypatch.setenv(env_name(auth_registry.host), f"{auth_registry.username}:{auth_registry.password}")
    pub = publish(manifests, target, ca_file=str(auth_registry.ca_file))
    assert not pub.plain_http
    for a in pub.artifacts:
        assert auth_registry.manifest_digest(a.ref.repository, a.ref.tag or "") == a.ref.digest


# --- packing, without a registry ---------------------------------------------------------------------
def test_tar_is_reproducible_and_parents_come_first() -> None:
    files = [("b.yaml", b"b: 1\n"), ("sub/dir/c.yaml", b"c: 1\n"), ("a.yaml", b"a: 1\n")]
    data = tar_bytes(files)
    assert data == tar_bytes(list(reversed(files)))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [(m.name, m.isdir()) for m in members] == [
        ("a.yaml", False),
        ("b.yaml", False),
        ("sub", True),
        ("sub/dir", True),
        ("sub/dir/c.yaml", False),
    ]
    long_name = "2_customresourcedefinition_" + "x" * 200 + ".yaml"
    with tarfile.open(fileobj=io.BytesIO(tar_bytes([(long_name, b"")]))) as tar:
        (member,) = tar.getmembers()
    assert member.name == long_name and not member.pax_headers


def test_artifact_digests_depend_only_on_the_file_bytes() -> None:
    files = [("a.yaml", b"a: 1\n")]
    first, second = build_artifacts(files), build_artifacts(list(files))
    assert [a.digest for a in first] == [a.digest for a in second]
    assert build_artifacts([("a.yaml", b"a: 2\n")])[0].digest != first[0].digest


def test_target_parsing() -> None:
    assert str(parse_target("127.0.0.1:5000/demo/manifests")) == "127.0.0.1:5000/demo/manifests:latest"
    with pytest.raises(ConfigError, match="not a digest"):
        parse_target("127.0.0.1:5000/demo/manifests@sha256:" + "0" * 64)
    with pytest.raises(ConfigError, match="too long"):
        parse_target("127.0.0.1:5000/demo/manifests:" + "v" * 125)


def test_cli_dry_run_pushes_nothing_and_gives_the_digests(
    manifests: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "snippets"
    args = ["publish", "--to", "127.0.0.1:1/nowhere/manifests:v2", "--manifests", str(manifests), "--out", str(out)]
    assert main([*args, "--dry-run", "--json"]) == 0  # port 1: nothing listens, nothing is asked
    data = json.loads(capsys.readouterr().out)
    expected = {a.form.name: str(a.digest) for a in build_artifacts(sorted(_files(manifests).items()))}
    assert {k: v["digest"] for k, v in data["artifacts"].items()} == expected
    assert not any(v["pushed"] for v in data["artifacts"].values())
    assert (out / "rootsync.yaml").read_text().count(expected["configsync"]) == 1
