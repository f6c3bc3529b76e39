"""Snakemake entry point: per-job means, capacity per search, the figures and cramming's section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

from soft_tokens.core.io import write_parquet
from soft_tokens.cramming.report import (FIGURES, capacity_table, figures, read_samples, section, seed_table,
                                        summarize)
from soft_tokens.report.document import write_section
from soft_tokens.report.provenance import provenance

RECORD = provenance()  # date, commit, config and versions, in every summary's metadata

samples = read_samples(snakemake.input.samples)
stages = read_samples(snakemake.input.capacity)
summary = summarize(samples)
capacity = capacity_table(stages)
write_parquet(summary, snakemake.output.summary, RECORD)
Path(snakemake.output.table).write_text(seed_table(summary))
write_parquet(stages, snakemake.output.stages, RECORD)
write_parquet(capacity, snakemake.output.capacity, RECORD)
figures(samples, summary, stages, {name: [snakemake.output[name], snakemake.output[f"{name}_pdf"]] for name in FIGURES})
write_section(section(summary, capacity, samples), snakemake.output, RECORD)
