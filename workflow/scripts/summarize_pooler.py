"""Snakemake entry point: pooler evaluations summarised per method and W, the figure and the section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd

from soft_tokens.core.io import read_parquet, write_parquet
from soft_tokens.latent.pooler.report import FIGURES, figures, section, summarize
from soft_tokens.report.document import write_section
from soft_tokens.report.provenance import provenance

RECORD = provenance()  # date, commit, config and versions, in every summary's metadata

evals = pd.concat([read_parquet(p) for p in [*snakemake.input.windows, *snakemake.input.baselines]],
                  ignore_index=True)
summary = summarize(evals)
write_parquet(summary, snakemake.output.summary, RECORD)
curves = pd.concat([read_parquet(p) for p in snakemake.input.curves], ignore_index=True)
figures(summary, curves, {name: [snakemake.output[name], snakemake.output[f"{name}_pdf"]] for name in FIGURES})
write_section(section(summary, snakemake.params.protocol), snakemake.output, RECORD)
