"""Snakemake entry point: train the pooler of one model x dataset x W (resumes after its last epoch)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import resumable_output
from soft_tokens.core.job_settings import job_settings
from soft_tokens.latent.pooler.spec import TrainPooler
from soft_tokens.latent.pooler.training import save_pooler, setup, train_pooler

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, TrainPooler)
main, tokenizer, ids, examples, pooler = setup(Path(snakemake.input.main), Path(snakemake.input.train), settings)
inputs = {"main": snakemake.input.main, "train": snakemake.input.train}
curve = TrainingCurve(Path(snakemake.output.curve), {"model": settings.model, "dataset": settings.dataset,
                                                     "window": int(settings.window)})
with resumable_output(snakemake.output.pooler, settings.params(), inputs) as (checkpoint, run):
    train_pooler(main, pooler, examples, ids, settings, checkpoint, run, curve)
    save_pooler(pooler, Path(snakemake.output.pooler), int(settings.window))
