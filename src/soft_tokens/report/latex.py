"""LaTeX for the report: tables through pandas' Styler (booktabs), escaping, number formatting, and
each track's section template (a Jinja partial that lives beside the track's code)."""

import importlib.util
import math
import re
from pathlib import Path

import jinja2
import pandas as pd

from soft_tokens.report.findings import all_block, key_block


def escape(text) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(table.get(c, c) for c in str(text))


def escape_text(sentence: str) -> str:
    """Escape underscores and the like in prose, leaving the already-escaped \\% alone."""
    return escape(sentence.replace("\\%", "\x00")).replace("\x00", r"\%")


def captions(package: str, figures) -> list[str]:
    """The LaTeX captions of a track's `figures`, from the one caption of each, `captions/<name>.rst` in
    the track's package (the Snakemake report shows it as it is; ``code`` becomes typewriter here)."""
    folder = Path(importlib.util.find_spec(package).submodule_search_locations[0]) / "captions"
    return [re.sub(r"``(.+?)``", r"\\texttt{\1}", escape(" ".join((folder / f"{name}.rst").read_text().split())))
            for name in figures]


def fmt(value, digits: int = 3) -> str:
    return "--" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def table(df: pd.DataFrame, caption: str, column_format: str | None = None, size: str | None = None) -> str:
    """A booktabs table float of `df`: headers as given (LaTeX), cells escaped, NaN shown as --.
    Columns that are a MultiIndex become groups under centred multicolumn headers; `size` (e.g.
    footnotesize) sets a smaller font for a wide table instead of shrinking it to fit. A float LaTeX
    places where it fits (here, top, bottom or a float page: never a half-empty page); each section
    ends with \\clearpage, which sets its pending floats before the next section starts."""
    styler = df.style.hide(axis="index").format(escape="latex", na_rep="--")
    tex = styler.to_latex(hrules=True, position="htbp", position_float="centering", caption=caption,
                          multicol_align="c", column_format=column_format)
    return tex.replace("\\centering\n", f"\\centering\n\\{size}\n", 1) if size else tex


def render(package: str, template: str, **context) -> str:
    """Render `template` from the folder of `package` (a track's own section partial); a section given
    `figures` gets their `captions` too, and one given `findings` its `key_findings` (to open with) and
    `all_findings` (to end with)."""
    if "figures" in context:
        context["captions"] = captions(package, context["figures"])
    if "findings" in context:
        context["key_findings"] = key_block(context["findings"])
        context["all_findings"] = all_block(context["findings"])
    env = jinja2.Environment(
        loader=jinja2.PackageLoader(package, "."),
        block_start_string="<%", block_end_string="%>",
        variable_start_string="<<", variable_end_string=">>",
        comment_start_string="<#", comment_end_string="#>",
        trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined, autoescape=False,
    )
    return env.get_template(template).render(**context)
