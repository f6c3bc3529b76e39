"""Snakemake entry point: one corpus as parquet (id, text, source)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

import logging

from soft_tokens.core.io import write_parquet
from soft_tokens.data.corpora import build_corpus

corpus = build_corpus(snakemake.wildcards.corpus, snakemake.params.spec, snakemake.params.seed)
write_parquet(corpus, snakemake.output[0])
logging.info("%s: %d passages", snakemake.wildcards.corpus, len(corpus))
