"""archlift.checks.audit without a registry: finding images, parsing saved real registry JSON
(tests/fixtures/audit: what buildx pushed for the registry tests), and inspect() over
an in-memory registry holding those documents."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from archlift.checks.audit import (
    ImageReport,
    Target,
    audit,
    collect,
    config_labels,
    config_platform,
    format_table,
    images_in_yaml,
    is_config_document,
    merge_targets,
    missing_platforms,
    parse_index,
    predicate_kinds,
    published_tag,
    referrer_kind,
    summary,
)
from archlift.config.model import load_config
from archlift.errors import ArchliftError, ConfigError, RegistryError
from archlift.refs import Digest, ImageRef, Platform

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audit"
ROOT = Path(__file__).resolve().parents[2]
AMD64, ARM64 = Platform.parse("linux/amd64"), Platform.parse("linux/arm64")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict[str, Any]:
    data = json.loads(fixture(name))
    assert isinstance(data, dict)
    return data


# --- finding images ------------------------------------------------------------------------
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      initContainers: [{name: init, image: "example.com/init:1"}]
      containers:
      - {name: web, image: "example.com/web:2"}
      - {name: side, image: "example.com/side@sha256:%s"}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          containers: [{name: job, image: busybox}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: reconciler-template}
data:
  deployment.yaml: |
    apiVersion: apps/v1
    kind: Deployment
    spec:
      template:
        spec:
          containers:
          - name: sync
            image: PLACEHOLDER_IMAGE_NAME
  notes: "image: not yaml here"
""" % ("a" * 64)


def test_images_in_yaml_every_container_list_and_yaml_in_strings() -> None:
    found = images_in_yaml(DEPLOYMENT, "install.yaml")
    assert [image for image, _ in found] == [
        "example.com/init:1",
        "example.com/web:2",
        "example.com/side@sha256:" + "a" * 64,
        "busybox",
        "PLACEHOLDER_IMAGE_NAME",
    ]
    where = dict((image, w) for image, w in found)
    assert where["example.com/init:1"] == "install.yaml Deployment/web spec.template.spec.initContainers[0]"
    assert where["busybox"].startswith("install.yaml CronJob/nightly spec.jobTemplate.spec.template.spec.containers")
    assert where["PLACEHOLDER_IMAGE_NAME"].startswith(
        "install.yaml ConfigMap/reconciler-template data.deployment.yaml>"
    )


def test_images_in_yaml_names_the_line_of_a_syntax_error() -> None:
    with pytest.raises(ConfigError, match=r"bad.yaml:2:4: not valid YAML"):
        images_in_yaml("a: 1\nb: ]\n", "bad.yaml")


def test_images_in_yaml_ignores_documents_without_containers() -> None:
    assert images_in_yaml("---\n# only a comment\n---\nkind: Namespace\nmetadata: {name: x}\n", "ns.yaml") == []


def test_config_and_lock_detection() -> None:
    assert is_config_document({"archlift": 1, "components": {}})
    assert not is_config_document({"kind": "List", "components": {}})
    assert not is_config_document(["components"])


def test_merge_targets_joins_platforms_and_places() -> None:
    merged = merge_targets(
        [Target("a:1", (AMD64,), ("x",)), Target("b:1", (AMD64,), ("y",)), Target("a:1", (ARM64, AMD64), ("z",))]
    )
    assert [t.text for t in merged] == ["a:1", "b:1"]
    assert merged[0].wanted == (AMD64, ARM64)
    assert merged[0].where == ("x", "z")


def test_collect_directory_and_references(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(DEPLOYMENT)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text(
        "kind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: c, image: 'example.com/web:2'}]}\n"
    )
    (tmp_path / "README.md").write_text("image: ignored\n")
    targets = collect([str(tmp_path), "ghcr.io/x/y:1"], [Platform.parse("linux/s390x")])
    texts = [t.text for t in targets]
    assert texts.count("example.com/web:2") == 1
    assert texts[-1] == "ghcr.io/x/y:1"
    web = next(t for t in targets if t.text == "example.com/web:2")
    assert len(web.where) == 2
    assert all(t.wanted == (Platform.parse("linux/s390x"),) for t in targets)


def test_collect_default_platforms_for_references() -> None:
    (target,) = collect(["ghcr.io/x/y:1"])
    assert target.wanted == (AMD64, ARM64)


@pytest.mark.parametrize("arg", ["./no/such/File.yaml", "dist/manifests", "missing.yaml", "/abs/dir"])
def test_collect_refuses_a_missing_path(arg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"no such file or directory|neither a file"):
        collect([arg])


def test_collect_root_images_yaml() -> None:
    """The Config Sync images.yaml: mirrors, published images and the base images its builds name."""
    targets = {t.text: t for t in collect([str(ROOT / "images.yaml")])}
    assert "registry.k8s.io/git-sync/git-sync:v4.4.2" in targets
    assert "docker.io/otel/opentelemetry-collector-contrib:0.152.0" in targets
    assert "ghcr.io/example/config-sync/reconciler:v1.24.3" in targets
    assert "docker.io/library/golang:1.26.4" in targets
    assert "gcr.io/distroless/static:nonroot" in targets
    assert not any(x in t for t in targets for x in ("v3.21.1", "proxy.golang.org", "sum.golang.org"))  # build args
    assert targets["ghcr.io/example/config-sync/nomos:v1.24.3"].wanted == (AMD64, ARM64)


def test_published_tag_uses_the_first_template_images_yaml_can_fill(tmp_path: Path) -> None:
    (tmp_path / "images.yaml").write_text(
        "registry: registry.example.com/x\n"
        "components:\n"
        "  a:\n"
        "    source: {git: https://example.com/a.git, ref: v2.0.0}\n"
        '    tags: ["{inputs}", "git-{short_commit}", "{version}-{state}"]\n'
        "  b:\n"
        "    source: {git: https://example.com/b.git, ref: v1.0.0, commit: '" + "c" * 40 + "'}\n"
        '    tags: ["git-{short_commit}-{state}"]\n'
    )
    config = load_config(tmp_path / "images.yaml")
    assert published_tag(config.components["a"]) == "v2.0.0-clean"
    assert published_tag(config.components["b"]) == "git-" + "c" * 9 + "-clean"


# --- parsing what registries hold (saved real JSON) -----------------------------------------
def test_parse_buildx_index_with_provenance() -> None:
    entries = parse_index(fixture_json("buildx-provenance-index.json"))
    assert sorted(entries.platforms) == ["linux/amd64", "linux/arm64"]
    assert set(entries.attestations.values()) == set(entries.platforms.values())
    assert entries.annotations["org.opencontainers.image.source"] == "https://example.com/audit/attested"


def test_attestation_manifest_is_provenance() -> None:
    assert predicate_kinds(fixture_json("buildx-attestation-manifest.json")) == ["provenance"]
    assert predicate_kinds(
        {"layers": [{"annotations": {"in-toto.io/predicate-type": "https://spdx.dev/Document"}}]}
    ) == ["sbom"]


def test_config_platform_and_labels() -> None:
    config = fixture_json("buildx-amd64-config.json")
    assert config_platform(config) == "linux/amd64"
    assert config_labels(config)["org.opencontainers.image.source"] == "https://example.com/audit/amd64-only"
    assert config_platform({"architecture": "arm64", "os": "linux", "variant": "v8"}) == "linux/arm64"
    assert config_platform({"architecture": "arm", "os": "linux", "variant": "v7"}) == "linux/arm/v7"
    assert config_platform({}) == ""


def test_parse_docker_manifest_list_variants() -> None:
    doc = {
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        ],
    }
    assert sorted(parse_index(doc).platforms) == ["linux/arm/v7", "linux/arm64"]


def test_referrer_kinds_and_missing() -> None:
    assert referrer_kind("application/vnd.dev.cosign.artifact.sig.v1+json") == "signature"
    assert referrer_kind("application/spdx+json") == "sbom"
    assert referrer_kind("application/vnd.in-toto+json") == "attestation"
    assert referrer_kind("") == "artifact"
    assert missing_platforms((AMD64, ARM64), ["linux/amd64"]) == ("linux/arm64",)


# --- inspect over an in-memory registry ---------------------------------------------------
@dataclass(frozen=True)
class FakeManifest:
    raw: bytes

    @property
    def digest(self) -> Digest:
        return Digest.of(self.raw)

    def json(self) -> dict[str, Any]:
        data = json.loads(self.raw)
        assert isinstance(data, dict)
        return data

    @property
    def is_index(self) -> bool:
        return "manifests" in self.json()


@dataclass(frozen=True)
class FakeDescriptor:
    media_type: str
    artifact_type: str


class FakeRegistry:
    """Manifests by tag and digest, blobs by digest, referrers by subject digest."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.blobs: dict[Digest, bytes] = {}
        self.refs: dict[Digest, list[FakeDescriptor]] = {}

    def add(self, raw: bytes, tag: str = "") -> Digest:
        digest = Digest.of(raw)
        self.manifests[str(digest)] = raw
        if tag:
            self.manifests[tag] = raw
        return digest

    def get_manifest(self, ref: ImageRef) -> FakeManifest:
        raw = self.manifests.get(ref.reference)
        if raw is None:
            raise RegistryError(f'fetching "{ref}": manifest unknown (HTTP 404)')
        return FakeManifest(raw)

    def get_blob(self, repo: ImageRef, digest: Digest) -> bytes:
        return self.blobs[digest]

    def referrers(self, repo: ImageRef, digest: Digest) -> list[FakeDescriptor]:
        return self.refs.get(digest, [])


def test_inspect_single_manifest_reads_its_config() -> None:
    reg = FakeRegistry()
    config = fixture("buildx-amd64-config.json")
    reg.blobs[Digest.of(config)] = config
    reg.add(fixture("buildx-amd64-manifest.json"), tag="1")
    (report,) = audit(reg, [Target("example.com/amd64-only:1", (AMD64, ARM64))])
    assert report.kind == "image"
    assert report.platforms == ("linux/amd64",)
    assert report.missing == ("linux/arm64",)
    assert report.source == "https://example.com/audit/amd64-only"
    assert not report.ok


def test_inspect_index_with_attestations_and_referrers() -> None:
    reg = FakeRegistry()
    attestation = fixture("buildx-attestation-manifest.json")
    index = fixture_json("buildx-provenance-index.json")
    for n, entry in enumerate(index["manifests"]):  # each attestation entry: the saved manifest (made unique)
        if entry.get("annotations", {}).get("vnd.docker.reference.type") == "attestation-manifest":
            entry["digest"] = str(reg.add(attestation + b" " * n))
    digest = reg.add(json.dumps(index).encode(), tag="1")
    reg.refs[digest] = [
        FakeDescriptor("application/vnd.oci.image.manifest.v1+json", "application/vnd.dev.cosign.artifact.sig.v1+json")
    ]
    (report,) = audit(reg, [Target("example.com/attested:1", (AMD64, ARM64))])
    assert report.ok
    assert report.platforms == ("linux/amd64", "linux/arm64")
    assert report.attestations == {"linux/amd64": ("provenance",), "linux/arm64": ("provenance",)}
    assert report.referrers == {"signature": 1}
    assert report.source == "https://example.com/audit/attested"
    assert "attested (provenance) for 2 platform(s); 1 signature referrer(s)" in format_table([report])


def test_inspect_index_source_from_a_platform_config() -> None:
    reg = FakeRegistry()
    config = fixture("buildx-amd64-config.json")
    reg.blobs[Digest.of(config)] = config
    child = reg.add(fixture("buildx-amd64-manifest.json"))
    index = {"manifests": [{"digest": str(child), "platform": {"os": "linux", "architecture": "amd64"}}]}
    reg.add(json.dumps(index).encode(), tag="2")
    (report,) = audit(reg, [Target("example.com/x:2", (AMD64,))])
    assert report.ok and report.source == "https://example.com/audit/amd64-only"


def test_inspect_failures_are_rows_not_crashes() -> None:
    reg = FakeRegistry()
    reports = audit(reg, [Target("example.com/missing:1", (AMD64,)), Target("PLACEHOLDER_IMAGE", (ARM64,))])
    assert [bool(r.error) for r in reports] == [True, True]
    assert "HTTP 404" in reports[0].error
    assert "not an image reference" in reports[1].error
    assert reports[1].missing == ("linux/arm64",)
    assert summary(reports) == "2 image(s): 2 could not be inspected"


def test_table_layout() -> None:
    ok = ImageReport(Target("a.example/x:1", (AMD64,)), platforms=("linux/amd64",), source="https://s")
    bad = ImageReport(Target("b.example/long/name:1", (ARM64,)), platforms=("linux/amd64",), missing=("linux/arm64",))
    lines = format_table([ok, bad]).splitlines()
    assert lines[0].split() == ["IMAGE", "PLATFORMS", "MISSING", "SOURCE", "NOTES"]
    assert lines[1].index("linux/amd64") == lines[2].index("linux/amd64") == lines[0].index("PLATFORMS")
    assert summary([ok, bad]) == "2 image(s): 1 missing a wanted platform"
    assert summary([ok]) == "1 image(s): every wanted platform is there"
    assert isinstance(RegistryError("x"), ArchliftError)
