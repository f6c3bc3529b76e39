"""docs/results.md: what a finished run shows, in Markdown, generated from its report sections (never
pasted by hand) with the commit, config, date and versions it came from. Torch-free: a local rule
writes it.

Each section's title, protocol paragraph, tables (booktabs) and findings are carried over; figures stay
in the report (results/report.pdf, `snakemake --report`)."""

import html
import re
from pathlib import Path

from soft_tokens.report.provenance import summary_line

# LaTeX the sections use in prose and cells, and its Markdown.
REPLACEMENTS = ((r"\%", "%"), (r"\_", "_"), (r"\&", "&"), (r"\#", "#"), (r"\$", "$"), ("---", "—"), ("--", "–"),
                (r"$\to$", "→"), (r"\to", "→"), (r"\times", "×"), (r"\sqrt", "√"), (r"\cdot", "·"), (r"\log", "log"), (r"\pm", "±"), (r"\leq", "≤"),
                (r"\geq", "≥"), ("~", " "), (r"\textasciitilde{}", "~"), (r"\textasciicircum{}", "^"),
                (r"\textbackslash{}", "\\"), (r"\{", "{"), (r"\}", "}"))


def markdown(tex: str) -> str:
    """A line of the sections' LaTeX prose as Markdown."""
    text = re.sub(r"\\texttt\{([^}]*)\}", r"`\1`", tex)
    text = re.sub(r"\\(?:emph|textit)\{([^}]*)\}", r"*\1*", text)
    text = re.sub(r"\\textbf\{([^}]*)\}", r"**\1**", text)
    text = re.sub(r"\\multicolumn\{\d+\}\{\w+\}\{((?:[^{}]|\{[^{}]*\})*)\}", r"\1", text)
    for latex, plain in REPLACEMENTS:
        text = text.replace(latex, plain)
    return re.sub(r"\$([^$]*)\$", r"\1", text).strip()


def row_cells(row: str) -> list[str]:
    """The cells of one tabular row (a multicolumn cell followed by the empty cells it spans)."""
    cells = []
    for cell in re.split(r"(?<!\\)&", row.strip().removesuffix(r"\\")):
        span = re.match(r"\s*\\multicolumn\{(\d+)\}", cell)
        cells += [markdown(cell)] + [""] * (int(span.group(1)) - 1 if span else 0)
    return cells


def table_cells(block: str) -> tuple[str | None, list[list[str]], list[list[str]]]:
    """A booktabs table's caption, header rows (the column names last) and data rows, padded to one
    width, in Markdown."""
    caption = re.search(r"\\caption\{(.*)\}\n", block)
    body = block[block.index(r"\toprule") + len(r"\toprule"):block.index(r"\bottomrule")]
    header, rows = body.split(r"\midrule")
    cells = [row_cells(line) for line in header.splitlines() if line.strip() and "cmidrule" not in line]
    data = [row_cells(line) for line in rows.splitlines() if line.strip()]
    width = max(len(r) for r in cells + data)
    cells, data = ([r + [""] * (width - len(r)) for r in rows] for rows in (cells, data))
    return (markdown(caption.group(1)) if caption else None), cells, data


def table(block: str) -> str:
    """A booktabs table as a Markdown table under its caption (multicolumn headers on their own row)."""
    caption, cells, data = table_cells(block)
    lines = ["| " + " | ".join(r) + " |" for r in cells[-1:]]
    lines.append("|" + " --- |" * len(cells[-1]))
    lines += ["| " + " | ".join(r) + " |" for r in cells[:-1] + data]
    return (f"*{caption}*\n\n" if caption else "") + "\n".join(lines)


def items(tex: str) -> list[str]:
    return [markdown(item) for item in re.findall(r"^\\item (.*)$", tex, re.M)]


def parts(tex: str) -> tuple[str, str, list[str], list[str], list[str]]:
    """A report section's title, protocol paragraph, table blocks, key findings and all its findings
    (Markdown; tables as LaTeX), as soft_tokens.report.findings lays them out."""
    title = re.search(r"\\section\*\{(.*)\}", tex).group(1)
    protocol = tex[tex.index("\n") + 1:].split("\n\n", 1)[0]
    tables = [m.group(0) for m in re.finditer(r"\\begin\{table\}.*?\\end\{table\}", tex, re.S)]
    key, _, rest = tex.partition("\\subsection*{Key findings}")[2].partition("\\subsection*{All findings}")
    return markdown(title), markdown(protocol), tables, items(key), items(rest)


def section(tex: str) -> str:
    """One report section as the PDF lays it out: title, protocol, key findings, tables, all its findings."""
    title, protocol, tables, key, findings = parts(tex)

    def listed(name, sentences):
        return [f"{name}:\n\n" + "\n".join(f"- {sentence}" for sentence in sentences)] if sentences else []

    return "\n\n".join([f"## {title}", protocol, *listed("Key findings", key), *map(table, tables),
                          *listed("All findings", findings)])


def inline_html(text: str) -> str:
    """Markdown's inline code, bold and italics as HTML, the rest escaped."""
    text = html.escape(text)
    text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])", r"<i>\1</i>", text)


def table_html(block: str) -> str:
    caption, cells, data = table_cells(block)
    head = "".join("<tr>" + "".join(f"<th>{inline_html(c)}</th>" for c in r) + "</tr>" for r in cells)
    body = "".join("<tr>" + "".join(f"<td>{inline_html(c)}</td>" for c in r) + "</tr>" for r in data)
    return ("<table>" + (f"<caption>{inline_html(caption)}</caption>" if caption else "")
            + f"<thead>{head}</thead><tbody>{body}</tbody></table>")


STYLE = ("body{font-family:sans-serif;max-width:70em;margin:1em auto;line-height:1.4}"
         "table{border-collapse:collapse;margin:1.2em 0}caption{text-align:left;font-style:italic;padding:.3em 0}"
         "th,td{border-bottom:1px solid #ccc;padding:.2em .6em;text-align:right}th{border-bottom:2px solid #444}"
         "td:first-child,th:first-child{text-align:left}code{background:#f3f3f3}")


def section_html(tex: str, record: dict) -> str:
    """One report section as a page of the Snakemake report: its title, protocol, tables (with their
    intervals) and findings, under the run's provenance `record`."""
    title, protocol, tables, key, findings = parts(tex)

    def listed(name, sentences):
        items = "".join(f"<li>{inline_html(f)}</li>" for f in sentences)
        return f"<h3>{name}</h3><ul>{items}</ul>" if sentences else ""

    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h2>{inline_html(title)}</h2>"
            f"<p><small>{inline_html('From a run of ' + summary_line(record))}</small></p>"
            f"<p>{inline_html(protocol)}</p>{listed('Key findings', key)}{''.join(map(table_html, tables))}"
            f"{listed('All findings', findings)}</body></html>\n")


def digest(sections: list[Path], record: dict) -> str:
    """docs/results.md from the report sections, headed by the run's provenance `record`."""
    head = ("# Results of the default run\n\n"
            "<!-- Generated by soft-tokens (rule document_results): do not edit; `make results` rewrites it. -->\n\n"
            f"Generated from a run of {summary_line(record)} by the `document_results` rule. Every mean carries its "
            "n and a 95% interval ([statistics](statistics.md)); "
            "the figures are in `results/report.pdf` and `snakemake --report`.\n")
    return "\n\n".join([head, *(section(Path(s).read_text()) for s in sections)]) + "\n"
