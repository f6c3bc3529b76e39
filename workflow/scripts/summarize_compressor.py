"""Snakemake entry point: compressor evaluations summarised per condition, the CE figure and the section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd

from soft_tokens.compression.report import (compressor_section, plot_compressor_ce, plot_compressor_training,
                                            plot_estar_optimisation, summarize_compressor)
from soft_tokens.core.io import read_parquet, write_parquet
from soft_tokens.report.document import write_section
from soft_tokens.report.provenance import provenance

RECORD = provenance()  # date, commit, config and versions, in every summary's metadata

summary = summarize_compressor(pd.concat([read_parquet(p) for p in snakemake.input.evals], ignore_index=True))
write_parquet(summary, snakemake.output.summary, RECORD)
plot_compressor_ce(summary, [snakemake.output.compressor_ce, snakemake.output.compressor_ce_pdf])
plot_compressor_training(pd.concat([read_parquet(p) for p in snakemake.input.curves], ignore_index=True),
                         [snakemake.output.compressor_training, snakemake.output.compressor_training_pdf])
plot_estar_optimisation(pd.concat([read_parquet(p) for p in snakemake.input.estar], ignore_index=True),
                        [snakemake.output.estar_optimisation, snakemake.output.estar_optimisation_pdf])
write_section(compressor_section(summary, snakemake.params.protocol), snakemake.output, RECORD)
