"""Every bad images.yaml gets one precise message: file:line:column, the field
path, what was expected and what was found; exit status 2; no traceback."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from archlift.cli import main

GOOD_SOURCE = "source: {git: https://example.com/x.git, ref: v1}"

# (id, images.yaml text, expected "line:col", substrings the message must hold)
CASES = [
    ("yaml-syntax", "components: [a, b\n", "2:1", ["YAML syntax error"]),
    ("tab-indent", "components:\n\thello: {}\n", "2:1", ["tab is used for indentation"]),
    ("empty-file", "", "1:1", ["the file is empty"]),
    ("comment-only", "# nothing\n", "1:1", ["the file is empty"]),
    ("top-level-list", "- a\n- b\n", "1:1", ["expected a mapping", "found a list"]),
    (
        "unknown-top-key",
        f"componets:\n  a:\n    {GOOD_SOURCE}\n",
        "1:1",
        ["unknown key 'componets'", "did you mean 'components'"],
    ),
    ("no-components", "registry: ghcr.io/acme\n", "1:1", ["no 'components:' section"]),
    ("empty-components", "components: {}\n", "1:13", ["no components"]),
    (
        "unknown-component-key",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    patchs: []\n",
        "4:5",
        ["components.a.patchs", "unknown key 'patchs'", "did you mean 'patches'"],
    ),
    (
        "duplicate-component",
        f"components:\n  a:\n    {GOOD_SOURCE}\n  a:\n    {GOOD_SOURCE}\n",
        "4:3",
        ["duplicate key 'a'", "first defined on line 2"],
    ),
    (
        "duplicate-key",
        "components:\n  a:\n    source: {git: https://example.com/x.git, ref: v1, ref: v2}\n",
        "3:55",
        ["components.a.source.ref", "duplicate key 'ref'"],
    ),
    (
        "source-and-mirror",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    mirror: docker.io/library/busybox:1.36\n",
        "3:5",
        ["components.a", "either 'source'", "or 'mirror'"],
    ),
    ("neither", "components:\n  a:\n    platforms: [linux/amd64]\n", "3:5", ["needs 'source'", "or 'mirror'"]),
    (
        "unknown-platform",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    platforms: [linux/amd64, linux/arm65]\n",
        "4:30",
        ["components.a.platforms[1]", "'linux/arm65' is not a known platform", "did you mean 'linux/arm64'"],
    ),
    (
        "platforms-not-list",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    platforms: linux/amd64\n",
        "4:16",
        ["expected a list of platforms", 'found a string ("linux/amd64")'],
    ),
    (
        "duplicate-platform",
        "platforms: [linux/amd64, linux/amd64]\ncomponents:\n  a:\n    mirror: ghcr.io/x/y:1\n",
        "1:26",
        ["platforms[1]", "listed twice"],
    ),
    (
        "missing-patch",
        "components:\n  a:\n    source: {git: https://example.com/x.git, ref: v1, patches: [patches/nope.patch]}\n",
        "3:65",
        ["components.a.source.patches[0]", "patch file 'patches/nope.patch' does not exist"],
    ),
    (
        "dockerfile-outside",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    build: {{dockerfile: ../../etc/Dockerfile}}\n",
        "4:25",
        ["components.a.build.dockerfile", "outside the source tree"],
    ),
    (
        "dockerfile-absolute",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    build: {{dockerfile: /etc/Dockerfile}}\n",
        "4:25",
        ["outside the source tree"],
    ),
    (
        "context-outside",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    build: {{context: sub/../..}}\n",
        "4:22",
        ["components.a.build.context", "outside the source tree"],
    ),
    (
        "bad-mirror-ref",
        "components:\n  a:\n    mirror: Docker.io/Library/BusyBox:1\n",
        "3:13",
        ["components.a.mirror", "is not valid"],
    ),
    (
        "mirror-without-tag",
        "components:\n  a:\n    mirror: ghcr.io/x/y\n",
        "3:13",
        ["neither tag nor digest"],
    ),
    (
        "unknown-source-name",
        "sources:\n  config-sync: {git: https://example.com/x.git, ref: v1}\n"
        "components:\n  a:\n    source: config-snyc\n",
        "5:13",
        ["unknown source 'config-snyc'", "did you mean 'config-sync'"],
    ),
    (
        "git-without-ref",
        "components:\n  a:\n    source: {git: https://example.com/x.git}\n",
        "3:13",
        ["components.a.source", "needs 'ref'"],
    ),
    (
        "bad-commit",
        "components:\n  a:\n    source: {git: https://example.com/x.git, ref: v1, commit: abc123}\n",
        "3:63",
        ["components.a.source.commit", "not a full commit id"],
    ),
    (
        "git-and-path",
        "components:\n  a:\n    source: {git: https://example.com/x.git, path: ., ref: v1}\n",
        "3:13",
        ["either 'git'", "or 'path'"],
    ),
    (
        "missing-local-dir",
        "components:\n  a:\n    source: {path: no/such/dir}\n",
        "3:20",
        ["components.a.source.path", "does not exist"],
    ),
    (
        "tag-template-field",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    tags: ['{{verison}}']\n",
        "4:12",
        ["components.a.tags[0]", "unknown template field '{verison}'", "did you mean 'version'"],
    ),
    (
        "tag-template-invalid",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    tags: ['v/{{version}}']\n",
        "4:12",
        ["does not make a valid tag"],
    ),
    (
        "concurrency-zero",
        f"concurrency: 0\ncomponents:\n  a:\n    {GOOD_SOURCE}\n",
        "1:14",
        ["concurrency", "at least 1"],
    ),
    (
        "concurrency-string",
        f"concurrency: many\ncomponents:\n  a:\n    {GOOD_SOURCE}\n",
        "1:14",
        ["expected a whole number", 'found a string ("many")'],
    ),
    (
        "cache-type",
        f"cache: {{type: s3}}\ncomponents:\n  a:\n    {GOOD_SOURCE}\n",
        "1:15",
        ["cache.type", "'s3' is not supported"],
    ),
    (
        "build-arg-mapping",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    build: {{args: {{X: {{y: 1}}}}}}\n",
        "4:23",
        ["components.a.build.args.X", "expected a string", "found a mapping"],
    ),
    (
        "unset-env",
        "registry: ${ARCHLIFT_TEST_UNSET_VARIABLE}/x\ncomponents:\n  a:\n    mirror: ghcr.io/x/y:1\n",
        "1:11",
        ["environment variable 'ARCHLIFT_TEST_UNSET_VARIABLE' is not set"],
    ),
    (
        "bad-component-name",
        "components:\n  Hello World:\n    mirror: ghcr.io/x/y:1\n",
        "3:5",
        ["component name 'Hello World' is not valid"],
    ),
    (
        "mirror-with-build",
        "components:\n  a:\n    mirror: ghcr.io/x/y:1\n    build: {target: x}\n",
        "4:12",
        ["components.a.build", "takes no 'build'"],
    ),
    (
        "bad-context",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    build: {{contexts: {{golang: 'golang:1.22'}}}}\n",
        "4:32",
        ["components.a.build.contexts.golang", "is not a build context"],
    ),
    (
        "same-image-twice",
        "components:\n  a:\n    mirror: ghcr.io/x/y:1\n    image: shared\n"
        "  b:\n    mirror: ghcr.io/x/z:1\n    image: shared\n",
        "6:5",
        ["publish the same image"],
    ),
    (
        "bad-registry",
        "registry: acme\ncomponents:\n  a:\n    mirror: ghcr.io/x/y:1\n",
        "1:11",
        ["does not start with a registry host"],
    ),
    (
        "unsupported-version",
        "archlift: 2\ncomponents:\n  a:\n    mirror: ghcr.io/x/y:1\n",
        "1:11",
        ["format version 2 is not supported"],
    ),
    (
        "missing-templates-dir",
        "components:\n  a:\n    mirror: ghcr.io/x/y:1\nmanifests:\n  templates: nowhere/\n",
        "5:14",
        ["manifests.templates", "does not exist"],
    ),
    (
        "binaries-unknown-key",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    binaries: {{alow: [/usr/bin/qemu-*]}}\n",
        "4:16",
        ["components.a.binaries.alow", "unknown key 'alow'", "did you mean 'allow'"],
    ),
    (
        "binaries-allow-without-reason",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    binaries:\n      allow: [/usr/bin/qemu-*]\n",
        "5:7",
        ["components.a.binaries", "binaries.allow needs a reason", 'reason: "..."'],
    ),
    (
        "binaries-relative-pattern",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    binaries: {{allow: [usr/bin/qemu-*], reason: emulators}}\n",
        "4:24",
        ["components.a.binaries.allow[0]", "'usr/bin/qemu-*' is not an absolute path pattern"],
    ),
    (
        "binaries-check-mode",
        "components:\n  a:\n    mirror: ghcr.io/x/y:1\n    binaries: {check: fial}\n",
        "4:23",
        ["components.a.binaries.check", "'fial' is not a check mode", "did you mean 'fail'"],
    ),
    (
        "binaries-warn-on-built",
        f"components:\n  a:\n    {GOOD_SOURCE}\n    binaries: {{check: warn}}\n",
        "4:23",
        ["components.a.binaries.check", "a mismatch always fails its build", "allow:"],
    ),
    (
        "non-string-key",
        "components:\n  [a, b]: {mirror: ghcr.io/x/y:1}\n",
        "2:3",
        ["expected a plain string key"],
    ),
]


@pytest.mark.parametrize(("name", "text", "where", "needles"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_precise_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, where: str, needles: list[str]
) -> None:
    config = tmp_path / "images.yaml"
    config.write_text(text)
    status = main(["validate", str(config)])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"{config}:{where}:" in err, err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    assert "Traceback" not in err
    assert err.startswith("archlift: invalid input: "), err


def test_at_least_twenty_distinct_bad_inputs() -> None:
    assert len({c[0] for c in CASES}) >= 20
    assert len({c[1] for c in CASES}) == len(CASES)


def test_cli_process_exits_2_without_traceback(tmp_path: Path) -> None:
    config = tmp_path / "images.yaml"
    config.write_text("components:\n  a:\n    mirror: ghcr.io/x/y:1\n    patchs: []\n")
    proc = subprocess.run(
        [sys.executable, "-m", "archlift", "validate", str(config)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"{config}:4:5: components.a.patchs: unknown key 'patchs'" in proc.stderr
    assert proc.stdout == ""


def test_missing_file_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_good_file_validates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "patches" / "a").mkdir(parents=True)
    (tmp_path / "patches" / "a" / "0002-b.patch").write_text("x")
    (tmp_path / "patches" / "a" / "0001-a.patch").write_text("x")
    config = tmp_path / "images.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            registry: ghcr.io/acme
            components:
              a:
                {GOOD_SOURCE}
              m:
                mirror: registry.k8s.io/git-sync/git-sync:v4.2.3
            """
        )
    )
    assert main(["validate", str(config)]) == 0
    assert "valid (1 to build, 1 to mirror" in capsys.readouterr().out
