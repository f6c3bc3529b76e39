"""Snakemake entry point: docs/results.md, what the run shows in Markdown, from its report sections."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import yaml

from soft_tokens.report.digest import digest

# The record render_report wrote with report.tex, so that both name the same run.
record = yaml.safe_load(Path(snakemake.input.provenance).read_text())
Path(snakemake.output[0]).write_text(digest([Path(p) for p in snakemake.input.sections], record))
