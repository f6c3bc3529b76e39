"""Snakemake entry point: test accuracy and generated tokens of every stage of one method and seed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.io import write_parquet
from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.coconut.spec import EvalCoconut
from soft_tokens.latent.coconut.training import evaluate_method

torch.set_num_threads(snakemake.threads)
results = evaluate_method(Path(snakemake.input.run), read_reasoning(snakemake.input.test),
                          job_settings(snakemake, EvalCoconut))
write_parquet(results, snakemake.output[0])
