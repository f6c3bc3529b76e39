"""Snakemake entry point: the pooler track's methods without a pooler (full reasoning, none, plain CoT)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.io import write_parquet
from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.pooler.spec import EvalPoolerBaselines
from soft_tokens.latent.pooler.training import evaluate_baselines, load_main, main_dir

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, EvalPoolerBaselines)
main, tokenizer, ids = load_main(main_dir(Path(snakemake.input.main), settings), settings)
results = evaluate_baselines(main, tokenizer, ids, read_reasoning(snakemake.input.test), settings)
write_parquet(results.assign(model=settings.model, dataset=settings.dataset), snakemake.output[0])
