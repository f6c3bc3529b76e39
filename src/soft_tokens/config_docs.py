"""Render config/README.md, the reference of every config key, from config/schema.yaml.

The schema is the one place where keys, types, defaults and descriptions are written down (the
workflow validates against it), so the reference is generated from it rather than written by hand;
tests/test_config_docs.py fails when the two drift apart. Only the stdlib and yaml are used, so
the docs can be rebuilt without torch or pandas installed.

    python -m soft_tokens.config_docs          # rewrite config/README.md
    python -m soft_tokens.config_docs --check  # exit 1 when it is out of date
"""

import json
import sys
from pathlib import Path

import yaml

from soft_tokens.validation import object_properties

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema.yaml"
README = ROOT / "config" / "README.md"
COMMAND = "python -m soft_tokens.config_docs"

INTRO = f"""\
# Configuration

<!-- Generated from schema.yaml by `{COMMAND}`; edit the schema, not this file. -->

These configs ship with the workflow:

- `config/config.yaml`: the embedded CPU default, run by `make results` (plain `snakemake`).
- `config/smoke.yaml`: a tiny random model, used by the tests and CI (`make smoke`).
- `config/paper.yaml`: the paper's GPU grid, for SLURM (`--configfile config/paper.yaml`
  with `--workflow-profile profiles/slurm`).
- `config/rehearsal.yaml`: `paper.yaml` at tiny scale on offline data (`make rehearsal`).
- `config/hrpo40.yaml`: the default with HRPO at 40 steps, three lines on `base: config/config.yaml`.

A file given with `--configfile` replaces the default rather than merging into it, unless it
names a base: `base: config/config.yaml` (read from the repository root) takes every key the file
does not set from that config, mappings merged key by key, lists and values replaced. Its `workdir`
keeps its outputs (resources/, results/, logs/) apart from the other configs', and a file on a
base must set its own. Single keys change on the command line too, nested ones typed by the schema:
`--config seed=7 'hrpo={{steps: 40}}'`. Snakemake's own parser takes no dotted keys: write
`'cramming={{lengths: [4]}}'`, not `cramming.lengths=[4]` (which it rejects before this workflow runs).

The workflow validates the config against `config/schema.yaml` before any job runs, and fills in
the defaults below for keys left out; a dry run (`snakemake -n --configfile my.yaml`) checks a new
config without running anything. `python -m soft_tokens.validation my.yaml` makes the same checks
without the workflow, and names the line of a YAML syntax error, which Snakemake's own reading of
a `--configfile` does not.

In key names, `<name>` stands for a name of your choosing (an entry of `models`, `corpora`,
`reasoning` or `overrides`) and `[]` for each item of a list.
"""


def _value(value) -> str:
    """A default written compactly: JSON-like, but strings without quotes when they are plain."""
    if isinstance(value, str):
        quoted = json.dumps(value)
        return quoted if not value or quoted[1:-1] != value or value.strip() != value else value
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in value.items()) + "}"
    return json.dumps(value)


def _type(node: dict) -> str:
    """The type column: unions joined by "or", arrays as "list of ...", enum values listed."""
    if "$ref" in node:  # "#/properties/cramming/properties/lengths" -> as `cramming.lengths`
        return "as `" + ".".join(node["$ref"].split("/")[2::2]) + "`"
    kind = node.get("type", "object" if "properties" in node else "")
    kinds = kind if isinstance(kind, list) else [kind]
    if kinds == ["array"]:
        text = "list of " + (_type(node.get("items", {})) or "any")
    elif kinds == ["object"] and isinstance(node.get("additionalProperties"), dict):
        text = "map of " + (_type(node["additionalProperties"]) or "any")
    else:
        text = " or ".join(kinds)
    if "enum" in node:
        text += " (one of " + ", ".join(f"`{_value(v)}`" for v in node["enum"]) + ")"
    return text


def _rows(key: str, node: dict, required: bool, schema: dict):
    """Table rows for a key and, depth first, every key below it."""
    cells = [
        f"`{key}`" + (" (required)" if required else ""),
        _type(node),
        f"`{_value(node['default'])}`" if "default" in node else "",
        " ".join(node.get("description", "").split()),
    ]
    yield "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"
    if node.get("type") == "array" and "properties" in node.get("items", {}):
        yield from _children(key + "[]", node["items"], schema)
    yield from _children(key, node, schema)


def _children(key: str, node: dict, schema: dict):
    """Rows of an object's properties (those of the blocks it includes too), then of its map entries,
    keyed `<name>`."""
    needed = set(node.get("required", []))
    for name, child in object_properties(node, schema).items():
        yield from _rows(f"{key}.{name}", child, name in needed, schema)
    entry = node.get("additionalProperties")
    if isinstance(entry, dict):
        entry = {"description": "An entry under a name of your choosing."} | entry
        yield from _rows(f"{key}.<name>", entry, False, schema)


def config_docs(schema: dict) -> str:
    """The Markdown reference: the intro, then one section and table per top-level key."""
    needed = set(schema.get("required", []))
    parts = [INTRO]
    for name, node in schema.get("properties", {}).items():
        rows = "\n".join(_rows(name, node, name in needed, schema))
        parts.append(
            f"## `{name}`\n\n| key | type | default | description |\n|---|---|---|---|\n{rows}\n"
        )
    return "\n".join(parts)


def main(argv=None) -> int:
    """Write config/README.md next to the schema; with --check, only say whether it is current."""
    argv = sys.argv[1:] if argv is None else argv
    text = config_docs(yaml.safe_load(SCHEMA.read_text()))
    if "--check" in argv:
        if README.exists() and README.read_text() == text:
            return 0
        print(f"{README.relative_to(ROOT)} is out of date; run `{COMMAND}`.", file=sys.stderr)
        return 1
    README.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
