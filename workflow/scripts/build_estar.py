"""Snakemake entry point: e* for (context, follow_text) pairs, with the contexts' hidden states beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.compression.estar import build_estar, context_pairs, save_estar, with_estar
from soft_tokens.compression.spec import BuildEstar
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model
from soft_tokens.core.optimiser import init_vectors
from soft_tokens.core.seeding import generator
from soft_tokens.data.corpora import read_corpus

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, BuildEstar)
model, tokenizer = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
pairs = context_pairs(read_corpus(snakemake.input.corpus), tokenizer, settings.train_contexts,
                      settings.held_out_contexts, settings.ctx_len, settings.follow_len)
embedding = model.get_input_embeddings().weight
inits = {i: init_vectors("randn", embedding, settings.k, generator(settings.seed, pairs[i]["id"]))
         for i in with_estar(pairs, settings.estar_train_contexts)}
built = build_estar(model, pairs, settings, inits)
meta = {"model": settings.model, "k": settings.k, "context_layer": settings.context_layer}
save_estar(built, settings.k, embedding.shape[1], meta, snakemake.output.vectors, snakemake.output.table)
