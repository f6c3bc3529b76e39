"""Snakemake entry point: per-job means and per-model capacity from every cram parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

from soft_tokens.report import read_samples, summarize, capacity_table
from soft_tokens.io import write_parquet

samples = read_samples(snakemake.input)
summary = summarize(samples)
write_parquet(summary, snakemake.output.summary)
write_parquet(capacity_table(summary, snakemake.params.threshold), snakemake.output.capacity)
