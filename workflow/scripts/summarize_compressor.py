"""Snakemake entry point: compressor evaluations summarised per condition, the CE figure and the section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.compression.report import compressor_section, plot_compressor_ce, summarize_compressor
from soft_tokens.core.io import write_parquet

summary = summarize_compressor(pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True))
write_parquet(summary, snakemake.output.summary)
plot_compressor_ce(summary, [snakemake.output.compressor_ce, snakemake.output.compressor_ce_pdf])
Path(snakemake.output.section).write_text(compressor_section(summary, snakemake.params.protocol))
