"""The report document: results/report.tex, a LaTeX document of the configured tracks' sections under a
title block with the run's provenance, and results/report.pdf compiled from it with its figures.

Torch-free on purpose: the report rules run in a light environment.
"""

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from soft_tokens.report.digest import section_html
from soft_tokens.report.latex import escape, render

log = logging.getLogger(__name__)


def assemble(sections: list[Path], record: dict) -> str:
    """report.tex: every configured track's section, in the order the workflow lists them, under a title
    block with the run's provenance `record`; it compiles beside the figures (results/figures/*.pdf)."""
    return render("soft_tokens.report", "templates/report.tex.j2", record={k: escape(v) for k, v in record.items()},
                  body="\n".join(Path(s).read_text() for s in sections))


def write_section(tex: str, outputs, record: dict) -> None:
    """A track's section: its LaTeX (outputs.section) and its page of the Snakemake report (outputs.page)."""
    Path(outputs.section).write_text(tex)
    Path(outputs.page).write_text(section_html(tex, record))


def compile_pdf(document: Path, figures: list[Path], out: Path) -> None:
    """Compile `document` (report.tex) with its figures with pdflatex in a scratch folder."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        raise RuntimeError("pdflatex not found: install texlive-latex-base texlive-latex-recommended lmodern")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(document, Path(tmp) / "report.tex")
        for fig in figures:
            shutil.copy(fig, Path(tmp) / fig.name)
        run = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                             cwd=tmp, capture_output=True, text=True)
        log.info("pdflatex output:\n%s", run.stdout[-5000:])
        if run.returncode != 0:
            raise RuntimeError(f"pdflatex failed (exit {run.returncode}); see the log above")
        shutil.copy(Path(tmp) / "report.pdf", out)
