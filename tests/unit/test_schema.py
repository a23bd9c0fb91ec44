"""The JSON Schema of images.yaml: generated from the model, shipped in the package, named by every
images.yaml, and in agreement with the loader on the examples and on what it refuses."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from archlift.cli import main
from archlift.config.model import load_config
from archlift.config.schema import schema, schema_json
from archlift.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "src" / "archlift" / "data" / "images.schema.json"
CONFIGS = [ROOT / "images.yaml", *sorted((ROOT / "examples").glob("*/images.yaml"))]
_LINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def validator() -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema())
    return jsonschema.Draft202012Validator(schema())


def test_the_shipped_file_is_what_the_model_makes(capsys: pytest.CaptureFixture[str]) -> None:
    assert SHIPPED.read_text() == schema_json(), (
        "run: python -m archlift schema -o src/archlift/data/images.schema.json"
    )
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema()


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_images_yaml_names_the_schema_and_validates(path: Path) -> None:
    first = path.read_text().splitlines()[0]
    m = _LINE.match(first)
    assert m, f"{path}: the first line must be '# yaml-language-server: $schema=...'"
    assert (path.parent / m.group(1)).resolve() == SHIPPED
    errors = sorted(validator().iter_errors(yaml.safe_load(path.read_text())), key=str)
    assert not errors, "\n".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)


BASE: dict[str, Any] = {
    "archlift": 1,
    "registry": "registry.example/acme",
    "components": {"x": {"mirror": "busybox:1"}},
}


@pytest.mark.parametrize(
    "change",
    [
        {"registri": "typo.example"},
        {"concurrency": 0},
        {"platforms": ["linux/sparc"]},
        {"components": {"x": {"mirror": "busybox:1", "source": {"git": "https://example/x.git", "ref": "v1"}}}},
        {"components": {"x": {}}},
        {"components": {"X_bad": {"mirror": "busybox:1"}}},
        {"cache": {"type": "s3"}},
        {"sources": {"s": {"git": "https://example/x.git", "ref": "v1", "commit": "abc"}}},
        {
            "components": {
                "x": {
                    "source": {"git": "https://example/x.git", "ref": "v1"},
                    "build": {"dockerfile": "a", "dockerfile_local": "b"},
                }
            }
        },
    ],
    ids=[
        "unknown-key",
        "concurrency",
        "platform",
        "source-and-mirror",
        "neither",
        "name",
        "cache",
        "commit",
        "two-dockerfiles",
    ],
)
def test_what_the_schema_refuses_the_loader_refuses_too(change: dict[str, Any], tmp_path: Path) -> None:
    doc = {**BASE, **change}
    assert list(validator().iter_errors(doc)), f"the schema takes {change}"
    path = tmp_path / "images.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError):
        load_config(path)


def test_interpolated_values_are_taken() -> None:
    doc = {**BASE, "sources": {"s": {"git": "${GIT:-https://example/x.git}", "ref": "v1", "commit": "${PIN}"}}}
    assert not list(validator().iter_errors(doc))
