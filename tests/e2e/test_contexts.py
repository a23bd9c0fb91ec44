"""Named build contexts are matched the way BuildKit matches them (issue 17 item 1).

BuildKit's Dockerfile frontend parses every name it looks up (a FROM base, a stage
name, COPY --from, RUN --mount from=) as a docker reference and looks for the context
``familiar form without :latest``; ``docker buildx bake`` passes context keys exactly as
written. So a key must be written in that form to be used: archlift writes it so for
bake and hashes the image the context really gives, and refuses a key no lookup finds.
"""

from __future__ import annotations

import io
import json
import tarfile
import textwrap
from pathlib import Path

import pytest
from support.registry import LocalRegistry

from archlift.cli import main
from archlift.config.model import load_config
from archlift.localenv import make_git_repo, seed_busybox, seed_toolchain, write_files
from archlift.lock import ReleaseLock
from archlift.oci import RegistryClient
from archlift.refs import ImageRef, RefError, context_name
from archlift.steps.dockerfile import external_images, lookups, unused_contexts
from archlift.steps.engine import BuildJob, bake_target
from archlift.steps.inputs import Inputs
from archlift.steps.patches import PatchedTree
from archlift.steps.sources import ResolvedSource


# --- the name BuildKit looks up ----------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "looked_up"),
    [
        ("gcr.io/distroless/static:latest", "gcr.io/distroless/static"),
        ("gcr.io/distroless/static", "gcr.io/distroless/static"),
        ("gcr.io/distroless/static:nonroot", "gcr.io/distroless/static:nonroot"),
        ("name", "name"),
        ("name:latest", "name"),
        ("docker.io/library/name", "name"),
        ("docker.io/library/name:latest", "name"),
        ("index.docker.io/library/name:1.0", "name:1.0"),
        ("library/name:1.0", "name:1.0"),
        ("docker.io/foo/bar:latest", "foo/bar"),
        ("docker.io/library/a/b", "library/a/b"),
        ("localhost:5000/x:latest", "localhost:5000/x"),
        ("name@sha256:" + "a" * 64, "name@sha256:" + "a" * 64),
        ("name:latest@sha256:" + "a" * 64, "name:latest@sha256:" + "a" * 64),
        ("bins", "bins"),
    ],
)
def test_context_name_is_buildkits_familiar_form_without_latest(text: str, looked_up: str) -> None:
    assert context_name(text) == looked_up


@pytest.mark.parametrize("text", ["Name", "name::linux/arm64", "a b", ""])
def test_context_name_refuses_what_docker_cannot_parse(text: str) -> None:
    with pytest.raises(RefError):
        context_name(text)


# --- what the Dockerfile looks up, and what it pulls ---------------------------------------------
CONFIG_SYNC_LIKE = """\
ARG GOLANG_IMAGE
FROM ${GOLANG_IMAGE} as bins
RUN make
FROM gcr.io/distroless/static:nonroot as reconciler
COPY --from=bins /go/bin/reconciler .
FROM gcr.io/distroless/static:latest as oci-sync
COPY --from=bins /go/bin/oci-sync .
"""
CONTEXTS = {
    "gcr.io/distroless/static:nonroot": "docker-image://mirror.example/distroless/static:nonroot",
    "gcr.io/distroless/static:latest": "docker-image://mirror.example/distroless/static:latest",
}


def test_a_latest_key_replaces_the_latest_from_line() -> None:
    """The root images.yaml's case: the key as the FROM line writes it is used (it was ignored)."""
    args = {"GOLANG_IMAGE": "golang:1.24"}
    assert external_images(CONFIG_SYNC_LIKE, args, CONTEXTS) == [
        "golang:1.24",
        "mirror.example/distroless/static:nonroot",
        "mirror.example/distroless/static:latest",
    ]
    assert unused_contexts(CONFIG_SYNC_LIKE, args, CONTEXTS) == []


@pytest.mark.parametrize("key", ["name", "name:latest", "docker.io/library/name", "docker.io/library/name:latest"])
def test_every_spelling_of_a_name_meets_every_spelling_of_the_key(key: str) -> None:
    text = textwrap.dedent(
        """\
        FROM name:latest AS one
        FROM name AS two
        FROM docker.io/library/name AS three
        FROM scratch
        COPY --from=docker.io/library/name:latest /a /a
        RUN --mount=type=bind,from=name,target=/m true
        """
    )
    assert external_images(text, {}, {key: "docker-image://mirror.example/name:1"}) == ["mirror.example/name:1"]
    found = [(use.kind, use.line) for use, value in lookups(text, {}, {key: "docker-image://x/y:1"}) if value]
    assert found == [("FROM", 1), ("FROM", 2), ("FROM", 3), ("COPY --from", 5), ("RUN --mount from=", 6)]


def test_a_context_named_as_a_stage_replaces_the_stage() -> None:
    text = "FROM golang:1.24 AS bins\nRUN make\nFROM alpine:3.19\nCOPY --from=bins /x /x\nCOPY --from=other /y /y\n"
    # the stage is not built: its FROM image is not pulled, the context's image is
    assert external_images(text, {}, {"bins": "docker-image://mirror.example/prebuilt:1"}) == [
        "mirror.example/prebuilt:1",
        "alpine:3.19",
        "other",
    ]
    # a local context pulls nothing; the names of earlier stages are not images
    assert external_images(text, {}, {"bins": "./prebuilt"}) == ["alpine:3.19", "other"]
    assert external_images(text, {}, {}) == ["golang:1.24", "alpine:3.19", "other"]
    # the replaced stage's own FROM is never looked up: a context for it would be ignored
    contexts = {"bins": "./prebuilt", "golang:1.24": "docker-image://mirror.example/golang:1.24"}
    assert unused_contexts(text, {}, contexts) == ["golang:1.24"]


def test_keys_no_lookup_finds_are_unused() -> None:
    contexts = {
        "name:1.0": "docker-image://x/y:1",  # FROM name:1.1
        "docker.io/library/scratch": "docker-image://x/y:1",  # scratch is never looked up
        "name:1.1": "docker-image://x/y:2",
    }
    text = "FROM name:1.1\nFROM scratch\n"
    assert unused_contexts(text, {}, contexts) == ["name:1.0", "docker.io/library/scratch"]


def test_bake_gets_the_keys_buildkit_looks_up(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").write_text(
        "registry: registry.example/x\n"
        "components:\n"
        "  app:\n"
        "    source: {path: .}\n"
        "    build:\n"
        "      contexts:\n"
        "        gcr.io/distroless/static:latest: docker-image://mirror.example/static:latest\n"
        "        docker.io/library/golang:1.24: docker-image://mirror.example/golang:1.24\n"
        "        'base:1': docker-image://mirror.example/base:1\n"
    )
    config = load_config(tmp_path / "images.yaml")
    comp = config.components["app"]
    assert comp.source is not None
    resolved = ResolvedSource(comp.source, str(tmp_path), "0" * 40, "local", 42, None)
    job = BuildJob(comp, Inputs("h", {}, {}), PatchedTree(tmp_path, resolved, ()), tmp_path / "out")
    assert bake_target(job, config)["contexts"] == {
        "gcr.io/distroless/static": "docker-image://mirror.example/static:latest",
        "golang:1.24": "docker-image://mirror.example/golang:1.24",
        "base:1": "docker-image://mirror.example/base:1",
    }


# --- refused at validate -----------------------------------------------------------------------
LOCAL_DOCKERFILE = "FROM name:latest AS base\nFROM gcr.io/distroless/static:nonroot\nCOPY --from=base /a /a\n"


def _local_config(tmp_path: Path, contexts: str) -> Path:
    (tmp_path / "Dockerfile").write_text(LOCAL_DOCKERFILE)
    config = tmp_path / "images.yaml"
    config.write_text(
        "registry: registry.example/x\n"
        "components:\n"
        "  app:\n"
        "    source: {path: .}\n"
        "    build:\n"
        "      dockerfile_local: Dockerfile\n"
        "      contexts:\n" + textwrap.indent(contexts, "        ")
    )
    return config


def test_an_unused_context_key_is_refused_at_validate_with_the_closest_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _local_config(
        tmp_path,
        "docker.io/library/name: docker-image://mirror.example/name:1\n"
        "gcr.io/distroless/static:nonrot: docker-image://mirror.example/static:nonroot\n",
    )
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"archlift: invalid input: {config}:9:9: components.app.build.contexts.gcr.io/distroless/static:nonrot: "
        f"no FROM, COPY --from or RUN --mount from= in {tmp_path / 'Dockerfile'} uses the named context "
        "'gcr.io/distroless/static:nonrot'; did you mean 'gcr.io/distroless/static:nonroot' "
        f"(FROM, {tmp_path / 'Dockerfile'} line 2)?\n"
    ), err
    assert "docker.io/library/ and :latest are implied" in err
    assert "Traceback" not in err
    assert "docker.io/library/name" not in err.split("\n")[0]  # that key is used (FROM name:latest)


def test_every_unused_key_is_named_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_config(
        tmp_path,
        "gcr.io/distroless/static:latest: docker-image://mirror.example/static:latest\n"
        "busybox: docker-image://mirror.example/busybox:1\n",
    )
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    dockerfile = tmp_path / "Dockerfile"
    assert err.startswith(f"archlift: invalid input: 2 named contexts that {dockerfile} never uses:\n  {config}:8:9: ")
    assert (
        "uses the named context 'gcr.io/distroless/static:latest' (BuildKit looks it up as 'gcr.io/distroless/static');"
        f" did you mean 'gcr.io/distroless/static:nonroot' (FROM, {dockerfile} line 2)?\n  {config}:9:9: "
        f"components.app.build.contexts.busybox: no FROM, COPY --from or RUN --mount from= in {dockerfile} uses the "
        "named context 'busybox'\n"
    ) in err


def test_two_keys_for_one_name_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_config(
        tmp_path,
        "name: docker-image://mirror.example/name:1\ndocker.io/library/name:latest: docker-image://mirror.example/n:2\n",
    )
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{config}:9:9: components.app.build.contexts.docker.io/library/name:latest: "
        "'docker.io/library/name:latest' and 'name' name the same context (BuildKit looks both up as 'name')"
    ) in err


def test_a_key_docker_cannot_parse_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_config(tmp_path, "Name: docker-image://mirror.example/name:1\n")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert f"{config}:8:9: components.app.build.contexts.Name: 'Name' is not a name a Dockerfile can use" in err


def test_a_context_for_one_platform_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_config(tmp_path, "name::linux/arm64: docker-image://mirror.example/name:1\n")
    assert main(["validate", str(config)]) == 2
    err = capsys.readouterr().err
    assert (
        f"{config}:8:9: components.app.build.contexts.name::linux/arm64: 'name::linux/arm64': a context for one "
        "platform (NAME::PLATFORM) is not supported\n  give one context for every platform"
    ) in err


def test_used_keys_in_every_spelling_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _local_config(
        tmp_path,
        "docker.io/library/name:latest: docker-image://mirror.example/name:1\n"
        "gcr.io/distroless/static:nonroot: docker-image://mirror.example/static:nonroot\n",
    )
    assert main(["validate", str(config)]) == 0, capsys.readouterr().err


# --- the real engine and registry ----------------------------------------------------------------
ALL_SPELLINGS = """\
FROM name:latest AS one
FROM name AS two
FROM docker.io/library/name AS three
FROM scratch
COPY --from=one /bin/busybox /one/busybox
COPY --from=two /bin/busybox /two/busybox
COPY --from=three /bin/busybox /three/busybox
"""


def _files(client: RegistryClient, image: ImageRef) -> set[str]:
    """Every file in the layers of every platform manifest of ``image``."""
    names: set[str] = set()
    index = client.get_manifest(image)
    manifests = [d for d in index.descriptors() if d.platform and not d.is_attestation] if index.is_index else []
    for desc in manifests or [None]:
        manifest = client.get_manifest(image.with_digest(desc.digest)) if desc else index
        for layer in manifest.descriptors()[1:]:
            with tarfile.open(fileobj=io.BytesIO(client.get_blob(image, layer.digest))) as tar:
                names |= {m.name for m in tar.getmembers() if m.isfile()}
    return names


@pytest.mark.parametrize("key", ["name:latest", "name", "docker.io/library/name"])
def test_one_context_replaces_every_spelling_and_the_hash_follows_its_digest(
    key: str,
    registry: LocalRegistry,
    docker_ready: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No public registry is reachable here: the build succeeds only if all three FROM lines are
    the stand-in (the files come from it), and the inputs hash moves with the stand-in's digest."""
    slug = key.replace("/", "-").replace(":", "-").replace(".", "-")
    standin = f"{registry.host}/standin-{slug}/name"
    busybox = seed_busybox(registry.host, f"standin-{slug}/name", "1")
    toolchain = seed_toolchain(registry.host, f"standin-{slug}/name", "other")
    upstream = make_git_repo(write_files(tmp_path / "src", {"Dockerfile": ALL_SPELLINGS}), tmp_path / "up.git")
    config = tmp_path / "images.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            registry: {registry.host}/ctx-{slug}
            platforms: [linux/amd64]
            cache: {{type: none}}
            attestations: {{provenance: true, sbom: false}}  # an index for one platform
            components:
              app:
                source: {{git: {upstream.path}, ref: v1.0.0}}
                build:
                  contexts:
                    '{key}': docker-image://{standin}:1
            """
        )
    )
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)

    assert main(["build", str(config), "--json"]) == 0, capsys.readouterr()
    capsys.readouterr()
    lock = ReleaseLock.read(tmp_path / "dist" / "release.json")
    app = lock.component("app")
    with RegistryClient() as client:
        assert {"one/busybox", "two/busybox", "three/busybox"} <= _files(client, app.ref)

        def decision() -> dict[str, str]:
            assert main(["plan", str(config), "--check", "--json"]) == 0
            out = json.loads(capsys.readouterr().out)
            return dict(out["components"][0]["decision"])

        before = decision()
        assert before["action"] == "skip" and before["inputs_hash"] == app.inputs_hash
        # the context's tag moves to another image: same images.yaml, other inputs
        moved = client.get_manifest(toolchain)
        client.put_manifest(ImageRef.parse(f"{standin}:1"), moved.raw, moved.media_type)
        after = decision()
        assert after["action"] == "build" and after["inputs_hash"] != app.inputs_hash
        # and back: the first inputs again, built already
        back = client.get_manifest(busybox)
        client.put_manifest(ImageRef.parse(f"{standin}:1"), back.raw, back.media_type)
        assert decision()["inputs_hash"] == app.inputs_hash


def test_an_unused_context_in_an_upstream_dockerfile_fails_the_plan_and_the_build(
    registry: LocalRegistry,
    docker_ready: None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upstream = make_git_repo(write_files(tmp_path / "src", {"Dockerfile": ALL_SPELLINGS}), tmp_path / "up.git")
    config = tmp_path / "images.yaml"
    config.write_text(
        f"registry: {registry.host}/ctx-unused\n"
        "platforms: [linux/amd64]\n"
        "components:\n"
        "  app:\n"
        f"    source: {{git: {upstream.path}, ref: v1.0.0}}\n"
        "    build:\n"
        "      contexts:\n"
        f"        nmae: docker-image://{registry.host}/standin/name:1\n"
    )
    monkeypatch.setenv("ARCHLIFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(config)]) == 0  # the Dockerfile is in the upstream source: read when planned
    capsys.readouterr()
    assert main(["plan", str(config), "--check", "--json"]) == 2  # bad input, as build exits
    decision = json.loads(capsys.readouterr().out)["components"][0]["decision"]
    decision.pop("hint", None)
    expected = (
        f"{config}:8:9: components.app.build.contexts.nmae: no FROM, COPY --from or RUN --mount from= in "
        "Dockerfile uses the named context 'nmae'; did you mean 'name:latest' (FROM, Dockerfile line 1)?"
    )
    assert decision == {"action": "fail", "reason": expected}
    assert main(["build", str(config)]) == 2
    captured = capsys.readouterr()
    assert expected in captured.out + captured.err
    assert "Traceback" not in captured.err
    with RegistryClient() as client:
        assert client.head_manifest(ImageRef.parse(f"{registry.host}/ctx-unused/app:v1.0.0")) is None
