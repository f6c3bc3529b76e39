"""Snakemake entry point: one cramming job (resumes from its .partial folder after a kill)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

import torch

from soft_tokens.cramming.job import run_job

torch.set_num_threads(snakemake.threads)
run_job(
    Path(snakemake.input.model),
    Path(snakemake.input.corpus),
    Path(snakemake.output.parquet),
    Path(snakemake.output.vectors),
    dict(snakemake.params.job),
)
