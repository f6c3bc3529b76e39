"""Snakemake entry point: one method's stages on one dataset with one seed (resumes after its last finished stage)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.coconut.spec import TrainCoconut
from soft_tokens.latent.coconut.training import train_method

torch.set_num_threads(snakemake.threads)
train_method(
    Path(snakemake.input.model),
    Path(snakemake.input.cot) if "cot" in snakemake.input.keys() else None,
    read_reasoning(snakemake.input.train),
    read_reasoning(snakemake.input.val),
    job_settings(snakemake, TrainCoconut),
    Path(snakemake.output[0]),
)
