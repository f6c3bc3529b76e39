"""Snakemake entry point: results/report.pdf from report.tex and the figures, with pdflatex."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import start_job

start_job(snakemake)

from soft_tokens.report.document import compile_pdf

compile_pdf(Path(snakemake.input.document), [Path(f) for f in snakemake.input.figures], Path(snakemake.output[0]))
