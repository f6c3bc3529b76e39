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
import os
import re
import struct
import sys
import zipfile
from pathlib import Path

import yaml
from snakemake.utils import update_config

from soft_tokens.core.checksums import (CHECKSUM_SUFFIX, CHECKSUMS, atomic_write_text, checksum_damage, checksum_path,
                                        sha256)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "config" / "schema.yaml"
DEFAULT_CONFIG = ROOT / "config" / "config.yaml"


class ConfigError(ValueError):
    """A config (or profile, or earlier output) the workflow cannot run with; the message says why and what to do."""


def read_yaml(path) -> dict:
    """The mapping in YAML file `path`; a syntax error names the file, line and column."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {'is a folder' if path.is_dir() else 'does not exist'}; name a config file "
                          "(config/config.yaml, config/smoke.yaml, ...)")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not a text file (byte {err.start} is not UTF-8); name a YAML config file") from None
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
    if "propertyNames" in error.schema_path:
        return (f"{source}: {where}: the name {error.instance!r} cannot be used. "
                f"{resolve_ref({'$ref': '#/$defs/name'}, read_yaml(SCHEMA))['description']}; rename it")
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


def check_data_files(config: dict, base: Path, run_dir: Path) -> None:
    """Every `data_files` must exist; each is rewritten relative to the run folder `run_dir`, where jobs
    run, so that they find it, and so that moving the repository together with its run folders
    changes no job's parameters (an absolute path would, and rerun the job)."""
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
                spec["data_files"] = os.path.relpath(path, Path(run_dir).resolve())


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


def check_writable(run_dir: Path) -> None:
    """The run folder (or, before its first run, the folder that will hold it) and every folder under
    it that jobs write must be writable; else Snakemake stops in its own traceback, or a job after hours."""
    run_dir = Path(run_dir)
    folders = [next(p for p in (run_dir, *run_dir.parents) if p.exists())]
    for name in ("resources", "results", "logs", ".snakemake"):
        if (run_dir / name).is_dir():
            folders += [run_dir / name, *(p for p in (run_dir / name).rglob("*") if p.is_dir())]
    blocked = [str(p) for p in folders if not os.access(p, os.W_OK)]
    if blocked:
        raise ConfigError(f"{len(blocked)} folder(s) of the run cannot be written (read-only; {', '.join(blocked[:3])}"
                          f"{', ...' if len(blocked) > 3 else ''}), so its jobs cannot write their outputs. Make them "
                          f"writable (chmod -R u+w {run_dir}), or copy the run to a folder you can write and run there")


def damage(path: Path) -> str | None:
    """Why the parquet, safetensors, torch or JSON file at `path` is unreadable (truncated, say), or None.
    Reads only the few bytes that frame each format (a JSON file whole: they are small): cheap enough
    to run over every output."""
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
        elif path.suffix == ".json":
            try:
                json.loads(f.read())
            except ValueError as err:
                return f"not readable JSON ({err})"
    return None


def repair(rel: Path, run_dir: Path, produced) -> str:
    """The command (run in the run folder) that has the damaged file or folder `rel` made again at the
    least cost. What is removed is the unit holding it that was written whole (a folder with its
    checksums, else the file). Inside a half-done job's work folder (`*.partial`) only that piece goes
    (a cramming sample, a Coconut stage; its fingerprint.json damaged, the folder); inside a finished
    output that a job resumes into (a produced folder with its fingerprint.json), the output goes back to
    being half-done work without that piece, so the job redoes only it; else the output holding it goes.
    `produced(path)` says whether some rule writes `path`."""
    unit = next((p for p in (rel, *rel.parents[:-1]) if (run_dir / p / CHECKSUMS).is_file()), rel)
    for holder in (unit, *unit.parents[:-1]):
        if holder.name.endswith(".partial") and holder != unit:
            if unit.parent == holder and unit.name != "fingerprint.json" and not (run_dir / unit).is_dir():
                return f"rm -f {holder}/{unit.name.split('.')[0]}.*"  # the piece, its siblings and checksums
            return f"rm -r {holder if unit.name == 'fingerprint.json' else unit}"
        if produced(str(holder)):
            if holder != unit and (run_dir / holder / "fingerprint.json").is_file():
                partial = holder.with_name(holder.name + ".partial")
                return f"mv {holder} {partial} && rm -r {partial / unit.relative_to(holder)}"
            return f"rm -r {holder}"
    return f"rm -r {unit}"


def cached_hasher(cache: Path):
    """sha256 of a file, remembered in `cache` by path, size and modification time, so that the scan
    before every run hashes only what changed since the last (loaders always hash what they read)."""
    try:
        known = json.loads(cache.read_text())
    except (OSError, ValueError):
        known = {}

    used = {}

    def hasher(path: Path) -> str:
        stat = path.stat()
        key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
        used[key] = known[key] if known.get(key, [None])[:2] == stamp else [*stamp, sha256(path)]
        return used[key][2]

    def save() -> None:
        """Keep what this scan hashed, so files gone since drop out."""
        if used != known and cache.parent.is_dir():
            atomic_write_text(cache, json.dumps(used))

    hasher.save = save
    return hasher


def damaged_outputs(run_dir: Path, produced, hasher=sha256) -> dict[str, str]:
    """Damaged files and folders among a run's resources/ and results/, as {command that rebuilds: why}:
    a file cut short (its format's framing) or changed after it was written (its recorded checksums).
    Temporary files and folders (`.<name>.tmp`, being written or left by a kill, and cleared by the
    next write) and lock files are not looked at."""
    found, whole = {}, set()  # whole: folders checked by their checksums, file by file
    for folder in ("resources", "results"):
        for path in sorted((run_dir / folder).rglob("*")):  # a folder before what it holds
            rel = path.relative_to(run_dir)
            if any(part.startswith(".") for part in rel.parts) or path.name.endswith(CHECKSUM_SUFFIX) or \
                    whole & set(rel.parents):
                continue
            if (path / CHECKSUMS).is_file():
                whole.add(rel)
                reason = checksum_damage(path, hasher)
            elif path.is_dir():
                continue
            else:  # by its checksum if it has one (which covers its framing), else by its framing
                reason = checksum_damage(path, hasher) if checksum_path(path).is_file() else damage(path)
            if reason:
                found.setdefault(repair(rel, run_dir, produced), f"{rel}: {reason}")
    return found


def check_outputs(run_dir: Path, produced) -> None:
    """Snakemake keeps an output that exists, even a truncated or altered one, and the job reading it
    fails with a bare parser error or, worse, reads altered numbers; name such files instead, with
    the commands that have them made again."""
    hasher = cached_hasher(run_dir / ".snakemake" / "soft-tokens-checksums.json")
    found = damaged_outputs(run_dir, produced, hasher)
    hasher.save()
    if found:
        listed = "\n".join(f"  {reason}" for reason in found.values())
        commands = "\n".join(f"  {command}" for command in found)
        raise ConfigError(f"damaged files from an earlier run in {run_dir} (a killed copy, a full disk, or bytes "
                          f"changed since they were written):\n{listed}\nRemove them and rerun; Snakemake makes them "
                          f"again, and a job whose half-done work lost a piece redoes only that piece:\n  cd {run_dir}"
                          f"\n{commands}")


def check(config: dict, source: str, base: Path, run_dir: Path | None = None) -> None:
    """Every check of a config the workflow makes before its DAG: the schema (defaults filled in), the
    names and grids (soft_tokens.workflow.check_config), and the data files (read from `base`, named
    relative to `run_dir`, the config's workdir under `base` unless given)."""
    from soft_tokens.workflow import check_config

    validate(config, source)
    check_config(config)
    check_data_files(config, base, base / config["workdir"] if run_dir is None else run_dir)


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
