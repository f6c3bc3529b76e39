"""Snakemake entry point: train one compressor (hyper or qattn) on the training contexts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import torch
from safetensors.torch import load_file

from soft_tokens.compressor import build_compressor, train_compressor
from soft_tokens.converter import split
from soft_tokens.io import atomic_path
from soft_tokens.models import load_model

torch.set_num_threads(snakemake.threads)
s = {**snakemake.params.settings, "seed": snakemake.params.seed}
model, _ = load_model(Path(snakemake.input.model), snakemake.params.device, snakemake.params.dtype)
if s["attention_weight"]:
    model.set_attn_implementation("eager")  # attention maps are only returned by eager attention
data = load_file(snakemake.input.estar)
train, _ = split(len(data["estar"]), s["val_fraction"], s["seed"])
torch.manual_seed(s["seed"])
arch, k, d_model = snakemake.wildcards.carch, data["estar"].shape[1], data["estar"].shape[2]
net = build_compressor(arch, d_model, k, s)
out = Path(snakemake.output[0])
checkpoint = out.with_name(out.name + ".partial")
net = train_compressor(model, net, data, train, s, checkpoint)
with atomic_path(out) as tmp:
    torch.save({"net": net.state_dict(), "arch": arch, "k": k, "d_model": d_model}, tmp)
checkpoint.unlink()
