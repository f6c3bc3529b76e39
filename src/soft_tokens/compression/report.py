"""The compression tracks' report: the converter and recursive-demo tables, and the e* /
compressor summary, figure and table; one report section each."""

import pandas as pd

from soft_tokens.report.figures import pyplot, save_figure
from soft_tokens.report.latex import fmt, render, table

CONDITIONS = ["no_context", "full_context", "estar", "compressor"]
CONDITION_NAMES = {"no_context": "none", "full_context": "full", "estar": "e*", "compressor": "compr."}
DEMO_CONDITIONS = {"none": "no prefix", "converter": "converter vector", "full_text": "full text"}
FIGURES = ("compressor_ce",)


def converter_table(converter: pd.DataFrame) -> str:
    c = converter.sort_values(["model", "layer", "arch"])
    rows = pd.DataFrame({
        "model": c["model"], "layer": c["layer"].astype(int), "arch": c["arch"], "MSE": c["mse"].map(lambda v: fmt(v, 4)),
        "cosine": c["cosine"].map(fmt), "top-1": c["top1"].map(fmt),
        "top-$k$": [f"{fmt(v)} (k={int(k)})" for v, k in zip(c["topk"], c["k"])],
    })
    return table(rows, "Converters from the hidden state of a token fed alone (layer index into the hidden states; "
                       "$-1$ is the last) to its input embedding, on held-out tokens. top-1 / top-$k$: the true token "
                       "among the cosine-nearest embedding rows.", "lrlrrrr")


def demo_table(demo: pd.DataFrame) -> str:
    """Mean continuation CE per model and condition, conditions as columns."""
    keys = ["model", "layer", "arch"]
    wide = demo.pivot_table(index=keys, columns="condition", values="ce_nats", aggfunc="mean")
    counts = demo.groupby(keys)["passage_id"].nunique().rename("passages")
    wide = wide.join(counts).reset_index()
    rows = pd.DataFrame({"model": wide["model"], "layer": wide["layer"].astype(int), "arch": wide["arch"],
                         "passages": wide["passages"].astype(int),
                         **{name: wide[c].map(fmt) for c, name in DEMO_CONDITIONS.items()}})
    return table(rows, "Recursive demo: mean cross-entropy (nats/token) of a passage's true continuation after a "
                       "follow-up prompt, with no prefix, with the earlier passage folded into one vector (mean-pooled "
                       "hidden states through the converter), and with the full earlier text.", "lrlrrrr")


def converter_section(converter: pd.DataFrame, demo: pd.DataFrame) -> str:
    return render("soft_tokens.compression", "converter.tex.j2", tables=[converter_table(converter), demo_table(demo)])


def summarize_compressor(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x arch x k: per-condition means over the held-out contexts, side by side."""
    keys = ["model", "arch", "k"]
    wide = evals.pivot_table(index=keys, columns="condition", values=["ce_nats", "topk_agreement"], aggfunc="mean")
    wide.columns = [f"{metric.split('_')[0]}_{condition}" for metric, condition in wide.columns]
    own = evals[evals["condition"] == "compressor"].groupby(keys)[["mse", "cosine", "norm_rmse"]].mean()
    counts = evals[evals["condition"] == "compressor"].groupby(keys).size().rename("n_contexts")
    return wide.join(own).join(counts).reset_index()


def compressor_table(summary: pd.DataFrame) -> str:
    columns = {("", "model"): summary["model"], ("", "arch"): summary["arch"], ("", "$k$"): summary["k"].astype(int),
               ("", "contexts"): summary["n_contexts"].astype(int)}
    for metric, group in (("ce", "CE (nats/token)"), ("topk", "top-$k$ agreement")):
        for c in CONDITIONS:
            columns[(group, CONDITION_NAMES[c])] = summary[f"{metric}_{c}"].map(fmt)
    columns[("to e*", "cosine")] = summary["cosine"].map(fmt)
    columns[("to e*", "norm RMSE")] = summary["norm_rmse"].map(fmt)
    rows = pd.DataFrame(columns)
    rows.columns = pd.MultiIndex.from_tuples(rows.columns)
    return table(rows, "Held-out contexts: cross-entropy of follow\\_text and top-$k$ agreement with the teacher (the "
                       "model given the full context) for no context, the full context, the optimised e* (oracle) and "
                       "the compressor's $k$ predicted vectors (compr.); and how close those vectors come to e*.",
                 "llrr" + "r" * 10, size="footnotesize")


def plot_compressor_ce(summary: pd.DataFrame, paths: list) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(summary), 3.2))
    width = 0.8 / len(CONDITIONS)
    for i, condition in enumerate(CONDITIONS):
        ax.bar([j + i * width for j in range(len(summary))], summary[f"ce_{condition}"], width,
               label=condition.replace("_", " "))
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(summary))],
                  labels=[f"{r.model}\n{r.arch}, k={r.k}" for r in summary.itertuples()], fontsize=8)
    ax.set_ylabel("CE of follow_text (nats/token)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def compressor_section(summary: pd.DataFrame) -> str:
    return render("soft_tokens.compression", "compressor.tex.j2", tables=[compressor_table(summary)], figures=FIGURES)
