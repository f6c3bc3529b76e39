"""config/README.md documents every config key: it is generated from config/schema.yaml, and an
undocumented key (or a README edited by hand, or a stale one) fails here."""

import re
from pathlib import Path

import pytest
import yaml

from soft_tokens.config_docs import config_docs

ROOT = Path(__file__).resolve().parents[1]
MAPS = {"models", "corpora", "reasoning", "cramming.optimizer_settings"}  # entries keyed by user-chosen names
VALUE_MAPS = {"reasoning.<name>.step_counts"}  # user-chosen keys with plain values: documented as one key


def schema():
    return yaml.safe_load((ROOT / "config" / "schema.yaml").read_text())


def documented_keys(markdown):
    """The key column of every table row: the first code span of the row."""
    return set(re.findall(r"^\| `([^`]+)`", markdown, flags=re.M))


def config_keys(node, prefix=""):
    """Dotted keys of a config; map entries become `<name>`; nothing below `overrides` entries."""
    for key, value in node.items():
        dotted = f"{prefix}{key}"
        yield dotted
        if key == "overrides":
            yield from (f"{dotted}.<name>" for _ in value)
        elif isinstance(value, dict) and dotted not in VALUE_MAPS:
            if dotted in MAPS:
                for entry in value.values():
                    yield f"{dotted}.<name>"
                    yield from config_keys(entry, f"{dotted}.<name>.")
            else:
                yield from config_keys(value, f"{dotted}.")


def test_readme_is_in_sync_with_the_schema():
    readme = (ROOT / "config" / "README.md").read_text()
    assert readme == config_docs(schema()), (
        "config/README.md is out of date with config/schema.yaml; "
        "run `python -m soft_tokens.config_docs` (from the repository root, venv active)"
    )


def test_rendering_of_a_small_schema():
    small = {
        "required": ["job"],
        "properties": {
            "job": {
                "type": "object",
                "required": ["size"],
                "properties": {
                    "size": {"type": ["integer", "null"], "default": 4, "description": "a | b"},
                    "modes": {
                        "type": "array",
                        "items": {"type": "string", "enum": ["x", "y"]},
                        "default": ["x"],
                        "description": "Modes.",
                    },
                },
            },
            "things": {
                "type": "object",
                "description": "Things by name.",
                "additionalProperties": {
                    "type": "object",
                    "properties": {"kind": {"type": "string", "default": "plain"}},
                },
            },
        },
    }
    lines = config_docs(small).splitlines()
    for line in [
        "## `job`",
        "| key | type | default | description |",
        "| `job` (required) | object |  |  |",
        "| `job.size` (required) | integer or null | `4` | a \\| b |",
        "| `job.modes` | list of string (one of `x`, `y`) | `[x]` | Modes. |",
        "## `things`",
        "| `things` | map of object |  | Things by name. |",
        "| `things.<name>` | object |  | An entry under a name of your choosing. |",
        "| `things.<name>.kind` | string | `plain` |  |",
    ]:
        assert line in lines
    assert lines.index("## `job`") < lines.index("## `things`")  # schema order
    assert config_docs(small) == config_docs(small)


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_every_config_key_is_documented(name):
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    readme = (ROOT / "config" / "README.md").read_text()
    missing = sorted(set(config_keys(config)) - documented_keys(readme))
    assert not missing, f"keys of config/{name} missing from config/README.md: {missing}"


KEYWORDS = {"$schema", "type", "default", "description", "enum", "items", "minItems", "maxItems", "uniqueItems",
            "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "properties", "additionalProperties",
            "minProperties", "required", "allOf", "anyOf", "oneOf", "if", "then", "else", "pattern", "const",
            "unevaluatedProperties", "$defs", "propertyNames"}


def test_no_description_is_cut_at_a_comma():
    """In a YAML flow mapping `{..., description: a, b}` the comma starts a new key: the description is
    cut and a stray key appears. Every schema node holds JSON-schema keywords only."""
    def stray(node, path):
        if isinstance(node, dict):
            if "type" in node or "description" in node:
                yield from (f"{path}: {key!r}" for key in set(node) - KEYWORDS)
            for key, value in node.items():
                yield from stray(value, f"{path}.{key}")

    assert list(stray(schema(), "schema")) == []
