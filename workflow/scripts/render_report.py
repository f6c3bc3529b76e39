"""Snakemake entry point: results/table.tex rendered with Jinja2 from the summary parquets."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.report import render_table

has_converter = "converter" in snakemake.input.keys()
converter = pd.read_parquet(snakemake.input.converter) if has_converter else None
demo = pd.concat([pd.read_parquet(p) for p in snakemake.input.demo]) if has_converter else None
compressor = pd.read_parquet(snakemake.input.compressor) if "compressor" in snakemake.input.keys() else None
coconut = pd.read_parquet(snakemake.input.coconut) if "coconut" in snakemake.input.keys() else None
tex = render_table(pd.read_parquet(snakemake.input.summary), pd.read_parquet(snakemake.input.capacity), converter, demo,
                   compressor, coconut)
Path(snakemake.output[0]).write_text(tex)
