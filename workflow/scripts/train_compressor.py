"""Snakemake entry point: train one compressor (hyper or qattn) on the training contexts."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.compression.compressor import architecture, build_compressor, save_compressor, train_compressor
from soft_tokens.compression.estar import load_estar
from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import resumable_output
from soft_tokens.compression.spec import TrainCompressor
from soft_tokens.core.job_settings import job_settings
from soft_tokens.core.models import load_model

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, TrainCompressor)
model, _ = load_model(Path(snakemake.input.model), settings.device, settings.dtype)
if settings.attention_weight:
    model.set_attn_implementation("eager")  # attention maps are only returned by eager attention
data = load_estar(snakemake.input.estar)
train = (~data["held_out"]).nonzero()[:, 0]
torch.manual_seed(settings.seed)
k, d_model = data["estar"].shape[1], data["estar"].shape[2]
shape = architecture(settings)
net = build_compressor(settings.arch, d_model, k, shape)
inputs = {"model": snakemake.input.model, "estar": snakemake.input.estar}
curve = TrainingCurve(Path(snakemake.output.curve), {"model": settings.model, "arch": settings.arch})
with resumable_output(snakemake.output.compressor, settings.params(), inputs) as (checkpoint, run):
    net = train_compressor(model, net, data, train, settings, checkpoint, run, curve)
    save_compressor(net, Path(snakemake.output.compressor), settings.arch, d_model, k, shape)
