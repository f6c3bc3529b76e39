"""Snakemake entry point: one model from its configured source to safetensors + tokenizer."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.core.models import prepare_model

torch.set_num_threads(snakemake.threads)
prepare_model(snakemake.wildcards.model, snakemake.params.spec, Path(snakemake.output[0]), snakemake.params.seed)
