"""Snakemake entry point: e* for (context, follow_text) pairs, with the contexts' hidden states beside them."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd
import torch
from safetensors.torch import save_file

from soft_tokens.compression.estar import build_estar, context_pairs, with_estar
from soft_tokens.core.io import atomic_path, write_parquet
from soft_tokens.core.models import load_model
from soft_tokens.core.optimiser import init_vectors
from soft_tokens.core.seeding import generator
from soft_tokens.data.corpora import read_corpus

torch.set_num_threads(snakemake.threads)
s = snakemake.params.job
model, tokenizer = load_model(Path(snakemake.input.model), s["device"], s["dtype"])
pairs = context_pairs(read_corpus(snakemake.input.corpus), tokenizer, s["train_contexts"], s["held_out_contexts"],
                      s["ctx_len"], s["follow_len"])
embedding = model.get_input_embeddings().weight
inits = {i: init_vectors("randn", embedding, s["k"], generator(s["seed"], pairs[i]["id"]))
         for i in with_estar(pairs, s["estar_train_contexts"])}
built = build_estar(model, pairs, s, inits)
tensors = {
    "estar": torch.stack([b["estar"] if b["has_estar"] else torch.zeros(s["k"], embedding.shape[1]) for b in built]),
    "has_estar": torch.tensor([b["has_estar"] for b in built]),
    "held_out": torch.tensor([b["split"] == "held_out" for b in built]),
    "context_hidden": torch.stack([b["context_hidden"] for b in built]),
    "context": torch.tensor([b["context"] for b in built]),
    "follow": torch.tensor([b["follow"] for b in built]),
}
meta = {"model": snakemake.wildcards.model, "k": s["k"], "context_layer": s["context_layer"]}
with atomic_path(snakemake.output.vectors) as tmp:
    save_file(tensors, tmp, metadata={k: str(v) for k, v in meta.items()})
columns = ["id", "split", "start", "has_estar", "accuracy", "loss", "steps", "status", "reason"]
write_parquet(pd.DataFrame([{c: b.get(c) for c in columns} for b in built]).assign(**meta), snakemake.output.table)
