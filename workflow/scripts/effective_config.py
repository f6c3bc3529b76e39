"""Snakemake entry point: results/config.yaml, the config this run used after validation and defaults."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import yaml

Path(snakemake.output[0]).write_text(yaml.safe_dump(snakemake.params.config, sort_keys=False))
