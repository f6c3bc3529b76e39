"""Bad input caught before any job runs, each as one message naming the file or key and the fix:
YAML syntax errors with their line, schema errors with their key path (not the whole schema),
config files that expect to be merged with the default, data files that are not there, SLURM
profile placeholders left in, and damaged outputs of an earlier run that Snakemake would keep.

No torch, pandas or numpy (Snakemake imports it while building the DAG): stdlib, yaml, and
Snakemake's own schema validation.

    python -m soft_tokens.validation my.yaml   # check a config file as the workflow would
"""

import difflib
import json
import re
import struct
import sys
import zipfile
from pathlib import Path

import yaml
from snakemake.utils import update_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A config (or profile, or earlier output) the workflow cannot run with; the message says why and what to do."""


def read_yaml(path) -> dict:
    """The mapping in YAML file `path`; a syntax error names the file, line and column."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(f"{path}, line {mark.line + 1}, column {mark.column + 1}: not valid YAML ({err.problem}); "
                          "fix it there (indent with spaces, not tabs; quote a value that holds ': ' or '#')") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: holds {type(data).__name__}, not a mapping of keys (workdir, models, ...)")
    return data


def with_base(config: dict, source: str, seen: tuple = ()) -> dict:
    """The config a file means when it starts with `base: <file>`: that file's keys (itself resolved the
    same way), with this one's laid over them as Snakemake lays `--config` over a file. A relative
    `base` is read from the repository root, so `base: config/config.yaml` means the embedded default
    wherever the file lives. A derived config needs its own `workdir`: one sharing its base's would
    overwrite the base run's results."""
    if "base" not in config:
        return config
    name = config["base"]
    if not isinstance(name, str):
        raise ConfigError(f"{source}: base: {name!r} is not a file name; write e.g. `base: config/config.yaml`")
    path = Path(name) if Path(name).is_absolute() else ROOT / name
    if not path.is_file():
        raise ConfigError(f"{source}: base: {name} does not exist (looked for {path}; a relative base is read from "
                          f"the repository root {ROOT}); name a config file there, e.g. `base: config/config.yaml`")
    if path.resolve() in seen:
        raise ConfigError(f"{source}: base: {name} leads back to itself ({' -> '.join(map(str, seen))}); "
                          "let one of them stand alone")
    parent = with_base(read_yaml(path), str(path), (*seen, path.resolve()))
    own = {key: value for key, value in config.items() if key != "base"}
    if own.get("workdir", parent.get("workdir")) == parent.get("workdir"):
        raise ConfigError(f"{source}: takes its base's workdir ({parent.get('workdir')!r}, from {name}), so its "
                          "outputs would overwrite the base run's; give it its own, e.g. `workdir: runs/<name>`")
    update_config(parent, own)  # mappings merge key by key; a list or a number replaces
    return parent


def schema_types(node: dict, schema: dict) -> set:
    """The JSON types a schema node admits, through `$ref`, `anyOf` and `oneOf`."""
    node = resolve_ref(node, schema)
    kinds = node.get("type", [])
    found = {kinds} if isinstance(kinds, str) else set(kinds)
    for part in node.get("anyOf", []) + node.get("oneOf", []):
        found |= schema_types(part, schema)
    return found


def resolve_ref(node: dict, schema: dict) -> dict:
    """The block a `{$ref: "#/$defs/<block>"}` node points at (the node itself when it has no $ref)."""
    if "$ref" not in node:
        return node
    block = schema
    for name in node["$ref"].removeprefix("#/").split("/"):
        block = block[name]
    return block


def typed(value, node: dict, schema: dict):
    """`value` with each string leaf the schema types as a number, boolean or null parsed as YAML would
    parse it in a config file. Snakemake reads a nested `--config` value (`hrpo={steps: 40}`) with
    YAML's base loader, which leaves every leaf a string."""
    node = resolve_ref(node, schema)
    if isinstance(value, dict):
        properties = object_properties(node, schema)
        extra = node.get("additionalProperties")
        return {key: typed(item, properties.get(key, extra if isinstance(extra, dict) else {}), schema)
                for key, item in value.items()}
    if isinstance(value, list):
        return [typed(item, node.get("items", {}), schema) for item in value]
    kinds = schema_types(node, schema)
    if isinstance(value, str) and kinds & {"integer", "number", "boolean", "null"}:
        parsed = yaml.safe_load(value)
        fits = {"integer": int, "number": (int, float), "boolean": bool, "null": type(None)}
        if any(isinstance(parsed, fits[kind]) and (kind == "boolean" or not isinstance(parsed, bool))
               for kind in kinds & fits.keys()):
            return parsed
    return value


def typed_overrides(overrides: dict) -> dict:
    """`--config` values typed by the schema (see `typed`)."""
    schema = read_yaml(SCHEMA)
    return typed(overrides, schema, schema)


def key_path(parts) -> str:
    """`cramming.lengths[0]` from the path jsonschema gives ("cramming", "lengths", 0)."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "the top level"


def object_properties(node: dict, schema: dict | None = None) -> dict:
    """The keys an object of the schema may hold: its own properties, then those of the blocks it
    includes (`allOf: [{$ref: "#/$defs/<block>"}]`, as the LoRA keys are)."""
    schema = read_yaml(SCHEMA) if schema is None else schema
    properties = dict(node.get("properties", {}))
    for part in (part for part in node.get("allOf", []) if "$ref" in part):
        properties.update(object_properties(resolve_ref(part, schema), schema))
    return properties


def explain(error, source: str) -> str:
    """One message for a jsonschema ValidationError of the config read from `source`."""
    where = key_path(error.absolute_path)
    if error.validator in ("additionalProperties", "unevaluatedProperties"):
        allowed = list(object_properties(error.schema))
        unknown = [k for k in error.instance if k not in allowed]
        hints = [f"'{k}' -> did you mean '{close[0]}'?" for k in unknown
                 if (close := difflib.get_close_matches(k, allowed, n=1))]
        return (f"{source}: unknown key(s) {unknown} under {where}" + (f" ({'; '.join(hints)})" if hints else "")
                + f"; the keys allowed there are {allowed} (config/README.md describes each)")
    if error.validator == "required" and not error.absolute_path:
        missing = [k for k in error.validator_value if k not in error.instance]
        return (f"{source} lacks the required top-level key(s) {missing}. A config given with --configfile is used "
                f"alone unless it names a base: start it with `base: config/config.yaml` (and its own `workdir:`) "
                "to take every key it does not set from the default, or change single keys of the default with "
                "--config, e.g. --config seed=7 'hrpo={steps: 40}'")
    return f"{source}: {where}: {error.message} (config/README.md describes the key)"


def validate(config: dict, source: str) -> None:
    """Check `config` against the schema, filling in defaults (as Snakemake's validate does), and
    raise one ConfigError naming the key instead of Snakemake's dump of the whole schema."""
    import jsonschema
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate as snakemake_validate

    try:
        snakemake_validate(config, str(SCHEMA))
    except WorkflowError as err:
        if not isinstance(err.__context__, jsonschema.ValidationError):
            raise
        raise ConfigError(explain(err.__context__, source)) from None


def check_data_files(config: dict, base: Path) -> None:
    """Every `data_files` must exist; each is made absolute (resolved from `base`, where Snakemake
    was started) so jobs running in the config's workdir find it too."""
    for section in ("corpora", "reasoning"):
        for name, spec in config.get(section, {}).items():
            if spec.get("data_files"):
                path = (base / spec["data_files"]).resolve()
                key = f"{section}.{name}.data_files"
                if not path.is_file():
                    raise ConfigError(f"{key}: {spec['data_files']} does not exist (looked for {path}: a relative "
                                      f"path is read from {base}, where Snakemake runs); point it at a .parquet, "
                                      ".json or .jsonl file")
                if path.suffix == ".parquet" and (reason := damage(path)):
                    raise ConfigError(f"{key}: {path} is not a readable parquet file ({reason}); write it again, e.g. "
                                      "with pandas' DataFrame.to_parquet")
                spec["data_files"] = str(path)


PLACEHOLDER = re.compile(r"<your-[\w-]+>")


def check_placeholders(resources: dict[str, object], profile: str) -> None:
    """Resource values (by profile key) must not be the profile's `<your-...>` placeholders."""
    left = {key: value for key, value in resources.items() if PLACEHOLDER.search(str(value))}
    if left:
        listed = ", ".join(f"{key}: {value}" for key, value in left.items())
        raise ConfigError(f"{profile} still holds placeholder(s) ({listed}); replace them with your cluster's "
                          "partition (`sinfo -s` lists them) and account (`sacctmgr show assoc user=$USER "
                          "format=account`), or pass --default-resources slurm_partition=NAME slurm_account=NAME "
                          "runtime=60 mem_mb=8000")


def damage(path: Path) -> str | None:
    """Why the parquet, safetensors or torch file at `path` is unreadable (truncated, say), or None.
    Reads only the few bytes that frame each format: cheap enough to run over every output."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if path.suffix == ".parquet":
            head = f.read(4)
            f.seek(max(size - 8, 0))
            tail = f.read(8)
            if size < 12 or head != b"PAR1" or tail[4:] != b"PAR1":
                return "no parquet header or footer"
            if struct.unpack("<I", tail[:4])[0] > size - 12:
                return "footer longer than the file"
        elif path.suffix == ".safetensors":
            if size < 8:
                return "shorter than a safetensors header"
            n = struct.unpack("<Q", f.read(8))[0]
            try:
                header = json.loads(f.read(n)) if n <= size - 8 else None
            except ValueError:
                header = None
            if header is None:
                return "header cut off or not JSON"
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
            if size != 8 + n + end:
                return f"{size} bytes where the header promises {8 + n + end}"
        elif path.suffix == ".pt" and not zipfile.is_zipfile(f):
            return "not a complete torch checkpoint"
    return None


def removal_target(rel: Path, produced) -> Path:
    """What to remove so that a damaged file (relative to the run folder) is made again: the nearest
    output holding it (itself or a folder output), else the half-done work folder (`*.partial`) of a
    job, else the file itself. `produced(path)` says whether some rule writes `path`."""
    for candidate in (rel, *rel.parents[:-1]):
        if produced(str(candidate)) or candidate.name.endswith(".partial"):
            return candidate
    return rel


def damaged_outputs(run_dir: Path, produced) -> dict[str, str]:
    """Damaged files among a run's resources/ and results/, as {what to remove: why}. Temporary files
    and folders (`.<name>.tmp`, being written or left by a kill, and cleared by the next write) are
    not looked at."""
    found = {}
    for folder in ("resources", "results"):
        for path in sorted((run_dir / folder).rglob("*")):
            rel = path.relative_to(run_dir)
            if path.suffix in (".parquet", ".safetensors", ".pt") and path.is_file() and \
                    not any(part.startswith(".") for part in rel.parts):
                if reason := damage(path):
                    found.setdefault(str(removal_target(rel, produced)), f"{rel}: {reason}")
    return found


def check_outputs(run_dir: Path, produced) -> None:
    """Snakemake keeps an output that exists, even a truncated one, and the job reading it fails with
    a bare parser error; name such files instead, with the command that has them made again."""
    found = damaged_outputs(run_dir, produced)
    if found:
        listed = "\n".join(f"  {reason}" for reason in found.values())
        raise ConfigError(f"damaged files from an earlier run in {run_dir} (a killed copy or a full disk?):\n{listed}\n"
                          f"Remove them (a half-done job's .partial folder starts that job over) and rerun; Snakemake "
                          f"makes them again:\n  cd {run_dir} && rm -r " + " ".join(found))


def check(config: dict, source: str, base: Path) -> None:
    """Every check of a config the workflow makes before its DAG: the schema (defaults filled in), the
    names and grids (soft_tokens.workflow.check_config), and the data files (made absolute from `base`)."""
    from soft_tokens.workflow import check_config

    validate(config, source)
    check_config(config)
    check_data_files(config, base)


def main(argv=None) -> int:
    """Check config files as the workflow would, before running it."""
    paths = sys.argv[1:] if argv is None else argv
    for path in paths or [DEFAULT_CONFIG]:
        try:
            check(with_base(read_yaml(path), str(path)), str(path), Path.cwd())
        except ValueError as err:
            print(err, file=sys.stderr)
            return 1
        print(f"{path}: valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
