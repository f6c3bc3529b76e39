"""Snakemake entry point: HRPO evaluations summarised per method, the training figures and the section."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd

from soft_tokens.core.io import read_parquet, write_parquet
from soft_tokens.latent.hrpo.report import FIGURES, figures, section, summarize
from soft_tokens.report.document import write_section
from soft_tokens.report.provenance import provenance

RECORD = provenance()  # date, commit, config and versions, in every summary's metadata

summary = summarize(pd.concat([read_parquet(p) for p in snakemake.input.evals], ignore_index=True))
histories = pd.concat([read_parquet(p) for p in snakemake.input.histories], ignore_index=True)
write_parquet(summary, snakemake.output.summary, RECORD)
figures(histories, {name: [snakemake.output[name], snakemake.output[f"{name}_pdf"]] for name in FIGURES})
write_section(section(summary, snakemake.params.protocol), snakemake.output, RECORD)
