"""Snakemake entry point: one reasoning dataset, split into train/val/test parquet files."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import logging

from soft_tokens.core.io import write_parquet
from soft_tokens.data.reasoning import reasoning_splits
from soft_tokens.vocabulary import REASONING_SPLITS

name = snakemake.wildcards.dataset
splits = reasoning_splits(name, snakemake.params.spec, snakemake.params.seed)
for split, path in zip(REASONING_SPLITS, snakemake.output):
    write_parquet(splits[split], path)
    logging.info("%s/%s: %d problems, %.1f steps on average", name, split, len(splits[split]),
                 splits[split]["steps"].map(len).mean())
