"""Snakemake entry point: results/report.tex, the configured tracks' sections in order under a title
block, and results/provenance.yaml, where they come from."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import yaml

from soft_tokens.report.document import assemble
from soft_tokens.report.provenance import provenance

record = provenance()
Path(snakemake.output.document).write_text(assemble([Path(p) for p in snakemake.input], record))
Path(snakemake.output.provenance).write_text(yaml.safe_dump(record, sort_keys=False))
