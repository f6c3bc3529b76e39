"""Snakemake entry point: held-out CE and teacher agreement for no context, full context, e* and the compressor."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import pandas as pd
import torch

from soft_tokens.compression.compressor import evaluate_conditions, load_compressor
from soft_tokens.compression.estar import load_estar
from soft_tokens.core.io import write_parquet
from soft_tokens.compression.spec import EvalCompressor
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, EvalCompressor)
model, _ = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
data = load_estar(snakemake.input.estar)
held_out = data["held_out"].nonzero()[:, 0]
net = load_compressor(Path(snakemake.input.compressor), model.config.hidden_size)
net.to(model.get_input_embeddings().weight.device)
rows = evaluate_conditions(model, net, data, held_out, settings.top_k)
meta = {"model": settings.model, "arch": settings.arch, "k": data["estar"].shape[1]}
write_parquet(pd.DataFrame([{**meta, **r} for r in rows]), snakemake.output[0])
