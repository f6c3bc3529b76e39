"""Snakemake entry point: accuracy-vs-steps and TF-vs-greedy figures (PNG for the report, PDF for LaTeX)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.runlog import log_to

log_to(snakemake.log[0])

import pandas as pd

from soft_tokens.report import plot_accuracy_vs_steps, plot_tf_vs_greedy, read_samples

samples = read_samples(snakemake.input.samples)
summary = pd.read_parquet(snakemake.input.summary)
plot_accuracy_vs_steps(samples, [snakemake.output.steps, snakemake.output.steps_pdf])
plot_tf_vs_greedy(summary, [snakemake.output.lengths, snakemake.output.lengths_pdf])
