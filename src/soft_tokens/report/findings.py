"""A report section's findings ordered for a reader: the section opens with its key findings (the
differences that hold by the rule of docs/statistics.md, and the verdicts that rest on them) with one
line for what is within noise, and ends with every finding. Findings are sentences the tracks write
(LaTeX prose): how each one reads decides its place (stats.difference writes most of them; tests hold
its phrasings and the tracks' verdicts to these patterns)."""

import re

# A comparison whose interval holds 0, or one that could not be made.
NOISE = re.compile(r"are within noise|are not compared on|shows no evidence|is neither met nor missed")
# A difference that holds, or a verdict that rests on intervals.
HOLDS = re.compile(r"\bhas (?:higher|lower) .+ than |\(the interval excludes 0\)|closes a share of the gap above zero|"
                   r"\bis (?:met|missed)\b|\buses its latent")
SUBJECT = re.compile(r"^(.*?) and (.*?) are (?:within noise(?: at [^:]*?)?|not compared) on (.*?):")
# The interval of a value, `(95\% CI 0.000--0.143, n = 2)`, a value with it in brackets, or what the interval
# excludes: left out of a subject.
VALUE = re.compile(r" \([-+\d.]+ \([^()]*n = [^()]*\)\)| \([^()]*n = [^()]*\)| \(the interval excludes [^()]*\)")
SHOWN = 6  # subjects named in the within-noise line; the rest are counted


def subject(sentence: str) -> str:
    """What a within-noise sentence compares, short: `A vs B on Q`, or its words before the verdict
    without the values."""
    if match := SUBJECT.match(sentence):
        return f"{match.group(1)} vs {match.group(2)} on {match.group(3)}"
    head = re.split(r" are within noise| is neither met nor missed|: ", sentence)[0].split(";")[0]
    return VALUE.sub("", head).rstrip(".")


def key_findings(findings: list[str]) -> list[str]:
    """The differences that hold, then one sentence for the comparisons within noise."""
    holds = [f for f in findings if HOLDS.search(f) and not NOISE.search(f)]
    noise = [subject(f) for f in findings if NOISE.search(f)]
    if not holds:
        holds = ["No difference holds at this n."]
    if noise:
        named = "; ".join(noise[:SHOWN]) + (f"; and {len(noise) - SHOWN} more" if len(noise) > SHOWN else "")
        holds.append(f"Within noise at this n ({len(noise)} of {len(findings)} findings; each in full below): "
                     f"{named}.")
    return holds


def items(sentences: list[str]) -> str:
    return "\\begin{itemize}\n" + "".join(f"\\item {s}\n" for s in sentences) + "\\end{itemize}\n"


def key_block(findings: list[str]) -> str:
    """The LaTeX a section opens with, after its protocol: its key findings."""
    return "\\subsection*{Key findings}\n" + items(key_findings(findings))


def all_block(findings: list[str]) -> str:
    """The LaTeX a section ends with: every finding, in a smaller font."""
    return "\\subsection*{All findings}\n{\\small\n" + items(findings) + "}\n" if findings else ""
