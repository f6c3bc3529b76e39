"""Snakemake entry point: fit one converter (linear or MLP) on the training split of a pair file."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import torch

from soft_tokens.compression.converter import load_pairs, save_converter, split, train_converter
from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import resumable_output
from soft_tokens.compression.spec import TrainConverter
from soft_tokens.core.job_settings import job_settings

torch.set_num_threads(snakemake.threads)
settings = job_settings(snakemake, TrainConverter)
pairs = load_pairs(Path(snakemake.input.pairs))
train, _ = split(len(pairs["X"]), settings.val_fraction, settings.seed)
curve = TrainingCurve(Path(snakemake.output.curve), {"model": settings.model, "layer": int(settings.layer),
                                                     "arch": settings.arch})
with resumable_output(snakemake.output.converter, settings.params(), {"pairs": snakemake.input.pairs}) as (checkpoint,
                                                                                                          run):
    net = train_converter(pairs["X"][train], pairs["Y"][train], settings, checkpoint, run, curve)
    meta = {"model": settings.model, "layer": int(settings.layer), "arch": settings.arch,
            "in_dim": pairs["X"].shape[1], "out_dim": pairs["Y"].shape[1], "hidden_dim": settings.hidden_dim}
    save_converter(net, Path(snakemake.output.converter), meta)
