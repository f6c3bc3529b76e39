"""Where a run's numbers come from: the date, the commit (`-dirty` with uncommitted changes), the config
file(s) and the versions of the packages that computed them. The report's title block, docs/results.md,
results/provenance.yaml and every summary parquet's metadata carry the same record.

Torch-free: versions are read from the installed distributions, not by importing them.
"""

import os
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Set by rules/common.smk for every job: the config file(s) the run was started with.
CONFIG_SOURCE = "SOFT_TOKENS_CONFIG"
PACKAGES = ("torch", "transformers", "peft", "accelerate", "datasets", "snakemake", "pandas", "scipy")


def commit() -> str:
    found = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=ROOT,
                           capture_output=True, text=True).stdout.strip()
    return found or "unknown (not a git checkout)"


def config_files() -> str:
    """The run's config file(s), inside the repository named from its root (config/smoke.yaml)."""
    given = os.environ.get(CONFIG_SOURCE)
    if given is None:
        return "unknown (run outside the workflow)"
    return " + ".join(str(Path(part).relative_to(ROOT)) if Path(part).is_relative_to(ROOT) else part
                      for part in given.split(" + "))


def versions() -> dict[str, str]:
    """Python's and each package's version ('not installed' where one is missing)."""
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def provenance() -> dict:
    """The record, as plain strings (parquet metadata and YAML take it as it is)."""
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit(),
            "config": config_files(),
            **{f"version_{name}": version for name, version in versions().items()}}


def summary_line(record: dict) -> str:
    """One line of the record for prose: config, commit, date and the main versions."""
    main = ", ".join(f"{name} {record[f'version_{name}']}" for name in ("python", "torch", "transformers"))
    return f"`{record['config']}` at commit `{record['commit']}` on {record['date']} ({main})"
