"""The docker/buildx surface through python-on-whales, against the real engine and builder."""

from __future__ import annotations

import pytest
from support.registry import LocalRegistry

from archlift import buildx
from archlift.errors import BuildError
from archlift.localenv import seed_busybox


def test_the_builder_is_inspected_with_its_platforms_and_versions(docker_ready: None) -> None:
    found = buildx.preflight("", ["linux/amd64", "linux/arm64"])
    assert {"linux/amd64", "linux/arm64"} <= set(found.platforms)
    assert "buildx" in found.buildx and found.engine


def test_a_platform_the_builder_cannot_build_is_one_clear_error(docker_ready: None) -> None:
    with pytest.raises(BuildError) as e:
        buildx.preflight("", ["linux/arm64", "linux/s390x"])
    assert "cannot build linux/s390x" in e.value.message and "linux/arm64" not in e.value.message.split(":")[0]
    assert "QEMU" in e.value.hint


def test_imagetools_lists_the_platforms_of_an_index(docker_ready: None, registry: LocalRegistry) -> None:
    ref = seed_busybox(registry.host)
    assert buildx.imagetools_platforms(str(ref)) == ["linux/amd64", "linux/arm64"]
