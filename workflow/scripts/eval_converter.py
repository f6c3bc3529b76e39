"""Snakemake entry point: held-out MSE, cosine and nearest-token accuracy of one converter."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd
import torch

from soft_tokens.compression.converter import evaluate_converter, load_converter, load_pairs, split
from soft_tokens.core.io import write_parquet
from soft_tokens.compression.spec import EvalConverter
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, EvalConverter)
pairs = load_pairs(Path(snakemake.input.pairs))
_, held_out = split(len(pairs["X"]), settings.val_fraction, settings.seed)
model, _ = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
embedding = model.get_input_embeddings().weight.float().cpu()
del model
net = load_converter(Path(snakemake.input.converter), embedding.shape[1])
row = evaluate_converter(net, pairs["X"][held_out], pairs["Y"][held_out], pairs["token_ids"][held_out], embedding,
                         settings.top_k)
meta = {"model": settings.model, "layer": int(settings.layer), "arch": settings.arch}
write_parquet(pd.DataFrame(row).assign(**meta), snakemake.output[0])
