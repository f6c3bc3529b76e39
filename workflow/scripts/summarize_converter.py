"""Snakemake entry point: all converter evaluations in one parquet."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.io import write_parquet

write_parquet(pd.concat([pd.read_parquet(p) for p in snakemake.input], ignore_index=True), snakemake.output[0])
