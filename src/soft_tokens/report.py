"""From per-sample cramming results to the summary, the capacity table, figures and LaTeX.

Torch-free on purpose: the report rules run in a light environment.
"""

import logging
import math
import shutil
import subprocess
import tempfile
from pathlib import Path

import jinja2
import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

JOB_KEYS = ["model", "corpus", "length", "n_mem", "variant", "init"]
CAPACITY_KEYS = ["model", "corpus", "n_mem", "variant", "init"]
ORDER = {"variant": {"base": 0, "bos": 1, "2leading": 2}, "init": {"randn": 0, "mean": 1, "token": 2}}
MISMATCH = [f"{kind}_mismatch@{k}" for kind in ("greedy", "tf") for k in (0, 1, 2)]
MEANS = {
    "teacher_forcing_convergence": "mean_teacher_forcing_convergence",
    "greedy_convergence": "mean_greedy_convergence",
    "ce_text_bits": "mean_ce_text_bits",
    "ce_with_mem_bits": "mean_ce_with_mem_bits",
    "information_gain_bits": "mean_information_gain_bits",
    "gain_tokens": "mean_gain_tokens",
    "steps": "mean_steps",
    "seconds": "mean_seconds",
    "converged": "converged_rate",
    **{m: m for m in MISMATCH},
}
TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("soft_tokens", "templates"),
    block_start_string="<%", block_end_string="%>",
    variable_start_string="<<", variable_end_string=">>",
    comment_start_string="<#", comment_end_string="#>",
    trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined, autoescape=False,
)


def read_samples(paths) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True)


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per job: means over its samples (failed samples are NaN and skipped), plus counts."""
    df = samples.assign(converged=samples["converged"].astype(float))
    grouped = df.groupby(JOB_KEYS, sort=False)
    out = grouped[list(MEANS)].mean().rename(columns=MEANS)
    out["n_samples"] = grouped.size()
    out["n_failed"] = grouped["status"].apply(lambda s: int((s == "failed").sum()))
    out[["hidden_size", "vocab_size"]] = grouped[["hidden_size", "vocab_size"]].first()
    return out.reset_index()


def theoretical_capacity(hidden_size: int, vocab_size: int, n_mem: int) -> float:
    """Tokens N vectors of 16-bit floats could encode at most: N * hidden * 16 / log2(vocab)."""
    return n_mem * hidden_size * 16 / math.log2(vocab_size)


def capacity(lengths_to_accuracy: dict[int, float], threshold: float) -> int:
    """The largest tested length whose mean teacher-forced accuracy reaches `threshold` (0 if none)."""
    return max((length for length, acc in lengths_to_accuracy.items() if acc >= threshold), default=0)


def capacity_table(summary: pd.DataFrame, threshold: float) -> pd.DataFrame:
    rows = []
    for keys, group in summary.groupby(CAPACITY_KEYS, sort=False):
        found = capacity(dict(zip(group["length"], group["mean_teacher_forcing_convergence"])), threshold)
        bound = theoretical_capacity(int(group["hidden_size"].iloc[0]), int(group["vocab_size"].iloc[0]), keys[2])
        rows.append({
            **dict(zip(CAPACITY_KEYS, keys)),
            "capacity_tokens": found,
            "max_tested_length": int(group["length"].max()),
            "theoretical_bound_tokens": bound,
            "utilisation": found / bound,
            "threshold": threshold,
        })
    return pd.DataFrame(rows)


def latex_escape(text) -> str:
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(table.get(c, c) for c in str(text))


def fmt(value, digits: int = 3) -> str:
    return "--" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def row_name(row) -> str:
    """`Llama-3.2-1B_bos` style: model and variant, plus init and mem count where not the default."""
    name = f"{row['model']}_{row['variant']}"
    if row["init"] != "randn":
        name += f"_{row['init']}"
    if row["n_mem"] != 1:
        name += f"_mem{row['n_mem']}"
    return name


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["corpus", "model", "variant", "init", "n_mem"] + (["length"] if "length" in df else []),
                          key=lambda c: c.map(ORDER[c.name]) if c.name in ORDER else c)


def findings(summary: pd.DataFrame, capacity_df: pd.DataFrame) -> list[str]:
    """Sentences whose claims are checked against the numbers; a claim that does not hold is not made."""
    out = []
    for _, r in ordered(summary).iterrows():
        tf, greedy = r["mean_teacher_forcing_convergence"], r["mean_greedy_convergence"]
        early = [k for k in (0, 1) if r[f"greedy_mismatch@{k}"] >= 0.5]
        where = f"{row_name(r)} at {r['length']} tokens ({r['corpus']})"
        if tf - greedy >= 0.3 and early:
            out.append(
                f"For {where}, teacher forcing reaches {tf:.2f} but greedy decoding only {greedy:.2f}: "
                f"the greedy decode already misses token{'s' if len(early) > 1 else ''} "
                f"{'--'.join(map(str, early))} (mismatch@0 = {fmt(r['greedy_mismatch@0'], 2)}, "
                f"mismatch@1 = {fmt(r['greedy_mismatch@1'], 2)}), so one early miss derails the decode."
            )
        elif tf >= 0.9 and greedy >= 0.9:
            out.append(f"For {where}, greedy decoding recovers the text as well as teacher forcing "
                       f"({greedy:.2f} vs {tf:.2f}).")
    out += variant_effects(summary)
    if (summary["mean_teacher_forcing_convergence"] < 0.5).all():
        out.append("No configuration reached a mean teacher-forced accuracy of 0.5 within its step budget.")
    none = []
    for _, c in ordered(capacity_df).iterrows():
        who = f"{row_name(c)} ({c['corpus']})"
        if c["capacity_tokens"] == 0:
            none.append(who)
            continue
        longest = " (the longest tested, so the capacity may be higher)" \
            if c["capacity_tokens"] == c["max_tested_length"] else ""
        out.append(
            f"{who} reconstructs texts of {c['capacity_tokens']} tokens{longest} from {c['n_mem']} "
            f"vector{'s' if c['n_mem'] > 1 else ''}: {100 * c['utilisation']:.1f}\\% of the theoretical "
            f"bound of {c['theoretical_bound_tokens']:.0f} tokens."
        )
    if none:
        threshold = capacity_df["threshold"].iloc[0]
        out.append(f"No tested length reaches a mean teacher-forced accuracy of {threshold:.2f} for "
                   f"{', '.join(none)}.")
    return [latex_escape_text(s) for s in out]


def variant_effects(summary: pd.DataFrame) -> list[str]:
    """Greedy accuracy of `bos` and `2leading` against `base` on the same jobs, where it moves by >= 0.1."""
    out = []
    keys = ["model", "corpus", "length", "n_mem", "init"]
    base = summary[summary["variant"] == "base"].set_index(keys)["mean_greedy_convergence"]
    for variant, what in (("bos", "Ignoring the BOS position"), ("2leading", "Up-weighting the first tokens")):
        other = summary[summary["variant"] == variant].set_index(keys)["mean_greedy_convergence"]
        for key in base.index.intersection(other.index):
            delta = other[key] - base[key]
            if abs(delta) >= 0.1:
                model, corpus, length = key[:3]
                out.append(f"{what} ({variant}) {'raises' if delta > 0 else 'lowers'} greedy accuracy for "
                           f"{model} at {length} tokens ({corpus}) from {base[key]:.2f} to {other[key]:.2f}.")
    return out


def latex_escape_text(sentence: str) -> str:
    """Escape underscores and the like in prose, leaving the already-escaped \\% alone."""
    return latex_escape(sentence.replace("\\%", "\x00")).replace("\x00", r"\%")


def converter_rows(converter: pd.DataFrame | None) -> list[dict]:
    if converter is None:
        return []
    return [{
        "model": latex_escape(r["model"]), "layer": int(r["layer"]), "arch": r["arch"], "k": int(r["k"]),
        "mse": fmt(r["mse"], 4), "cosine": fmt(r["cosine"]), "top1": fmt(r["top1"]), "topk": fmt(r["topk"]),
    } for _, r in converter.sort_values(["model", "layer", "arch"]).iterrows()]


def demo_rows(demo: pd.DataFrame | None) -> list[dict]:
    """Mean continuation CE per model and condition, conditions as columns."""
    if demo is None:
        return []
    wide = demo.pivot_table(index=["model", "layer", "arch"], columns="condition", values="ce_nats", aggfunc="mean")
    counts = demo.groupby(["model", "layer", "arch"])["passage_id"].nunique()
    return [{"model": latex_escape(model), "layer": layer, "arch": arch, "n": int(counts[(model, layer, arch)]),
             **{c: fmt(r[c]) for c in ("none", "converter", "full_text")}}
            for (model, layer, arch), r in wide.iterrows()]


COMPRESSOR_CONDITIONS = ["no_context", "full_context", "estar", "compressor"]


def summarize_compressor(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x arch x k: per-condition means over the held-out contexts, side by side."""
    keys = ["model", "arch", "k"]
    wide = evals.pivot_table(index=keys, columns="condition", values=["ce_nats", "topk_agreement"], aggfunc="mean")
    wide.columns = [f"{metric.split('_')[0]}_{condition}" for metric, condition in wide.columns]
    own = evals[evals["condition"] == "compressor"].groupby(keys)[["mse", "cosine", "norm_rmse"]].mean()
    counts = evals[evals["condition"] == "compressor"].groupby(keys).size().rename("n_contexts")
    return wide.join(own).join(counts).reset_index()


def compressor_rows(summary: pd.DataFrame | None) -> list[dict]:
    if summary is None:
        return []
    return [{
        "model": latex_escape(r["model"]), "arch": r["arch"], "k": int(r["k"]), "n": int(r["n_contexts"]),
        "ce": [fmt(r[f"ce_{c}"]) for c in COMPRESSOR_CONDITIONS],
        "agree": [fmt(r[f"topk_{c}"]) for c in COMPRESSOR_CONDITIONS],
        "cosine": fmt(r["cosine"]), "norm_rmse": fmt(r["norm_rmse"]),
    } for _, r in summary.iterrows()]


def plot_compressor_ce(summary: pd.DataFrame, paths: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(summary), 3.2))
    width = 0.8 / len(COMPRESSOR_CONDITIONS)
    for i, condition in enumerate(COMPRESSOR_CONDITIONS):
        ax.bar([j + i * width for j in range(len(summary))], summary[f"ce_{condition}"], width,
               label=condition.replace("_", " "))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(summary))],
                  labels=[f"{r.model}\n{r.arch}, k={r.k}" for r in summary.itertuples()], fontsize=8)
    ax.set_ylabel("CE of follow_text (nats/token)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def render_table(summary: pd.DataFrame, capacity_df: pd.DataFrame, converter: pd.DataFrame | None = None,
                 demo: pd.DataFrame | None = None, compressor: pd.DataFrame | None = None,
                 coconut: pd.DataFrame | None = None) -> str:
    tables = []
    for corpus, group in ordered(summary).groupby("corpus", sort=False):
        rows = [{
            "name": latex_escape(row_name(r)), "length": int(r["length"]),
            "mismatch": [fmt(r[f"greedy_mismatch@{k}"]) for k in (0, 1, 2)],
            "tf": fmt(r["mean_teacher_forcing_convergence"]), "greedy": fmt(r["mean_greedy_convergence"]),
        } for _, r in group.iterrows()]
        tables.append({"corpus": latex_escape(corpus), "rows": rows,
                       "n_samples": int(group["n_samples"].max()), "n_failed": int(group["n_failed"].sum())})
    capacity_rows = [{
        "name": latex_escape(row_name(c)), "corpus": latex_escape(c["corpus"]), "capacity": int(c["capacity_tokens"]),
        "tested": int(c["max_tested_length"]), "bound": fmt(c["theoretical_bound_tokens"], 0),
        "utilisation": fmt(100 * c["utilisation"], 1),
    } for _, c in ordered(capacity_df).iterrows()]
    threshold = fmt(float(capacity_df["threshold"].iloc[0]), 2)
    return TEMPLATES.get_template("table.tex.j2").render(
        tables=tables, capacity=capacity_rows, threshold=threshold, findings=findings(summary, capacity_df),
        converter=converter_rows(converter), demo=demo_rows(demo), compressor=compressor_rows(compressor),
        coconut=coconut_rows(coconut),
    )


def best_so_far_curves(samples: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """Each sample's best accuracy so far on a common step grid (held after it stops), stacked."""
    return np.stack([
        np.interp(grid, r.curve_steps, np.maximum.accumulate(np.asarray(r.curve_accuracy, dtype=float)))
        for r in samples.itertuples() if len(r.curve_steps)
    ])


def plot_accuracy_vs_steps(samples: pd.DataFrame, paths: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted(samples["length"].unique())
    fig, axes = plt.subplots(1, len(lengths), figsize=(4 * len(lengths), 3.2), squeeze=False, sharey=True)
    grid = np.arange(1, max(max(s) for s in samples["curve_steps"] if len(s)) + 1)
    for ax, length in zip(axes[0], lengths):
        for (model, corpus, variant, init, n_mem), g in ordered(samples[samples["length"] == length]).groupby(
            ["model", "corpus", "variant", "init", "n_mem"], sort=False
        ):
            label = f"{row_name(dict(model=model, variant=variant, init=init, n_mem=n_mem))} {corpus}"
            ax.plot(grid, best_so_far_curves(g, grid).mean(0), label=label)
        ax.set(title=f"{length} tokens", xlabel="step", ylim=(0, 1.02))
    axes[0][0].set_ylabel("best teacher-forced accuracy")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def plot_tf_vs_greedy(summary: pd.DataFrame, paths: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    panels = list(ordered(summary).groupby(["model", "corpus"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((model, corpus), group) in zip(axes[0], panels):
        for i, ((variant, init, n_mem), g) in enumerate(group.groupby(["variant", "init", "n_mem"], sort=False)):
            name = row_name(dict(model=model, variant=variant, init=init, n_mem=n_mem))
            ax.plot(g["length"], g["mean_teacher_forcing_convergence"], "o-", color=f"C{i % 10}", label=name)
            ax.plot(g["length"], g["mean_greedy_convergence"], "s--", color=f"C{i % 10}")
        ax.set(title=f"{model} / {corpus}", xlabel="text length (tokens)", ylim=(-0.02, 1.02))
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
        ax.set_xticks(sorted(group["length"].unique()), labels=[str(x) for x in sorted(group["length"].unique())])
    axes[0][0].set_ylabel("mean accuracy")
    handles, _ = axes[0][-1].get_legend_handles_labels()
    styles = [Line2D([], [], color="k", marker="o", label="teacher forcing"),
              Line2D([], [], color="k", marker="s", linestyle="--", label="greedy")]
    axes[0][-1].legend(handles=handles + styles, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def save_figure(fig, paths: list) -> None:
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")


def compile_pdf(table: Path, figures: list[Path], out: Path) -> None:
    """Compile report.tex (the table plus figures) with pdflatex in a scratch folder."""
    pdflatex = shutil.which("pdflatex")
    if pdflatex is None:
        raise RuntimeError("pdflatex not found: install texlive-latex-base texlive-latex-recommended lmodern")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(table, Path(tmp) / "table.tex")
        for fig in figures:
            shutil.copy(fig, Path(tmp) / fig.name)
        (Path(tmp) / "report.tex").write_text(
            TEMPLATES.get_template("report.tex.j2").render(figures=[f.name for f in figures])
        )
        run = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "report.tex"],
                             cwd=tmp, capture_output=True, text=True)
        log.info("pdflatex output:\n%s", run.stdout[-5000:])
        if run.returncode != 0:
            raise RuntimeError(f"pdflatex failed (exit {run.returncode}); see the log above")
        shutil.copy(Path(tmp) / "report.pdf", out)


# Coconut's Table 1 order and names for soft_tokens.config.COCONUT_METHODS.
COCONUT_METHODS = {"nocot": "No-CoT", "cot": "CoT", "pause": "Pause as thought",
                   "coconut_nocurriculum": "Coconut w/o curriculum", "coconut": "Coconut"}


def summarize_coconut(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x dataset x method x stage: test accuracy and tokens per answer.

    `tokens` counts what the model produces after the question, as Coconut's "# tokens" does:
    continuous thoughts plus generated tokens (EOS included); `truncated_rate` is the share of answers
    cut off at max_new_tokens. `final` marks each method's last stage.
    """
    keys = ["model", "dataset", "method", "stage"]
    df = evals.assign(tokens=evals["latent_tokens"] + evals["generated_tokens"],
                      correct=evals["correct"].astype(float), truncated=evals["truncated"].astype(float))
    out = df.groupby(keys).agg(accuracy=("correct", "mean"), mean_tokens=("tokens", "mean"),
                               truncated_rate=("truncated", "mean"),
                               mean_latent_tokens=("latent_tokens", "mean"),
                               mean_generated_tokens=("generated_tokens", "mean"),
                               n_problems=("id", "nunique"), final_train_loss=("final_train_loss", "first"))
    out = out.reset_index()
    out["final"] = out["stage"] == out.groupby(keys[:3])["stage"].transform("max")
    return out


def coconut_rows(summary: pd.DataFrame | None) -> list[dict]:
    """Per model: one row per method (final stage), accuracy and tokens per dataset, as in Table 1."""
    if summary is None:
        return []
    final = summary[summary["final"]]
    datasets = list(dict.fromkeys(final["dataset"]))
    tables = []
    for model, group in final.groupby("model", sort=False):
        by = group.set_index(["method", "dataset"])
        rows = [{"method": name, "cells": [
            (fmt(100 * by.loc[(method, d), "accuracy"], 1), fmt(by.loc[(method, d), "mean_tokens"], 1))
            if (method, d) in by.index else ("--", "--") for d in datasets]}
            for method, name in COCONUT_METHODS.items() if method in set(group["method"])]
        tables.append({"model": latex_escape(model), "datasets": [latex_escape(d) for d in datasets],
                       "n": int(group["n_problems"].max()), "rows": rows, "findings": coconut_findings(group)})
    return tables


def coconut_findings(final: pd.DataFrame) -> list[str]:
    """Coconut against CoT and against itself without the curriculum, in test problems as well as
    points, so that a gap of one or two problems is read as what it is."""
    out = []
    for (model, dataset), g in final.groupby(["model", "dataset"], sort=False):
        by = g.set_index("method")
        if not {"coconut", "cot"} <= set(by.index):
            continue
        n = int(by.loc["coconut", "n_problems"])
        right = {m: round(by.loc[m, "accuracy"] * n) for m in by.index}
        tokens = by["mean_tokens"]
        out.append(
            f"On {dataset}, {model} with Coconut answers {right['coconut']} of {n} test problems "
            f"({100 * by.loc['coconut', 'accuracy']:.1f}\%) with {tokens['coconut']:.1f} tokens per answer; CoT "
            f"answers {right['cot']} ({100 * by.loc['cot', 'accuracy']:.1f}\%) with {tokens['cot']:.1f} tokens, "
            f"{tokens['cot'] / tokens['coconut']:.1f} times as many."
        )
        if "coconut_nocurriculum" in right:
            gap = right["coconut"] - right["coconut_nocurriculum"]
            out.append(
                f"Without the curriculum, Coconut answers {right['coconut_nocurriculum']} of {n} on {dataset}: "
                + ("the same number." if gap == 0 else
                   f"{abs(gap)} problem{'s' if abs(gap) > 1 else ''} {'fewer' if gap > 0 else 'more'} than with it.")
            )
    return [latex_escape_text(sentence) for sentence in out]


def plot_coconut_stages(summary: pd.DataFrame, paths: list) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(summary.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((model, dataset), group) in zip(axes[0], panels):
        by_method = {m: g.sort_values("stage") for m, g in group.groupby("method")}
        cot = by_method.get("cot")
        for method, style in (("coconut", "o-"), ("pause", "s--")):
            if method not in by_method:
                continue
            g = pd.concat([cot, by_method[method]]) if cot is not None else by_method[method]
            ax.plot(g["stage"], 100 * g["accuracy"], style, label=COCONUT_METHODS[method], fillstyle="none"
                    if method == "pause" else "full", markersize=8 if method == "pause" else 5)
        if "coconut_nocurriculum" in by_method:
            g = by_method["coconut_nocurriculum"]
            ax.plot(g["stage"], 100 * g["accuracy"], "D", color="C2", label=COCONUT_METHODS["coconut_nocurriculum"])
        if "nocot" in by_method:
            ax.axhline(100 * by_method["nocot"]["accuracy"].iloc[0], color="gray", linestyle="--",
                       label=COCONUT_METHODS["nocot"])
        ax.set(title=f"{model} / {dataset}", xlabel="curriculum stage (0 = CoT)", ylim=(-2, 102))
        ax.set_xticks(sorted(group["stage"].unique()))
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)
