"""Snakemake entry point: docs/results.md, what the run shows in Markdown, from its report sections."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(snakemake.scriptdir).parents[1] / "src"))
from soft_tokens.core.runlog import log_to

log_to(snakemake.log[0])

from soft_tokens.report.digest import digest
from soft_tokens.report.provenance import provenance

Path(snakemake.output[0]).write_text(digest([Path(p) for p in snakemake.input], provenance()))
