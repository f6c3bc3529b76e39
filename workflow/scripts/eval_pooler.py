"""Snakemake entry point: every pooler method at one W, on the test problems (and the trained pooler on
its training problems too)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import copy

import torch

from soft_tokens.core.io import write_parquet
from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.pooler.spec import EvalPooler
from soft_tokens.latent.pooler.training import evaluate_window, load_pooler, setup

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, EvalPooler)
main, tokenizer, ids, _, untrained = setup(Path(snakemake.input.main), Path(snakemake.input.train), settings)
trained = load_pooler(Path(snakemake.input.pooler), copy.deepcopy(untrained), settings.model)
splits = {"test": read_reasoning(snakemake.input.test), "train": read_reasoning(snakemake.input.train)}
results = evaluate_window(main, tokenizer, ids, trained, untrained.eval(), splits, settings)
write_parquet(results.assign(model=settings.model, dataset=settings.dataset), snakemake.output[0])
