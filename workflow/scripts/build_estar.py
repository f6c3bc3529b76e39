"""Snakemake entry point: e* for (context, follow_text) pairs, with the contexts' hidden states beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

import torch

from soft_tokens.compression.estar import build_estar, context_pairs, save_estar, with_estar
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model
from soft_tokens.core.optimiser import init_vectors
from soft_tokens.core.seeding import generator
from soft_tokens.data.corpora import read_corpus

torch.set_num_threads(snakemake.threads)
s = job_settings(snakemake)
model, tokenizer = load_model(Path(snakemake.input.model), s["device"], s["dtype"])
pairs = context_pairs(read_corpus(snakemake.input.corpus), tokenizer, s["train_contexts"], s["held_out_contexts"],
                      s["ctx_len"], s["follow_len"])
embedding = model.get_input_embeddings().weight
inits = {i: init_vectors("randn", embedding, s["k"], generator(s["seed"], pairs[i]["id"]))
         for i in with_estar(pairs, s["estar_train_contexts"])}
built = build_estar(model, pairs, s, inits)
meta = {"model": snakemake.wildcards.model, "k": s["k"], "context_layer": s["context_layer"]}
save_estar(built, s["k"], embedding.shape[1], meta, snakemake.output.vectors, snakemake.output.table)
