"""Snakemake entry point: greedy test completions of the start model or of one trained policy."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.io import write_parquet
from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.hrpo.spec import EvalHrpo
from soft_tokens.latent.hrpo.training import build_policy, evaluate, load_policy, start_dir

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, EvalHrpo)
# The start model is the grpo policy before training: its LoRA starts at zero.
method = "grpo" if settings.policy == "start" else settings.policy
policy, tokenizer = build_policy(start_dir(Path(snakemake.input.start), settings.start), method, settings)
if settings.policy != "start":
    load_policy(Path(snakemake.input.policy), policy)
evals = evaluate(policy, tokenizer, read_reasoning(snakemake.input.test), settings, settings.policy)
write_parquet(evals.assign(model=settings.model, dataset=settings.dataset), snakemake.output[0])
