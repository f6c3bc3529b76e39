"""Snakemake entry point: (hidden state, input embedding) pairs for every configured layer of one model."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.compression.converter import extract_pairs, save_pairs, token_subset
from soft_tokens.compression.spec import ExtractPairs
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, ExtractPairs)
model, tokenizer = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
ids = token_subset(model.config.vocab_size, settings.max_tokens, settings.seed)
bos = tokenizer.bos_token_id if settings.bos else None
pairs = extract_pairs(model, ids, settings.layers, bos, settings.batch_size)
for layer, path in zip(settings.layers, snakemake.output):
    save_pairs(pairs[layer], Path(path), {"model": settings.model, "layer": layer, "bos": settings.bos})
