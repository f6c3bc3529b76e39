"""Snakemake entry point: Coconut evaluations summarised per method and stage, and the stage figure."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.io import write_parquet
from soft_tokens.report import plot_coconut_stages, summarize_coconut

summary = summarize_coconut(pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True))
write_parquet(summary, snakemake.output.summary)
plot_coconut_stages(summary, [snakemake.output.figure, snakemake.output.figure_pdf])
