"""Snakemake entry point: results/table.tex, the configured tracks' sections in order."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

from soft_tokens.report.document import assemble

Path(snakemake.output[0]).write_text(assemble([Path(p) for p in snakemake.input]))
