"""Snakemake entry point of the two cramming rules: `cram` (one job at a fixed length) and
`capacity` (one length search). Both resume after a kill: a job from its finished samples, a
search from its finished stages."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.job_settings import job_settings
from soft_tokens.cramming.capacity import run_search
from soft_tokens.cramming.job import run_job
from soft_tokens.cramming.spec import JOBS

torch.set_num_threads(snakemake.threads)
run = {"cram": run_job, "capacity": run_search}[snakemake.rule]
run(
    Path(snakemake.input.model),
    Path(snakemake.input.corpus),
    Path(snakemake.output.parquet),
    Path(snakemake.output.vectors),
    job_settings(snakemake, JOBS[snakemake.rule]),
)
