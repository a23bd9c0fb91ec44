"""Node mirrors: the mirror's upstream layout (``archlift mirror --layout upstream``), the commands
that map a release onto a mirror agreeing with it (verify, render, import, sign), and
``archlift mirror-config``: its exact files for containerd and CRI-O, then the real containerd
(``ctr images pull --hosts-dir``) and the real containers/image (skopeo, CRI-O's library) pulling
through them from a mirror on loopback, by digest and by tag, with no route to the upstream host."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import secrets
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import support.images as h
import yaml
from support.cli import run_archlift
from support.registry import LocalRegistry, make_tls_files

from archlift.cli import main
from archlift.config.model import load_config
from archlift.errors import ConfigError
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.refs import Digest, ImageRef, context_name, normalized
from archlift.steps.build import copy_mirror, replaced_names
from archlift.steps.mirror import Target, names, plan_mirror
from archlift.steps.nodes import node_config
from archlift.ui import quiet

no_docker_config = h.no_docker_config
REPO_ROOT = Path(__file__).resolve().parents[2]
DEMO = REPO_ROOT / "examples" / "demo" / "images.yaml"
CTR_SOCKET = "/var/run/docker/containerd/containerd.sock"  # dockerd's own containerd (a namespace of our own)


def _d(text: str) -> Digest:
    return Digest.of(text.encode())


def small_release() -> ReleaseLock:
    """Three components: built with an upstream name (replaces:), built replacing a Docker Hub image
    at a tag, and mirrored from a third-party registry."""
    two = {"linux/amd64": _d("a-amd64"), "linux/arm64": _d("a-arm64")}
    return ReleaseLock(
        {
            "app": ComponentRelease(
                "app", "built", "ghcr.io/example/app", _d("app"), two, ("v1.0.0",),
                replaces=("upstream.invalid/team/app",),
            ),
            "box": ComponentRelease(
                "box", "built", "ghcr.io/example/box", _d("box"), {"linux/amd64": _d("b")}, ("1.36.1",),
                replaces=("docker.io/library/busybox:1.36",),
            ),
            "tool": ComponentRelease(
                "tool", "mirrored", "ghcr.io/example/tool", _d("tool"), {"linux/amd64": _d("t")}, ("2.0",),
                source_image="quay.io/vendor/tool:2.0",
            ),
        }
    )  # fmt: skip


# ---------------------------------------------------------------------- the layout (pure)
@pytest.mark.parametrize(
    ("name", "placed"),
    [
        ("gcr.io/config-management-release/reconciler",
         "m.internal:5000/pre/gcr.io/config-management-release/reconciler"),
        ("busybox", "m.internal:5000/pre/docker.io/library/busybox"),
        ("index.docker.io/library/busybox", "m.internal:5000/pre/docker.io/library/busybox"),
        ("docker.io/bitnami/nginx", "m.internal:5000/pre/docker.io/bitnami/nginx"),
        ("Registry.Example:5000/team/app", "m.internal:5000/pre/registry.example_5000/team/app"),
        ("localhost:5000/app", "m.internal:5000/pre/localhost_5000/app"),
    ],
)  # fmt: skip
def test_the_upstream_layout_places_a_name_by_host_and_prefix(name: str, placed: str) -> None:
    target = Target.parse("m.internal:5000/pre", layout="upstream")
    assert target.map(name).name == placed
    # the repository layout keeps the path only
    assert Target.parse("m.internal:5000/pre").map("ghcr.io/x/app").name == "m.internal:5000/pre/x/app"
    # without a prefix, the host is the first path component
    assert Target.parse("m.internal:5000", layout="upstream").map("quay.io/a/b").name == "m.internal:5000/quay.io/a/b"


def test_docker_normalisation_is_one_function() -> None:
    assert normalized("busybox") == normalized("index.docker.io/busybox") == normalized("docker.io/library/busybox")
    assert context_name("index.docker.io/library/alpine:latest") == "alpine"  # unchanged for named contexts


def test_a_name_the_layout_cannot_place_and_an_unknown_layout_are_input_errors() -> None:
    with pytest.raises(ConfigError, match="IPv6"):
        Target.parse("m.internal/pre", layout="upstream").map("[::1]:5000/app")
    with pytest.raises(ConfigError, match="--layout flat: not a mirror layout"):
        Target.parse("m.internal/pre", layout="flat")


def test_names_are_the_repository_the_replaced_names_and_the_source_image() -> None:
    lock = small_release()
    assert [str(n) for n in names(lock.component("app"))] == ["ghcr.io/example/app", "upstream.invalid/team/app"]
    assert [str(n) for n in names(lock.component("box"))] == ["ghcr.io/example/box", "docker.io/library/busybox:1.36"]
    assert [str(n) for n in names(lock.component("tool"))] == ["ghcr.io/example/tool", "quay.io/vendor/tool:2.0"]


def test_the_plan_places_each_image_under_each_of_its_names() -> None:
    lock = small_release()
    plan = plan_mirror(lock, Target.parse("m.internal:5000/air", layout="upstream"))
    placed = {(i.name, i.target.name, i.tags) for i in plan.images}
    assert placed == {
        ("app", "m.internal:5000/air/ghcr.io/example/app", ("v1.0.0",)),
        ("app", "m.internal:5000/air/upstream.invalid/team/app", ("v1.0.0",)),
        ("box", "m.internal:5000/air/ghcr.io/example/box", ("1.36.1",)),
        ("box", "m.internal:5000/air/docker.io/library/busybox", ("1.36.1", "1.36")),  # the name's own tag too
        ("tool", "m.internal:5000/air/ghcr.io/example/tool", ("2.0",)),
        ("tool", "m.internal:5000/air/quay.io/vendor/tool", ("2.0",)),
    }
    assert all(i.source == lock.component(i.name).ref for i in plan.images)  # every copy from the release
    # the repository layout is what it was: each image once, its path under the prefix
    flat = plan_mirror(lock, Target.parse("m.internal:5000/air"))
    assert [(i.name, i.target.name) for i in flat.images] == [
        ("app", "m.internal:5000/air/example/app"),
        ("box", "m.internal:5000/air/example/box"),
        ("tool", "m.internal:5000/air/example/tool"),
    ]


def test_two_images_that_would_share_a_tag_are_refused() -> None:
    lock = small_release()
    other = replace(
        lock.component("box"), name="box2", repository="ghcr.io/example/box2", index_digest=_d("box2"), tags=("2",)
    )  # another image that replaces busybox:1.36 too
    clash = replace(lock, components={**lock.components, "box2": other})
    with pytest.raises(ConfigError, match=r"'box' and 'box2' both go to .*/docker.io/library/busybox:1.36"):
        plan_mirror(clash, Target.parse("m.internal/air", layout="upstream"))


def test_the_lock_records_replaced_names_and_older_locks_still_read(tmp_path: Path) -> None:
    lock = small_release()
    lock.write(tmp_path / "release.json")
    data = json.loads((tmp_path / "release.json").read_text())
    assert data["components"]["app"]["replaces"] == ["upstream.invalid/team/app"]
    assert "replaces" not in data["components"]["tool"]  # optional: written only when there are names
    assert ReleaseLock.read(tmp_path / "release.json") == lock
    for comp in data["components"].values():  # a lock from before the field
        comp.pop("replaces", None)
    (tmp_path / "old.json").write_text(json.dumps(data))
    assert ReleaseLock.read(tmp_path / "old.json").component("app").replaces == ()
    data["components"]["app"]["replaces"] = ["UPPER CASE"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ConfigError, match="not a valid archlift release lock"):
        ReleaseLock.read(tmp_path / "bad.json")


def test_the_build_records_the_replaced_names_that_are_image_references(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").write_text(
        "archlift: 1\nregistry: ghcr.io/example\nplatforms: [linux/amd64]\n"
        "components:\n"
        "  tool:\n    mirror: quay.io/vendor/tool:2.0\n"
        "    replaces: [TOOL_IMAGE_NAME, busybox, 'gcr.io/x/tool:v1@sha256:" + "a" * 64 + "', gcr.io/x/tool:v1]\n"
    )
    comp = load_config(tmp_path / "images.yaml").components["tool"]
    # placeholders are for render only; docker's normalisation; a digest is upstream's, dropped
    assert replaced_names(comp) == ("docker.io/library/busybox", "gcr.io/x/tool:v1")


def test_a_mirrored_component_s_lock_entry_records_its_replaced_names(tmp_path: Path) -> None:
    with LocalRegistry() as reg, RegistryClient() as client:
        index, _ = push_runnable(client, reg.ref("vendor/tool", "2.0"), "tool")
        (tmp_path / "images.yaml").write_text(
            f"archlift: 1\nregistry: {reg.host}/rel\nplatforms: [linux/amd64, linux/arm64]\ncomponents:\n"
            f"  tool:\n    mirror: {reg.host}/vendor/tool:2.0\n"
            "    replaces: [TOOL_IMAGE, upstream.invalid/vendor/tool]\n"
        )
        entry, copied = copy_mirror(client, load_config(tmp_path / "images.yaml").components["tool"], quiet)
        assert copied and entry.index_digest == index
        assert entry.replaces == ("upstream.invalid/vendor/tool",)
        assert [str(n) for n in names(entry)] == [
            f"{reg.host}/rel/tool",
            "upstream.invalid/vendor/tool",
            f"{reg.host}/vendor/tool:2.0",
        ]


# ---------------------------------------------------------------------- mirror-config: the exact files
GOLDEN_CONTAINERD = {
    "docker.io/hosts.toml": """\
# written by archlift mirror-config: pulls of docker.io images go to the mirror
# mirror.internal:5000/airgap (filled by 'archlift mirror --layout upstream') first, then to the server.
# The release's images there, by digest and by these tags:
#   library/busybox: 1.36.1, 1.36
server = "https://registry-1.docker.io"

[host."https://mirror.internal:5000/v2/airgap/docker.io"]
  capabilities = ["pull", "resolve"]
  override_path = true
""",
    "ghcr.io/hosts.toml": """\
# written by archlift mirror-config: pulls of ghcr.io images go to the mirror
# mirror.internal:5000/airgap (filled by 'archlift mirror --layout upstream') first, then to the server.
# The release's images there, by digest and by these tags:
#   example/app: v1.0.0
#   example/box: 1.36.1
#   example/tool: 2.0
server = "https://ghcr.io"

[host."https://mirror.internal:5000/v2/airgap/ghcr.io"]
  capabilities = ["pull", "resolve"]
  override_path = true
""",
    "quay.io/hosts.toml": """\
# written by archlift mirror-config: pulls of quay.io images go to the mirror
# mirror.internal:5000/airgap (filled by 'archlift mirror --layout upstream') first, then to the server.
# The release's images there, by digest and by these tags:
#   vendor/tool: 2.0
server = "https://quay.io"

[host."https://mirror.internal:5000/v2/airgap/quay.io"]
  capabilities = ["pull", "resolve"]
  override_path = true
""",
    "upstream.invalid/hosts.toml": """\
# written by archlift mirror-config: pulls of upstream.invalid images go to the mirror
# mirror.internal:5000/airgap (filled by 'archlift mirror --layout upstream') first, then to the server.
# The release's images there, by digest and by these tags:
#   team/app: v1.0.0
server = "https://upstream.invalid"

[host."https://mirror.internal:5000/v2/airgap/upstream.invalid"]
  capabilities = ["pull", "resolve"]
  override_path = true
""",
}

GOLDEN_CRIO = """\
# written by archlift mirror-config: pulls of the registries below go to the mirror
# mirror.internal:5000/airgap (filled by 'archlift mirror --layout upstream') first, then to the registry.
# The release's images there, by digest and by these tags:
#   docker.io/library/busybox: 1.36.1, 1.36
#   ghcr.io/example/app: v1.0.0
#   ghcr.io/example/box: 1.36.1
#   ghcr.io/example/tool: 2.0
#   quay.io/vendor/tool: 2.0
#   upstream.invalid/team/app: v1.0.0

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "mirror.internal:5000/airgap/docker.io"

[[registry]]
prefix = "ghcr.io"
location = "ghcr.io"

[[registry.mirror]]
location = "mirror.internal:5000/airgap/ghcr.io"

[[registry]]
prefix = "quay.io"
location = "quay.io"

[[registry.mirror]]
location = "mirror.internal:5000/airgap/quay.io"

[[registry]]
prefix = "upstream.invalid"
location = "upstream.invalid"

[[registry.mirror]]
location = "mirror.internal:5000/airgap/upstream.invalid"
"""


def _files(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _mirror_config(tmp_path: Path, *args: str) -> int:
    small_release().write(tmp_path / "release.json")
    return main(["mirror-config", "--lock", str(tmp_path / "release.json"), *args])


def test_mirror_config_writes_these_containerd_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs.d"
    assert _mirror_config(tmp_path, "--registry", "mirror.internal:5000/airgap", "--format", "containerd",
                          "--out", str(out)) == 0  # fmt: skip
    assert _files(out) == GOLDEN_CONTAINERD
    said = capsys.readouterr().out
    assert "4 upstream host(s) (docker.io, ghcr.io, quay.io, upstream.invalid)" in said
    assert "/etc/containerd/certs.d" in said and "config_path" in said
    # run again: the same files (its own files are replaced, nothing else appears)
    assert _mirror_config(tmp_path, "--registry", "mirror.internal:5000/airgap", "--format", "containerd",
                          "--out", str(out)) == 0  # fmt: skip
    assert _files(out) == GOLDEN_CONTAINERD


def test_mirror_config_writes_this_cri_o_drop_in(tmp_path: Path) -> None:
    out = tmp_path / "containers"
    args = ("--registry", "mirror.internal:5000/airgap", "--format", "cri-o", "--out", str(out))
    assert _mirror_config(tmp_path, *args) == 0
    assert _files(out) == {"registries.conf.d/50-archlift-mirror.conf": GOLDEN_CRIO}


def test_plain_http_and_a_ca_file(tmp_path: Path) -> None:
    lock = small_release()
    loopback = Target.parse("127.0.0.1:5000/m", "--registry", "upstream")
    plain = {f.path: f.data.decode() for f in node_config(lock, loopback, "containerd", plain_http=True).files}
    assert '[host."http://127.0.0.1:5000/v2/m/quay.io"]' in plain["quay.io/hosts.toml"]
    crio = node_config(lock, loopback, "cri-o", plain_http=True).files[0].data.decode()
    assert crio.count("insecure = true") == 4 and 'location = "127.0.0.1:5000/m/quay.io"\ninsecure = true\n' in crio

    # a loopback mirror is plain HTTP by default, as archlift's client treats it; --insecure for any host
    small_release().write(tmp_path / "release.json")
    base = ["mirror-config", "--lock", str(tmp_path / "release.json"), "--format", "containerd"]
    assert main([*base, "--registry", "127.0.0.1:5000/m", "--out", str(tmp_path / "a")]) == 0
    assert _files(tmp_path / "a")["quay.io/hosts.toml"] == plain["quay.io/hosts.toml"]
    assert main([*base, "--registry", "mirror.internal/m", "--insecure", "--out", str(tmp_path / "b")]) == 0
    assert '[host."http://mirror.internal/v2/m/quay.io"]' in _files(tmp_path / "b")["quay.io/hosts.toml"]

    # a TLS mirror with its own CA: the CA goes next to each hosts.toml (containerd reads a relative
    # "ca" from the host's directory), and to certs.d/<mirror>/ca.crt for CRI-O
    ca = tmp_path / "ca.crt"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    assert (
        main([*base, "--registry", "mirror.internal:5000/m", "--ca-file", str(ca), "--out", str(tmp_path / "c")]) == 0
    )
    files = _files(tmp_path / "c")
    assert set(files) == {f"{h}/{n}" for h in ("docker.io", "ghcr.io", "quay.io", "upstream.invalid")
                          for n in ("hosts.toml", "archlift-mirror-ca.crt")}  # fmt: skip
    assert files["quay.io/hosts.toml"].endswith(
        '[host."https://mirror.internal:5000/v2/m/quay.io"]\n'
        '  capabilities = ["pull", "resolve"]\n  override_path = true\n  ca = "archlift-mirror-ca.crt"\n'
    )
    assert files["quay.io/archlift-mirror-ca.crt"] == ca.read_text()
    crio_args = ["--format", "cri-o", "--registry", "mirror.internal:5000/m", "--ca-file", str(ca)]
    assert main([*base[:3], *crio_args, "--out", str(tmp_path / "d")]) == 0
    files = _files(tmp_path / "d")
    assert files["certs.d/mirror.internal:5000/ca.crt"] == ca.read_text()
    assert "insecure" not in files["registries.conf.d/50-archlift-mirror.conf"]


def test_a_file_archlift_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    out = tmp_path / "certs.d"
    (out / "quay.io").mkdir(parents=True)
    theirs = 'server = "https://quay.io"\n[host."https://their-mirror"]\n'
    (out / "quay.io" / "hosts.toml").write_text(theirs)
    small_release().write(tmp_path / "release.json")
    r = run_archlift("mirror-config", "--lock", "release.json", "--registry", "m.internal/air",
                     "--format", "containerd", "--out", "certs.d", cwd=tmp_path)  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "quay.io/hosts.toml exists and was not written by archlift mirror-config" in r.stderr
    assert "Traceback" not in r.stderr
    assert (out / "quay.io" / "hosts.toml").read_text() == theirs
    assert sorted(p.name for p in out.iterdir()) == ["quay.io"]  # nothing else was written either


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "docker"], "--format docker: not a node format (choose containerd or cri-o)"),
        (["--registry", "Not A Registry/x"], "--registry Not A Registry/x: "),
        (["--registry", "mirror.internal:5000/Upper/Case"], "--registry mirror.internal:5000/Upper/Case: "),
        (["--registry", "mirror.internal/air:v1"], "expected REGISTRY[/PREFIX]"),
        (["--insecure", "--ca-file", "release.json"], "--insecure and --ca-file: choose one"),
        (["--ca-file", "release.json"], "--ca-file release.json: not a PEM certificate"),
        (["--lock", "missing.json"], "missing.json: no release lock here"),
    ],
)
def test_bad_input_is_exit_2_in_one_paragraph(tmp_path: Path, args: list[str], message: str) -> None:
    small_release().write(tmp_path / "release.json")
    # the last of a repeated option is the one argparse keeps
    argv = ["mirror-config", "--lock", "release.json", "--registry", "m.internal/air", "--format", "containerd", *args]
    r = run_archlift(*argv, "--out", "out", cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and r.stderr.startswith("archlift: ")
    assert "Traceback" not in r.stderr and len(r.stderr.strip().split("\n\n")) == 1
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- real registries, containerd, skopeo
def _layer_tar(text: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = text.encode()
        info = tarfile.TarInfo("hello.txt")
        info.size, info.mode, info.mtime = len(data), 0o644, 0
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def push_runnable(client: RegistryClient, ref: ImageRef, seed: str) -> tuple[Digest, dict[str, Digest]]:
    """A small two-platform image a runtime can unpack (a gzip'd tar layer, a config naming its
    diff_id), pushed at ``ref`` (a tag); returns its index digest and platform manifests."""
    entries, platforms = [], {}
    for arch in ("amd64", "arm64"):
        tar = _layer_tar(f"{seed} for linux/{arch}\n")
        layer = gzip.compress(tar, mtime=0)
        config = json.dumps(
            {"architecture": arch, "os": "linux", "config": {"Cmd": ["/hello.txt"]},
             "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(tar))]}}
        ).encode()  # fmt: skip
        for data in (layer, config):
            client.put_blob(ref, data)
        manifest = json.dumps(
            {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
             "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": str(Digest.of(config)),
                        "size": len(config)},
             "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": str(Digest.of(layer)),
                         "size": len(layer)}]}
        ).encode()  # fmt: skip
        platforms[f"linux/{arch}"] = client.put_manifest(ref.with_digest(Digest.of(manifest)), manifest, OCI_MANIFEST)
        entries.append({"mediaType": OCI_MANIFEST, "digest": str(platforms[f"linux/{arch}"]), "size": len(manifest),
                         "platform": {"os": "linux", "architecture": arch}})  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return client.put_manifest(ref, index, OCI_INDEX), platforms


@dataclass(frozen=True)
class Release:
    source: LocalRegistry
    lock: ReleaseLock
    path: Path  # the lock file


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Release]:
    """On a loopback registry: 'app' (built; replaces upstream.invalid/team/app), 'tool' (mirrored
    from upstream.invalid/vendor/tool:2.0) and 'box' (built; replaces busybox:1.36, a Docker Hub name)."""
    with LocalRegistry() as source, RegistryClient() as client:
        comps = {}
        for name, tags, extra in (
            ("app", ("v1",), {"replaces": ("upstream.invalid/team/app",)}),
            ("tool", ("2.0",), {"source_image": "upstream.invalid/vendor/tool:2.0"}),
            ("box", ("1.36.1",), {"replaces": ("docker.io/library/busybox:1.36",)}),
        ):
            repo = source.ref(f"rel/{name}")
            index, platforms = push_runnable(client, repo.with_tag(tags[0]), name)
            kind = "mirrored" if "source_image" in extra else "built"
            comps[name] = ComponentRelease(name, kind, repo.name, index, platforms, tags, **extra)  # type: ignore[arg-type]
        lock = ReleaseLock(comps)
        path = tmp_path_factory.mktemp("release") / "release.json"
        lock.write(path)
        yield Release(source, lock, path)


@pytest.fixture(scope="module")
def mirror_reg(release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRegistry]:
    """A plain-HTTP mirror on loopback, filled in the upstream layout with the command users run."""
    with LocalRegistry() as reg:
        cwd = tmp_path_factory.mktemp("mirror")
        r = run_archlift("mirror", "--lock", str(release.path), "--to", f"{reg.host}/mirror", "--layout", "upstream",
                    "--no-artifacts", cwd=cwd)  # fmt: skip
        assert r.returncode == 0, r.stderr
        yield reg


def test_mirror_places_each_image_under_each_name_and_verify_agrees(
    release: Release, mirror_reg: LocalRegistry, tmp_path: Path
) -> None:
    client = RegistryClient()
    m = mirror_reg.host
    for repo, comp, tags in (
        ("mirror/127.0.0.1_{port}/rel/app", "app", ("v1",)),
        ("mirror/upstream.invalid/team/app", "app", ("v1",)),
        ("mirror/127.0.0.1_{port}/rel/tool", "tool", ("2.0",)),
        ("mirror/upstream.invalid/vendor/tool", "tool", ("2.0",)),
        ("mirror/127.0.0.1_{port}/rel/box", "box", ("1.36.1",)),
        ("mirror/docker.io/library/busybox", "box", ("1.36.1", "1.36")),
    ):
        where = ImageRef(m, repo.format(port=release.source.port))
        want = release.lock.component(comp)
        assert client.index_platforms(where.with_digest(want.index_digest)) == want.platforms, where
        for tag in tags:
            head = client.head_manifest(where.with_tag(tag))
            assert head is not None and head.digest == want.index_digest, (where, tag)
    assert client.head_manifest(ImageRef(m, "mirror/rel/app").with_tag("v1")) is None  # not the repository layout

    lock = str(release.path)
    ok = run_archlift("verify", "--lock", lock, "--registry", f"{m}/mirror", "--layout", "upstream", "--deep",
                 "--no-artifacts", "--json", cwd=tmp_path)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    report = json.loads(ok.stdout)
    assert report["ok"] and len(report["images"]) == 6
    # the repository layout is another place: verify says what is missing, exit 9
    other = run_archlift("verify", "--lock", lock, "--registry", f"{m}/mirror", "--no-artifacts", cwd=tmp_path)
    assert other.returncode == 9 and "index sha256:" in other.stdout and "is missing" in other.stdout
    # one name moved elsewhere: verify names that place
    busybox = ImageRef(m, "mirror/docker.io/library/busybox")
    platform = client.get_manifest(busybox.with_digest(release.lock.component("box").platforms["linux/amd64"]))
    client.put_manifest(busybox.with_tag("1.36"), platform.raw, platform.media_type)
    try:
        bad = run_archlift("verify", "--lock", lock, "--registry", f"{m}/mirror", "--layout", "upstream",
                      "--no-artifacts", cwd=tmp_path)  # fmt: skip
        assert bad.returncode == 9
        assert f"box: {m}/mirror/docker.io/library/busybox@" in bad.stdout and "tag 1.36: expected" in bad.stdout
    finally:  # the tag back, for the pulls below
        again = run_archlift("mirror", "--lock", lock, "--to", f"{m}/mirror", "--layout", "upstream", "--no-artifacts",
                        cwd=tmp_path)  # fmt: skip
        assert again.returncode == 0, again.stderr
        assert "1 tag" in again.stdout or "copied" in again.stdout


def test_import_places_a_bundle_in_the_upstream_layout(release: Release, tmp_path: Path) -> None:
    lock = str(release.path)
    assert run_archlift("export", "--lock", lock, "--output", "b.tar", "--no-artifacts", cwd=tmp_path).returncode == 0
    with LocalRegistry() as site:
        r = run_archlift("import", "b.tar", "--to", f"{site.host}/air", "--layout", "upstream", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        ok = run_archlift("verify", "--lock", lock, "--registry", f"{site.host}/air", "--layout", "upstream",
                     "--no-artifacts", cwd=tmp_path)  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        head = RegistryClient().head_manifest(ImageRef(site.host, "air/upstream.invalid/vendor/tool").with_tag("2.0"))
        assert head is not None and head.digest == release.lock.component("tool").index_digest


def test_render_points_the_install_at_the_upstream_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEMO_REGISTRY", "127.0.0.1:5000")
    digests = {n: _d(n) for n in ("hello", "toolbox", "busybox")}
    ReleaseLock(
        {n: ComponentRelease(n, "built", f"127.0.0.1:5000/demo/{n}", d, {"linux/amd64": _d(n + "x")}, ("v1",))
         for n, d in digests.items()}
    ).write(tmp_path / "release.json")  # fmt: skip
    out = tmp_path / "out"
    argv = ["render", str(DEMO), "--lock", str(tmp_path / "release.json"), "--out", str(out)]
    assert main([*argv, "--registry", "mirror.internal:5000/air", "--layout", "upstream"]) == 0
    images = set()
    for path in out.glob("*.yaml"):
        for c in yaml.safe_load(path.read_text()).get("spec", {}).get("template", {}).get("spec", {}).get(
            "containers", []
        ):  # fmt: skip
            images.add(c["image"])
    assert images and images <= {f"mirror.internal:5000/air/127.0.0.1_5000/demo/{n}@{d}" for n, d in digests.items()}


# --- containerd
def _ctr(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ctr", "-a", CTR_SOCKET, "-n", ns, *args], capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, f"ctr {' '.join(args)}: {r.stderr}"
    return r


@pytest.fixture
def ctr_namespace() -> Iterator[str]:
    """A containerd namespace of this test's own in dockerd's containerd; its images and the
    namespace are removed afterwards (the moby namespaces are never touched)."""
    ns = f"archlift-test-{secrets.token_hex(4)}"
    try:
        yield ns
    finally:
        listed = _ctr(ns, "images", "ls", "-q", check=False).stdout.split()
        if listed:
            _ctr(ns, "images", "rm", "--sync", *listed, check=False)
        leftover = _ctr(ns, "content", "ls", "-q", check=False).stdout.split()
        if leftover:
            _ctr(ns, "content", "rm", *leftover, check=False)
        removed = _ctr(ns, "namespaces", "rm", ns, check=False)
        assert removed.returncode == 0, f"the test namespace {ns} was left behind: {removed.stderr}"


def _pull(ns: str, hosts: Path, ref: str, platform: str = "linux/arm64") -> subprocess.CompletedProcess[str]:
    return _ctr(ns, "images", "pull", "--hosts-dir", str(hosts), "--platform", platform, ref, check=False)


def test_containerd_pulls_the_upstream_names_from_the_mirror(
    release: Release, mirror_reg: LocalRegistry, tmp_path: Path, ctr_namespace: str
) -> None:
    hosts = tmp_path / "certs.d"
    r = run_archlift("mirror-config", "--lock", str(release.path), "--registry", f"{mirror_reg.host}/mirror",
                "--format", "containerd", "--out", str(hosts), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert (hosts / "upstream.invalid" / "hosts.toml").read_text().count(
        f'[host."http://{mirror_reg.host}/v2/mirror/upstream.invalid"]'
    ) == 1
    app, tool, box = (release.lock.component(n) for n in ("app", "tool", "box"))
    # no route to the upstream host: what arrives came from the mirror
    assert _pull(ctr_namespace, tmp_path / "empty", f"upstream.invalid/team/app@{app.index_digest}").returncode != 0
    before = mirror_reg.count("GET", "/v2/mirror/upstream.invalid/team/app/manifests/")
    for ref, comp, platform in (
        (f"upstream.invalid/team/app@{app.index_digest}", app, "linux/arm64"),  # by digest
        ("upstream.invalid/team/app:v1", app, "linux/amd64"),  # by the release's tag
        ("upstream.invalid/vendor/tool:2.0", tool, "linux/arm64"),  # the mirrored image's source name
        ("docker.io/library/busybox:1.36", box, "linux/arm64"),  # Docker Hub: the docker.io directory
        (f"{release.source.host}/rel/box@{box.index_digest}", box, "linux/amd64"),  # the release's own name
    ):
        pulled = _pull(ctr_namespace, hosts, ref, platform)
        assert pulled.returncode == 0, f"{ref}: {pulled.stderr}"
        listed = _ctr(ctr_namespace, "images", "ls").stdout
        line = next(ln for ln in listed.splitlines() if ln.startswith(ref + " "))
        assert str(comp.index_digest) in line, line
        # unpacked: the platform's own layer is the image's root file system
        rootfs = tmp_path / "rootfs"
        rootfs.mkdir()
        _ctr(ctr_namespace, "images", "mount", "--platform", platform, ref, str(rootfs))
        try:
            assert (rootfs / "hello.txt").read_text() == f"{comp.name} for {platform}\n"
        finally:
            _ctr(ctr_namespace, "images", "unmount", "--rm", str(rootfs))
            rootfs.rmdir()
    assert mirror_reg.count("GET", "/v2/mirror/upstream.invalid/team/app/manifests/") > before
    # the limit: a tag the release does not carry is not on the mirror, and the upstream is out of reach
    missing = _pull(ctr_namespace, hosts, "upstream.invalid/team/app:v0.9")
    assert missing.returncode != 0 and "v0.9" in missing.stderr


def test_containerd_trusts_a_tls_mirror_by_the_ca_next_to_hosts_toml(
    release: Release, tmp_path: Path, ctr_namespace: str
) -> None:
    with LocalRegistry(tls=True) as tls:
        assert tls.ca_file is not None
        client = RegistryClient(ca_file=str(tls.ca_file))
        from archlift.steps.mirror import check, mirror

        check(mirror(plan_mirror(release.lock, Target.parse(f"{tls.host}/m", layout="upstream")), client))
        hosts = tmp_path / "certs.d"
        r = run_archlift("mirror-config", "--lock", str(release.path), "--registry", f"{tls.host}/m", "--format",
                    "containerd", "--ca-file", str(tls.ca_file), "--out", str(hosts), cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        text = (hosts / "upstream.invalid" / "hosts.toml").read_text()
        assert f'[host."https://{tls.host}/v2/m/upstream.invalid"]' in text and 'ca = "archlift-mirror-ca.crt"' in text
        app = release.lock.component("app")
        pulled = _pull(ctr_namespace, hosts, f"upstream.invalid/team/app@{app.index_digest}")
        assert pulled.returncode == 0, pulled.stderr
        # another CA in that file: the mirror's certificate is not trusted (the CA next to hosts.toml is
        # what made the pull work; containerd read it from the host's directory)
        other_ca, _, _ = make_tls_files(tmp_path / "other-ca")
        (hosts / "upstream.invalid" / "archlift-mirror-ca.crt").write_bytes(other_ca.read_bytes())
        _ctr(ctr_namespace, "images", "rm", "--sync", f"upstream.invalid/team/app@{app.index_digest}")
        untrusted = _pull(ctr_namespace, hosts, f"upstream.invalid/team/app@{app.index_digest}")
        assert untrusted.returncode != 0 and "certificate signed by unknown authority" in untrusted.stderr


# --- CRI-O's library: containers/image through skopeo
def _skopeo(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """skopeo as a node's runtime reads registries.conf: the host's /etc/containers/registries.conf,
    then drop-ins; ours is a drop-in in $HOME/.config/containers/registries.conf.d (skopeo 1.9 has
    no option for the drop-in directory, and ignores CONTAINERS_REGISTRIES_CONF)."""
    env = {**os.environ, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120, env=env)


def _install_crio(out: Path, home: Path) -> None:
    """What an operator does on a CRI-O node (into /etc/containers/), here into skopeo's user dirs."""
    conf = home / ".config" / "containers"
    conf.mkdir(parents=True, exist_ok=True)
    for sub in ("registries.conf.d", "certs.d"):
        if (out / sub).is_dir():
            subprocess.run(["cp", "-r", str(out / sub), str(conf)], check=True)


def test_cri_o_config_pulls_the_upstream_names_from_the_mirror(
    release: Release, mirror_reg: LocalRegistry, tmp_path: Path
) -> None:
    out, home = tmp_path / "containers", tmp_path / "home"
    r = run_archlift("mirror-config", "--lock", str(release.path), "--registry", f"{mirror_reg.host}/mirror",
                "--format", "cri-o", "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert r.returncode == 0, r.stderr
    app, tool, box = (release.lock.component(n) for n in ("app", "tool", "box"))
    assert _skopeo(home, "inspect", "--raw", f"docker://upstream.invalid/team/app@{app.index_digest}").returncode != 0
    _install_crio(out, home)
    before = mirror_reg.count("GET", "/v2/mirror/upstream.invalid/")
    for ref, comp in (
        (f"upstream.invalid/team/app@{app.index_digest}", app),
        ("upstream.invalid/team/app:v1", app),
        ("upstream.invalid/vendor/tool:2.0", tool),
        ("docker.io/library/busybox:1.36", box),
    ):
        raw = _skopeo(home, "inspect", "--raw", f"docker://{ref}")
        assert raw.returncode == 0, f"{ref}: {raw.stderr}"
        assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == str(comp.index_digest), ref
    assert mirror_reg.count("GET", "/v2/mirror/upstream.invalid/") > before
    # a whole pull (every platform's layers) through the mirror, as CRI-O's pull does
    copied = _skopeo(home, "--insecure-policy", "copy", "--all", f"docker://upstream.invalid/team/app@{app.index_digest}",
                     f"dir:{tmp_path / 'pulled'}")  # fmt: skip
    assert copied.returncode == 0, copied.stderr
    assert "sha256:" + hashlib.sha256((tmp_path / "pulled" / "manifest.json").read_bytes()).hexdigest() == str(
        app.index_digest
    )
    # the limit: a tag the release does not carry misses the mirror, and the upstream is out of reach
    assert _skopeo(home, "inspect", "--raw", "docker://upstream.invalid/team/app:v0.9").returncode != 0


def test_cri_o_trusts_a_tls_mirror_by_certs_d(release: Release, tmp_path: Path) -> None:
    with LocalRegistry(tls=True) as tls:
        assert tls.ca_file is not None
        from archlift.steps.mirror import check, mirror

        check(mirror(plan_mirror(release.lock, Target.parse(f"{tls.host}/m", layout="upstream")),
                     RegistryClient(ca_file=str(tls.ca_file))))  # fmt: skip
        out, home = tmp_path / "containers", tmp_path / "home"
        r = run_archlift("mirror-config", "--lock", str(release.path), "--registry", f"{tls.host}/m",
                         "--format", "cri-o", "--ca-file", str(tls.ca_file), "--out", str(out),
                         cwd=tmp_path)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert (out / "certs.d" / tls.host / "ca.crt").read_bytes() == tls.ca_file.read_bytes()
        _install_crio(out, home)
        app = release.lock.component("app")
        raw = _skopeo(home, "inspect", "--raw", f"docker://upstream.invalid/team/app@{app.index_digest}")
        assert raw.returncode == 0, raw.stderr
        assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == str(app.index_digest)
        # without the CA, TLS to the mirror fails (no insecure = true for a TLS mirror)
        (home / ".config" / "containers" / "certs.d" / tls.host / "ca.crt").unlink()
        bad = _skopeo(home, "inspect", "--raw", f"docker://upstream.invalid/team/app@{app.index_digest}")
        assert bad.returncode != 0
        assert f"Mirrors also failed: [{tls.host}/m/upstream.invalid/team/app@" in bad.stderr
        assert "certificate signed by unknown authority" in bad.stderr


def test_signatures_verify_in_the_upstream_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "test-password")
    subprocess.run(["cosign", "generate-key-pair"], cwd=tmp_path, check=True, capture_output=True, timeout=60)
    with LocalRegistry() as source, LocalRegistry() as site, RegistryClient() as client:
        repo = source.ref("rel/app")
        index, platforms = push_runnable(client, repo.with_tag("v1"), "app")
        comp = ComponentRelease("app", "built", repo.name, index, platforms, ("v1",), replaces=("upstream.invalid/a",))
        ReleaseLock({"app": comp}).write(tmp_path / "release.json")
        base = ("--lock", "release.json")
        signed = run_archlift("sign", *base, "--key", "cosign.key", "--record", "sig.json", cwd=tmp_path)
        assert signed.returncode == 0, signed.stderr
        mirrored = run_archlift("mirror", *base, "--to", f"{site.host}/m", "--layout", "upstream", cwd=tmp_path)
        assert mirrored.returncode == 0, mirrored.stderr
        # the .sig tag went to each place, and cosign finds it where the layout says
        ok = run_archlift("verify", *base, "--registry", f"{site.host}/m", "--layout", "upstream",
                          "--key", "cosign.pub", cwd=tmp_path)  # fmt: skip
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "signatures: 1 of 1 image(s) verified" in ok.stdout
        again = run_archlift("sign", *base, "--verify", "--key", "cosign.pub", "--registry", f"{site.host}/m",
                        "--layout", "upstream", "--json", cwd=tmp_path)  # fmt: skip
        assert again.returncode == 0, again.stderr
        placed = f"{site.host}/m/127.0.0.1_{source.port}/rel/app@{index}"
        assert [s["image"] for s in json.loads(again.stdout)["signatures"]] == [placed]
        tag = f"sha256-{index.hex}.sig"
        assert tag in client.list_tags(ImageRef(site.host, "m/upstream.invalid/a"))
        # the repository layout is not where the images are: cosign finds nothing there
        wrong = run_archlift("sign", *base, "--verify", "--key", "cosign.pub", "--registry", f"{site.host}/m",
                        cwd=tmp_path)  # fmt: skip
        assert wrong.returncode != 0
