"""The binaries check against the real registry: images built with buildx (gzip, zstd under OCI and
Docker media types, uncompressed), some wrong on purpose (the amd64 busybox in the arm64 entry),
`archlift audit --binaries` on references, manifests and a lock, a TLS + htpasswd registry, and
each layer read once (the registry's access log counts the reads)."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_archlift
from support.registry import LocalRegistry, seed_image

from archlift.checks.binaries import Checker
from archlift.localenv import find_debs
from archlift.lock import ComponentRelease, ReleaseLock
from archlift.oci import OCI_INDEX, OCI_MANIFEST, RegistryClient
from archlift.oci.auth import env_name
from archlift.refs import Digest, ImageRef

FAKE = "FROM scratch\nCOPY amd64/bin/busybox /bin/busybox\n"  # every platform gets the amd64 binary
RIGHT = "FROM scratch\nARG TARGETARCH\nCOPY ${TARGETARCH}/bin/busybox /usr/bin/busybox-zstd\n"
ZSTD = "compression=zstd,force-compression=true"


@pytest.fixture(scope="module")
def images(docker_ready: None, registry: LocalRegistry, seeded_base: ImageRef) -> dict[str, ImageRef]:
    host = registry.host
    return {
        "right": seeded_base,
        "fake": seed_image(host, "binaries/fake-arm64", "1", FAKE),
        "amd64-only": seed_image(host, "binaries/amd64-only", "1", FAKE, ("linux/amd64",)),
        # the layers differ from one image to the next: BuildKit reuses a layer it compressed before
        "zstd": seed_image(host, "binaries/zstd", "1", RIGHT, output=ZSTD),
        "docker-zstd-fake": seed_image(
            host,
            "binaries/docker-zstd",
            "1",
            FAKE.replace("/bin/busybox\n", "/bin/bb-dz\n"),
            output=ZSTD + ",oci-mediatypes=false",
        ),
        "plain-fake": seed_image(
            host,
            "binaries/plain",
            "1",
            FAKE.replace("/bin/busybox\n", "/bin/bb-plain\n"),
            output="compression=uncompressed,force-compression=true",
        ),
    }


def audit_json(*args: str, env: dict[str, str] | None = None) -> tuple[int, dict[str, dict[str, Any]]]:
    proc = run_archlift("audit", "--binaries", *args, "--json", env=env)
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode, {r["image"]: r for r in json.loads(proc.stdout)["images"]}


def binaries_column(table: str) -> dict[str, str]:
    """Image -> its BINARIES cell, from the table's header offsets."""
    lines = table.splitlines()
    start, end = lines[0].index("BINARIES"), lines[0].index("NOTES")
    return {line.split()[0]: line[start:end].strip() for line in lines[1:-1]}


def by_platform(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["platform"]: b for b in report["binaries"]}


def layer_types(client: RegistryClient, ref: ImageRef) -> set[str]:
    out = set()
    for d in client.get_manifest(ref).descriptors():
        out |= {x.media_type for x in client.get_manifest(ref.with_digest(d.digest)).descriptors()[1:]}
    return out


def test_audit_flags_a_fake_arm64_image(images: dict[str, ImageRef]) -> None:
    ref = str(images["fake"])
    code, reports = audit_json(ref)
    assert code == 1
    r = reports[ref]
    assert r["platforms"] == ["linux/amd64", "linux/arm64"] and r["missing"] == []  # both listed...
    arm64 = by_platform(r)["linux/arm64"]
    assert arm64["mismatches"] == [{"path": "/bin/busybox", "machine": "x86-64"}]  # ...one of them fake
    assert arm64["expected"] == "aarch64" and arm64["machines"] == {"x86-64": 1} and not arm64["ok"]
    assert arm64["image"].startswith(f"{images['fake'].name}@sha256:")
    assert by_platform(r)["linux/amd64"]["ok"] and by_platform(r)["linux/amd64"]["elf_files"] == 1
    proc = run_archlift("audit", "--binaries", ref)
    assert proc.returncode == 1
    assert proc.stdout.splitlines()[0].split() == ["IMAGE", "PLATFORMS", "MISSING", "SOURCE", "BINARIES", "NOTES"]
    assert binaries_column(proc.stdout) == {ref: "linux/arm64: /bin/busybox is x86-64"}
    assert proc.stdout.splitlines()[-1] == "1 image(s): 1 with binaries of another machine"


def test_audit_flags_an_amd64_only_image_and_its_amd64_binaries_are_right(images: dict[str, ImageRef]) -> None:
    ref = str(images["amd64-only"])
    code, reports = audit_json(ref)
    assert code == 1
    r = reports[ref]
    assert r["missing"] == ["linux/arm64"]
    assert [(b["platform"], b["ok"], b["machines"]) for b in r["binaries"]] == [("linux/amd64", True, {"x86-64": 1})]
    proc = run_archlift("audit", "--binaries", ref)
    assert "1 missing a wanted platform" in proc.stdout.splitlines()[-1]


def test_audit_passes_a_correct_image(images: dict[str, ImageRef]) -> None:
    ref = str(images["right"])
    code, reports = audit_json(ref)
    assert code == 0, reports
    assert {p: (b["ok"], b["machines"]) for p, b in by_platform(reports[ref]).items()} == {
        "linux/amd64": (True, {"x86-64": 1}),
        "linux/arm64": (True, {"aarch64": 1}),
    }
    proc = run_archlift("audit", "--binaries", ref)
    assert proc.returncode == 0
    assert binaries_column(proc.stdout) == {ref: "ok"}
    assert proc.stdout.splitlines()[-1].endswith("and their binaries are for their platforms")


def test_zstd_docker_and_uncompressed_layers(images: dict[str, ImageRef]) -> None:
    with RegistryClient() as client:
        assert layer_types(client, images["zstd"]) == {"application/vnd.oci.image.layer.v1.tar+zstd"}
        assert layer_types(client, images["docker-zstd-fake"]) == {"application/vnd.docker.image.rootfs.diff.tar.zstd"}
        assert layer_types(client, images["plain-fake"]) == {"application/vnd.oci.image.layer.v1.tar"}
    code, reports = audit_json(*(str(images[k]) for k in ("zstd", "docker-zstd-fake", "plain-fake")))
    assert code == 1
    assert all(b["ok"] for b in reports[str(images["zstd"])]["binaries"])
    assert by_platform(reports[str(images["zstd"])])["linux/arm64"]["machines"] == {"aarch64": 1}
    for key, path in (("docker-zstd-fake", "/bin/bb-dz"), ("plain-fake", "/bin/bb-plain")):
        assert by_platform(reports[str(images[key])])["linux/arm64"]["mismatches"] == [
            {"path": path, "machine": "x86-64"}
        ], key


def test_an_index_that_lists_an_amd64_image_as_arm64(registry: LocalRegistry, images: dict[str, ImageRef]) -> None:
    """The image config says linux/amd64 while the index says linux/arm64: flagged twice over."""
    with RegistryClient() as client:
        amd64 = next(d for d in client.get_manifest(images["right"]).descriptors() if str(d.platform) == "linux/amd64")
        repo = registry.ref("binaries/relabelled")
        raw = client.get_manifest(images["right"].with_digest(amd64.digest)).raw
        for blob in client.get_manifest(images["right"].with_digest(amd64.digest)).descriptors():
            client.put_blob(repo, client.get_blob(images["right"], blob.digest))
        client.put_manifest(repo.with_digest(amd64.digest), raw, OCI_MANIFEST)
        entry = {"mediaType": OCI_MANIFEST, "digest": str(amd64.digest), "size": len(raw)}
        entry["platform"] = {"os": "linux", "architecture": "arm64"}  # type: ignore[assignment]
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}).encode()
        ref = repo.with_digest(client.put_manifest(repo.with_tag("1"), index, OCI_INDEX))
    code, reports = audit_json(str(ref), "--platform", "linux/arm64")
    assert code == 1
    arm64 = by_platform(reports[str(ref)])["linux/arm64"]
    assert arm64["config_platform"] == "linux/amd64"
    assert arm64["mismatches"] == [{"path": "/bin/busybox", "machine": "x86-64"}]


def test_audit_binaries_of_manifests_and_of_a_lock(images: dict[str, ImageRef], tmp_path: Path) -> None:
    (tmp_path / "deploy.yaml").write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n"
        f"  - {{name: a, image: '{images['right']}'}}\n  - {{name: b, image: '{images['fake']}'}}\n"
    )
    proc = run_archlift("audit", "--binaries", str(tmp_path))
    assert proc.returncode == 1, proc.stderr
    assert binaries_column(proc.stdout) == {
        str(images["right"]): "ok",
        str(images["fake"]): "linux/arm64: /bin/busybox is x86-64",
    }

    with RegistryClient() as client:
        platforms = client.index_platforms(images["fake"])
    fake = images["fake"]
    assert fake.digest is not None
    release = ComponentRelease("fake", "mirrored", fake.name, fake.digest, platforms, source_image=str(fake))
    lock = tmp_path / "release.json"
    ReleaseLock({"fake": release}).write(lock)
    code, reports = audit_json(str(lock))
    assert code == 1
    assert by_platform(reports[str(fake.name + "@" + str(fake.digest))])["linux/arm64"]["mismatches"]


# --- images pushed with the client: a TLS + auth registry, and counted layer reads -------------
def layer(files: dict[str, bytes | None]) -> bytes:
    """A gzip layer of regular files (``None``: a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
            else:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return gzip.compress(buf.getvalue(), mtime=0)


def put_image(client: RegistryClient, ref: ImageRef, platforms: dict[str, list[bytes]]) -> ImageRef:
    """An index with one image per platform ("linux/arm64" -> its gzip layers), pushed with the client."""
    children = []
    for text, layers in platforms.items():
        os_name, arch = text.split("/")
        config = json.dumps({"os": os_name, "architecture": arch, "rootfs": {"type": "layers"}}).encode()
        descs = []
        for data in layers:
            descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                          "digest": str(client.put_blob(ref, data)), "size": len(data)})  # fmt: skip
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": str(client.put_blob(ref, config)), "size": len(config)},
                "layers": descs,
            }
        ).encode()  # fmt: skip
        digest = client.put_manifest(ref.with_digest(Digest.of(manifest)), manifest, OCI_MANIFEST)
        children.append({"mediaType": OCI_MANIFEST, "digest": str(digest), "size": len(manifest),
                         "platform": {"os": os_name, "architecture": arch}})  # fmt: skip
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    return ref.with_digest(client.put_manifest(ref, index, OCI_INDEX))


@pytest.fixture(scope="module")
def busybox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = {}
    for arch, deb in find_debs().items():
        where = tmp_path_factory.mktemp(f"deb-{arch}")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(where)], check=True)
        out[arch] = (where / "bin" / "busybox").read_bytes()
    return out


@pytest.fixture()
def credentials(auth_registry: LocalRegistry) -> Iterator[dict[str, str]]:
    assert auth_registry.username and auth_registry.password
    creds = {env_name(auth_registry.host): f"{auth_registry.username}:{auth_registry.password}"}
    old = {k: os.environ.get(k) for k in creds}
    os.environ.update(creds)
    yield creds
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_audit_binaries_in_a_tls_registry_with_auth(
    auth_registry: LocalRegistry, credentials: dict[str, str], busybox: dict[str, bytes]
) -> None:
    with RegistryClient(ca_file=str(auth_registry.ca_file)) as client:
        amd = layer({"usr/bin/tool": busybox["amd64"]})
        ref = put_image(client, auth_registry.ref("binaries/tls", "1"), {"linux/amd64": [amd], "linux/arm64": [amd]})
    code, reports = audit_json(str(ref), "--ca-file", str(auth_registry.ca_file), env=credentials)
    assert code == 1
    r = reports[str(ref)]
    assert r["error"] == "" and r["binaries_error"] == ""
    assert by_platform(r)["linux/arm64"]["mismatches"] == [{"path": "/usr/bin/tool", "machine": "x86-64"}]
    assert by_platform(r)["linux/amd64"]["ok"]


def test_a_shared_layer_is_read_once_and_remembered(
    fresh_registry: LocalRegistry, busybox: dict[str, bytes], tmp_path: Path
) -> None:
    """Two images whose arm64 images share their first layer: the check reads that layer once; a
    second run (another Checker, the same cache directory) reads no layer at all."""
    base = layer({"bin/busybox": busybox["arm64"]})
    with RegistryClient() as client:
        one = put_image(client, fresh_registry.ref("share/one", "1"), {"linux/arm64": [base, layer({"a": b"1"})]})
        two = put_image(client, fresh_registry.ref("share/two", "1"), {"linux/arm64": [base, layer({"b": b"2"})]})
        base_digest = Digest.of(base)

        def base_reads() -> int:
            return fresh_registry.count("GET", f"/blobs/{base_digest}", 200)

        before = base_reads()
        with Checker(client, cache=tmp_path / "cache") as checker:
            results = [*checker.check_image(one), *checker.check_image(two)]
            assert checker.layers_read == 3  # the shared one, and each image's own
        assert [(r.platform, r.ok, r.machines) for r in results] == [("linux/arm64", True, {"aarch64": 1})] * 2
        assert base_reads() - before == 1
        blobs = fresh_registry.count("GET", r"/blobs/sha256:")
        with Checker(client, cache=tmp_path / "cache") as again:
            assert [r.machines for r in again.check_image(one)] == [{"aarch64": 1}]
            assert again.layers_read == 0
        assert fresh_registry.count("GET", r"/blobs/sha256:") == blobs  # no blob read at all


def _into_layout(client: RegistryClient, ref: ImageRef, root: Path) -> None:
    """``ref`` (pinned) copied into an OCI layout directory, as the bake leaves one."""
    from archlift.oci.copy import ImagePlan, copy
    from archlift.oci.layout import LayoutStore
    from archlift.oci.store import RegistryStore

    plan = ImagePlan("x", ref, ImageRef(ref.registry, ref.repository), (), ())
    (result,) = copy([plan], RegistryStore(client), LayoutStore(root))
    assert not result.error


def test_a_layout_checked_as_soon_as_it_is_pushed_leaves_the_gate_nothing_to_read(
    fresh_registry: LocalRegistry, busybox: dict[str, bytes], tmp_path: Path
) -> None:
    """The build hands the checker each layout it has pushed (``layout_pushed``): the images are judged
    from the disk, and the gate's judgement (check_release) then reads nothing from the registry, with
    the same verdict as from the registry. A layout damaged after the push does not mislead the gate: it
    reads that image from the registry."""
    from archlift.checks.binaries import check_release
    from archlift.config.model import BinariesPolicy

    platforms = {
        "linux/amd64": [layer({"bin/busybox": busybox["amd64"]})],
        "linux/arm64": [layer({"bin/busybox": busybox["amd64"]}), layer({"usr/bin/ok": busybox["arm64"]})],
    }
    with RegistryClient() as client:
        ref = put_image(client, fresh_registry.ref("early/app", "1"), platforms)
        assert ref.digest is not None
        entry = ComponentRelease("app", "built", ref.name, ref.digest, client.index_platforms(ref))
        _into_layout(client, ref, tmp_path / "layout")
        with Checker(client) as checker:
            before = len(fresh_registry.access_log())
            assert checker.layout_pushed(tmp_path / "layout", ref.digest, ImageRef(ref.registry, ref.repository)) == 2
            early_layers = checker.layers_read
            verdict = check_release(checker, BinariesPolicy("fail"), entry)
            assert fresh_registry.access_log()[before:] == []  # not one request, from the layout to the verdict
        with Checker(client) as fresh:
            from_registry = check_release(fresh, BinariesPolicy("fail"), entry)
        assert early_layers == 2 and fresh.layers_read == 2  # the amd64 layer is both platforms' first
        assert verdict.platforms == from_registry.platforms
        assert verdict.error is not None and "/bin/busybox: x86-64" in verdict.error.message
        assert {p.platform: p.elf_files for p in verdict.platforms} == {"linux/amd64": 1, "linux/arm64": 2}

        # the arm64 top layer changed on the disk after the push: its digest no longer matches
        arm64 = client.get_manifest(ref.with_digest(entry.platforms["linux/arm64"]))
        top = arm64.descriptors()[-1]
        path = tmp_path / "layout" / "blobs" / "sha256" / top.digest.hex
        path.write_bytes(layer({"usr/bin/ok": busybox["amd64"]}))
        with Checker(client) as checker:
            assert checker.layout_pushed(tmp_path / "layout", ref.digest, ImageRef(ref.registry, ref.repository)) == 1
            before = fresh_registry.count("GET", f"/blobs/{top.digest}", 200)
            again = check_release(checker, BinariesPolicy("fail"), entry)
            assert fresh_registry.count("GET", f"/blobs/{top.digest}", 200) == before + 1  # read from the registry
        assert again.platforms == from_registry.platforms


def test_an_opaque_directory_hides_a_wrong_binary(fresh_registry: LocalRegistry, busybox: dict[str, bytes]) -> None:
    """A layer that makes /opt/tools opaque hides the amd64 binary below it; without it, it is flagged."""
    wrong = layer({"opt/tools": None, "opt/tools/tool": busybox["amd64"]})
    opaque = layer({"opt/tools": None, "opt/tools/.wh..wh..opq": b"", "opt/tools/tool": b"#!/bin/sh\n"})
    plain = layer({"opt/tools": None, "opt/tools/other": b"#!/bin/sh\n"})
    with RegistryClient() as client:
        hidden = put_image(client, fresh_registry.ref("opaque/hidden", "1"), {"linux/arm64": [wrong, opaque]})
        shown = put_image(client, fresh_registry.ref("opaque/shown", "1"), {"linux/arm64": [wrong, plain]})
        with Checker(client) as checker:
            (ok,) = checker.check_image(hidden)
            (bad,) = checker.check_image(shown)
    assert ok.ok and ok.elf_files == 0
    assert [(m.path, m.machine) for m in bad.mismatches] == [("/opt/tools/tool", "x86-64")]


def test_what_the_gate_makes_of_a_mismatch_and_of_a_layer_it_cannot_read(
    fresh_registry: LocalRegistry, busybox: dict[str, bytes]
) -> None:
    """check_release, the gate's judgement of one release entry: a built component fails, a mirrored one
    warns unless check: fail, allowed paths pass; a layer that is not a filesystem cannot be judged."""
    from archlift.checks.binaries import check_release
    from archlift.config.model import BinariesPolicy

    amd = layer({"usr/bin/tool": busybox["amd64"]})
    with RegistryClient() as client:
        ref = put_image(client, fresh_registry.ref("gate/tool", "1"), {"linux/arm64": [amd]})
        platforms = client.index_platforms(ref)
        odd = fresh_registry.ref("gate/odd")
        data = b'{"not": "a layer"}'
        config = json.dumps({"os": "linux", "architecture": "arm64"}).encode()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                           "digest": str(client.put_blob(odd, config)), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.example.notes+json",
                            "digest": str(client.put_blob(odd, data)), "size": len(data)}],
            }
        ).encode()  # fmt: skip
        odd_digest = client.put_manifest(odd.with_digest(Digest.of(manifest)), manifest, OCI_MANIFEST)
        assert ref.digest is not None

        def release(kind: str, repo: ImageRef = ref, plats: dict[str, Digest] = platforms) -> ComponentRelease:
            return ComponentRelease("tool", kind, repo.name, ref.digest or Digest.of(b""), plats)

        with Checker(client) as checker:
            built = check_release(checker, BinariesPolicy("fail"), release("built"))
            warned = check_release(checker, BinariesPolicy("warn"), release("mirrored"))
            strict = check_release(checker, BinariesPolicy("fail"), release("mirrored"))
            allowed = check_release(checker, BinariesPolicy("fail", ("/usr/bin/*",), "on purpose"), release("built"))
            unreadable = check_release(
                checker, BinariesPolicy("fail"), release("built", odd, {"linux/arm64": odd_digest})
            )
            warned_unreadable = check_release(
                checker, BinariesPolicy("warn"), release("mirrored", odd, {"linux/arm64": odd_digest})
            )
    assert built.error is not None and built.error.exit_code == 5 and "cross-compile" in built.error.hint
    assert built.error.message.startswith("tool: ") and "/usr/bin/tool: x86-64" in built.error.message
    assert not built.warnings
    assert not warned.error and len(warned.warnings) == 1 and "/usr/bin/tool: x86-64" in warned.warnings[0]
    assert strict.error and not strict.warnings
    assert not allowed.error and not allowed.warnings
    assert [(m.path, m.machine) for m in allowed.platforms[0].allowed] == [("/usr/bin/tool", "x86-64")]
    assert unreadable.error is not None
    assert "cannot be checked" in unreadable.error.message and "not a filesystem layer" in unreadable.error.message
    assert not warned_unreadable.error and "cannot be checked" in warned_unreadable.warnings[0]
