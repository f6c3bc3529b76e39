"""Snakemake entry point: continuation CE with no prefix, one converter vector, or the full earlier text."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import json

import pandas as pd
import torch

from soft_tokens.compression.converter import load_converter
from soft_tokens.compression.recursive import CONDITIONS, continuation_ce, demo_items, generate_batch, pooled_vector, prefix_embeds
from soft_tokens.core.io import atomic_path, write_parquet
from soft_tokens.compression.spec import RecursiveDemo
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model
from soft_tokens.data.corpora import read_corpus

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, RecursiveDemo)
model, tokenizer = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
converter = load_converter(Path(snakemake.input.converter), model.config.hidden_size)
items = demo_items(read_corpus(snakemake.input.corpus), tokenizer, settings.n_passages, settings.context_tokens,
                   settings.continuation_tokens)
rows, prefixes = [], []
for item in items:
    vector = pooled_vector(model, tokenizer, converter, item["earlier"], settings.layer)
    conditions = {c: prefix_embeds(model, tokenizer, c, item, vector, settings.prompt) for c in CONDITIONS}
    rows += [{"model": settings.model, "layer": settings.layer, "arch": settings.arch, "passage_id": item["id"],
              "condition": c, "ce_nats": continuation_ce(model, p, item["continuation"])} for c, p in conditions.items()]
    prefixes += conditions.values()
# Every passage and condition in one batch: one decoding step for all of them at a time.
texts = iter(generate_batch(model, tokenizer, prefixes, settings.max_new_tokens))
generations = [{"passage_id": item["id"], "condition": c, "prompt": settings.prompt, "generated": next(texts),
                "reference": tokenizer.decode(item["continuation"])} for item in items for c in CONDITIONS]
write_parquet(pd.DataFrame(rows), snakemake.output.ce)
with atomic_path(snakemake.output.generations) as tmp:
    tmp.write_text("".join(json.dumps(g) + "\n" for g in generations))
