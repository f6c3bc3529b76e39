"""Snakemake entry point: all converter evaluations in one parquet, and the converter's section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd

from soft_tokens.compression.report import (converter_section, demo_intervals, plot_converter_training,
                                            summarize_converter)
from soft_tokens.core.io import read_parquet, write_parquet
from soft_tokens.report.document import write_section
from soft_tokens.report.provenance import provenance

RECORD = provenance()  # date, commit, config and versions, in every summary's metadata

converter = pd.concat([read_parquet(p) for p in snakemake.input.evals], ignore_index=True)
demo = pd.concat([read_parquet(p) for p in snakemake.input.demo], ignore_index=True)
summary, demo_summary = summarize_converter(converter), demo_intervals(demo)
write_parquet(summary, snakemake.output.summary, RECORD)
write_parquet(demo_summary, snakemake.output.demo_summary, RECORD)
plot_converter_training(pd.concat([read_parquet(p) for p in snakemake.input.curves], ignore_index=True),
                        [snakemake.output.converter_training, snakemake.output.converter_training_pdf])
write_section(converter_section(summary, demo_summary), snakemake.output, RECORD)
