"""Snakemake entry point: train one HRPO / GRPO policy (resumes after its last checkpoint)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import resumable_output
from soft_tokens.core.job_settings import job_settings
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.hrpo.spec import TrainHrpo
from soft_tokens.latent.hrpo.training import build_policy, prompt_problems, save_policy, start_dir, train

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, TrainHrpo)
splits = {split: read_reasoning(snakemake.input[split]) for split in ("train", "val", "test")}
problems = prompt_problems(settings.dataset, snakemake.params.spec, splits, settings)
policy, tokenizer = build_policy(start_dir(Path(snakemake.input.start), settings.start), settings.policy, settings)
inputs = {"start": snakemake.input.start, **{split: snakemake.input[split] for split in splits}}
curve = TrainingCurve(Path(snakemake.output.history), {"model": settings.model, "dataset": settings.dataset,
                                                       "policy": settings.policy, "seed": settings.seed})
with resumable_output(snakemake.output.policy, settings.params(), inputs) as (checkpoint, run):
    history = train(policy, tokenizer, problems, settings, checkpoint, run, curve)
    curve.write(history.to_dict("records"))  # a run resumed after its last step trains nothing more
    save_policy(policy, Path(snakemake.output.policy))
