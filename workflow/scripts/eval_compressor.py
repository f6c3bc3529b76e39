"""Snakemake entry point: held-out CE and teacher agreement for no context, full context, e* and the compressor."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd
import torch
from safetensors.torch import load_file

from soft_tokens.compressor import build_compressor, evaluate_conditions
from soft_tokens.converter import split
from soft_tokens.io import write_parquet
from soft_tokens.models import load_model

torch.set_num_threads(snakemake.threads)
s = snakemake.params.settings
model, _ = load_model(Path(snakemake.input.model), snakemake.params.device, snakemake.params.dtype)
data = load_file(snakemake.input.estar)
_, held_out = split(len(data["estar"]), s["val_fraction"], snakemake.params.seed)
state = torch.load(snakemake.input.compressor)
if state["d_model"] != model.config.hidden_size:
    raise ValueError(f"{snakemake.input.compressor} was trained for width {state['d_model']}, "
                     f"the model has {model.config.hidden_size}")
net = build_compressor(state["arch"], state["d_model"], state["k"], s)
net.load_state_dict(state["net"])
net.to(model.get_input_embeddings().weight.device).eval()
rows = evaluate_conditions(model, net, data, held_out, s["top_k"])
meta = {"model": snakemake.wildcards.model, "arch": state["arch"], "k": state["k"]}
write_parquet(pd.DataFrame([{**meta, **r} for r in rows]), snakemake.output[0])
