"""Snakemake entry point: compressor evaluations summarised per condition, and the CE figure."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.io import write_parquet
from soft_tokens.report import plot_compressor_ce, summarize_compressor

summary = summarize_compressor(pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True))
write_parquet(summary, snakemake.output.summary)
plot_compressor_ce(summary, [snakemake.output.figure, snakemake.output.figure_pdf])
