"""The compression tracks' report: the converter and recursive-demo tables, and the e* /
compressor summary, figure and table; one report section each."""

import numpy as np
import pandas as pd

from soft_tokens.compression.spec import SECTIONS
from soft_tokens.report import stats
from soft_tokens.report.figures import plot_training_curves, pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, render, table

CONDITIONS = ["no_context", "full_context", "estar", "compressor"]
CONDITION_NAMES = {"no_context": "none", "full_context": "full context", "estar": "e* (oracle)",
                   "compressor": "compressor"}
ARCH_NAMES = {"hyper": "HyperPromptNet", "qattn": "query attention"}
DEMO_CONDITIONS = {"none": "no prefix", "converter": "converter vector", "full_text": "full text"}
FIGURES = SECTIONS["compressor"]


def summarize_converter(tokens: pd.DataFrame) -> pd.DataFrame:
    """One row per model x layer x arch: means over the held-out tokens with 95% intervals
    (bootstrap for MSE and cosine, Wilson for the top-1 / top-k hit rates)."""
    rows = []
    for (model, layer, arch), g in tokens.groupby(["model", "layer", "arch"], sort=True):
        rows.append({"model": model, "layer": int(layer), "arch": arch, "k": int(g["k"].iloc[0]), "n_heldout": len(g),
                     **stats.columns("mse", stats.bootstrap(g["mse"])),
                     **stats.columns("cosine", stats.bootstrap(g["cosine"])),
                     **stats.columns("top1", stats.rate(g["top1"])), **stats.columns("topk", stats.rate(g["topk"]))})
    return pd.DataFrame(rows)


def converter_table(summary: pd.DataFrame) -> str:
    def cells(name, digits=3):
        return stats.cells(summary, name, summary["n_heldout"], digits)

    rows = pd.DataFrame({
        "model": summary["model"], "layer": summary["layer"], "arch": summary["arch"], "$n$": summary["n_heldout"],
        "MSE": cells("mse", 4), "cosine": cells("cosine"), "top-1": cells("top1"),
        "top-$k$": cells("topk"),
    })
    k = int(summary["k"].iloc[0])
    return table(rows, "Converters from the hidden state of a token fed alone (layer index into the hidden states; "
                       "$-1$ is the last) to its input embedding, on $n$ held-out tokens: MSE and cosine to the true "
                       f"embedding; top-1 / top-$k$ ($k$ = {k}): the true token among the cosine-nearest embedding "
                       "rows. Brackets: 95\\% intervals (bootstrap; Wilson for top-1 / top-$k$).", "lrlrrrrr",
                 size="footnotesize")


def demo_intervals(demo: pd.DataFrame) -> pd.DataFrame:
    """Per model x layer x arch and condition: mean continuation CE over passages with its interval; the
    converter's row also carries its CE minus each other condition's, paired over the same passages
    (`ce_nats_minus_none`, `ce_nats_minus_full_text`)."""
    rows = []
    for (model, layer, arch), converter in demo.groupby(["model", "layer", "arch"], sort=False):
        ce = converter.pivot(index="passage_id", columns="condition", values="ce_nats")
        for condition, g in converter.groupby("condition", sort=False):
            row = {"model": model, "layer": int(layer), "arch": arch, "condition": condition,
                   "n_passages": g["passage_id"].nunique(), **stats.columns("ce_nats", stats.bootstrap(g["ce_nats"]))}
            if condition == "converter":
                for other in ("none", "full_text"):
                    row.update(stats.columns(f"ce_nats_minus_{other}", stats.paired_units(ce["converter"], ce[other])))
            rows.append(row)
    return pd.DataFrame(rows)


def demo_table(intervals: pd.DataFrame) -> str:
    """Mean continuation CE per model and condition, conditions as rows."""
    rows = pd.DataFrame({
        "model": intervals["model"], "layer": intervals["layer"], "arch": intervals["arch"],
        "condition": intervals["condition"].map(DEMO_CONDITIONS), "$n$": intervals["n_passages"],
        "CE (nats/token)": stats.cells(intervals, "ce_nats", intervals["n_passages"]),
    })
    return table(rows, "Recursive demo: mean cross-entropy (nats/token) of a passage's true continuation after a "
                       "follow-up prompt over $n$ passages, with no prefix, with the earlier passage folded into one "
                       "vector (mean-pooled hidden states through the converter), and with the full earlier text; "
                       "brackets: 95\\% bootstrap intervals over the passages.", "lrllrr")


def demo_findings(intervals: pd.DataFrame) -> list[str]:
    """The converter vector against no prefix and against the full text, per converter, by the
    difference paired over the passages."""
    out = []
    for (model, layer, arch), g in intervals.groupby(["model", "layer", "arch"], sort=False):
        by = {r["condition"]: stats.from_columns(r, "ce_nats", r["n_passages"]) for _, r in g.iterrows()}
        converter = g[g["condition"] == "converter"].iloc[0]
        paired = {other: stats.from_columns(converter, f"ce_nats_minus_{other}", converter["n_passages"])
                  for other in ("none", "full_text")}
        name = f"The converter vector ({model}, layer {layer}, {arch})"
        out.append(stats.difference(name, by["converter"], "no prefix", by["none"], "continuation CE",
                                    diff=paired["none"]))
        out.append(stats.difference(name, by["converter"], "the full earlier text", by["full_text"],
                                    "continuation CE", diff=paired["full_text"]))
    return [escape_text(sentence) for sentence in out]


def converter_section(converter_summary: pd.DataFrame, demo_summary: pd.DataFrame) -> str:
    return render("soft_tokens.compression", "converter.tex.j2",
                  tables=[converter_table(converter_summary), demo_table(demo_summary)],
                  findings=demo_findings(demo_summary), figures=SECTIONS["converter"])


def plot_converter_training(curves: pd.DataFrame, paths: list) -> None:
    plot_training_curves(curves, "epoch", {"train_loss": "training MSE"}, ["model"], ["layer", "arch"], paths)


def plot_compressor_training(curves: pd.DataFrame, paths: list) -> None:
    plot_training_curves(curves, "epoch", {"train_loss": "training loss"}, ["model"], ["arch"], paths)


def estar_curves(table: pd.DataFrame) -> pd.DataFrame:
    """e*'s optimisation curves in long form: per optimised context and step, the best teacher-forced
    accuracy so far and the loss, each held at its last value after the context stopped (converged or
    out of patience) up to the longest run of its model, so that a mean over contexts stays a mean over
    all of them."""
    if "accuracy_curve" not in table:
        models = sorted(table["model"].unique())
        raise ValueError(f"results/estar/{{{','.join(models)}}}/estar.parquet was built before e* kept its curves; "
                         "remove that folder's estar.* so build_estar rebuilds it (the compressors retrain after it)")
    rows = []
    for model, group in table[table["has_estar"]].groupby("model", sort=False):
        longest = int(group["accuracy_curve"].map(len).max())
        for r in group.itertuples():
            best = np.maximum.accumulate(np.asarray(r.accuracy_curve, dtype=float))
            loss = np.asarray(r.loss_curve, dtype=float)
            pad = longest - len(best)
            rows.append(pd.DataFrame({"model": model, "id": r.id, "split": r.split, "step": np.arange(1, longest + 1),
                                      "accuracy": np.pad(best, (0, pad), mode="edge"),
                                      "loss": np.pad(loss, (0, pad), mode="edge")}))
    return pd.concat(rows, ignore_index=True)


def plot_estar_optimisation(table: pd.DataFrame, paths: list) -> None:
    plot_training_curves(estar_curves(table), "step", {"accuracy": "best TF accuracy so far", "loss": "loss"},
                         ["model"], ["split"], paths, xlabel="optimiser step")


def summarize_compressor(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x arch x k: each condition's mean CE and top-k agreement over the held-out
    contexts, the share of the no-context -> full-context CE gap that e* and the compressor close,
    the compressor's CE minus no context's (paired over the contexts) and its distance to e*; every
    mean with its 95% bootstrap interval over contexts."""
    rows = []
    for (model, arch, k), g in evals.groupby(["model", "arch", "k"], sort=False):
        wide = {metric: g.pivot(index="context", columns="condition", values=metric)
                for metric in ("ce_nats", "topk_agreement")}
        row = {"model": model, "arch": arch, "k": k, "n_contexts": len(wide["ce_nats"])}
        for c in CONDITIONS:
            row.update(stats.columns(f"ce_{c}", stats.bootstrap(wide["ce_nats"][c])))
            row.update(stats.columns(f"topk_{c}", stats.bootstrap(wide["topk_agreement"][c])))
        ce = wide["ce_nats"]
        for c in ("estar", "compressor"):
            row.update(stats.columns(f"gap_share_{c}", stats.gap_share(ce["no_context"], ce[c], ce["full_context"])))
        row.update(stats.columns("ce_compressor_minus_no_context", stats.paired_units(ce["compressor"], ce["no_context"])))
        own = g[g["condition"] == "compressor"]
        for metric in ("mse", "cosine", "norm_rmse"):
            row.update(stats.columns(metric, stats.bootstrap(own[metric])))
        rows.append(row)
    return pd.DataFrame(rows)


def compressor_tables(summary: pd.DataFrame) -> list[str]:
    """Per model and k: one row per condition (the shared ones once, then each compressor), CE and
    top-k agreement with intervals, the gap share and the distance to e*."""
    out = []
    for (model, k), group in summary.groupby(["model", "k"], sort=False):
        first = group.iloc[0]
        n = int(first["n_contexts"])
        lines = [{"condition": CONDITION_NAMES[c], "row": first, "cond": c} for c in CONDITIONS[:3]]
        lines += [{"condition": ARCH_NAMES.get(r["arch"], r["arch"]), "row": r, "cond": "compressor"}
                  for _, r in group.iterrows()]
        rows = pd.DataFrame({
            "condition": [line["condition"] for line in lines],
            "CE (nats/token)": [stats.cell(stats.from_columns(line["row"], f"ce_{line['cond']}", n)) for line in lines],
            "top-$k$ agreement": [stats.cell(stats.from_columns(line["row"], f"topk_{line['cond']}", n))
                                  for line in lines],
            "gap closed": ["--" if line["cond"] in ("no_context", "full_context") else
                           stats.cell(stats.from_columns(line["row"], f"gap_share_{line['cond']}", n), 2)
                           for line in lines],
            "cosine to e*": ["--" if line["cond"] != "compressor" else
                             stats.cell(stats.from_columns(line["row"], "cosine", n), 2) for line in lines],
        })
        out.append(table(rows, (
            f"{escape(model)}, $k$ = {int(k)} vectors, {n} held-out contexts: cross-entropy of follow\\_text and "
            "top-$k$ agreement with the teacher (the model given the full context) with no context, the full "
            "context, the optimised e* (an oracle: fitted on these very follow texts) and each compressor's "
            "predicted vectors; gap closed: (none $-$ method) / (none $-$ full) on the mean CE; cosine of the "
            "predicted vectors to e*. Brackets: 95\\% bootstrap intervals over the contexts (paired for the gap)."),
            "lrrrr"))
    return out


def compressor_findings(summary: pd.DataFrame) -> list[str]:
    """Each compressor against no context and against the full context, and the gap it closes."""
    out = []
    for _, r in summary.iterrows():
        n = int(r["n_contexts"])
        name = f"{ARCH_NAMES.get(r['arch'], r['arch'])} ({r['model']}, k = {r['k']})"
        ce = {c: stats.from_columns(r, f"ce_{c}", n) for c in CONDITIONS}
        gap = stats.from_columns(r, "gap_share_compressor", n)
        verdict = ("closes a share of the gap above zero" if gap.low > 0 else
                   "does not close a share of the gap distinguishable from zero")
        out.append(f"{name} {verdict}: {stats.text(gap, 2)} of the way from no context to the full context.")
        out.append(stats.difference(name, ce["compressor"], "no context", ce["no_context"], "follow-text CE",
                                    diff=stats.from_columns(r, "ce_compressor_minus_no_context", n)))
    return [escape_text(sentence) for sentence in out]


def plot_compressor_ce(summary: pd.DataFrame, paths: list) -> None:
    """Mean held-out CE per condition with 95% intervals: the shared conditions, then each compressor."""
    plt = pyplot()
    panels = list(summary.groupby(["model", "k"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, ((model, k), group) in zip(axes[0], panels):
        first = group.iloc[0]
        bars = [(CONDITION_NAMES[c], first, f"ce_{c}") for c in CONDITIONS[:3]]
        bars += [(ARCH_NAMES.get(r["arch"], r["arch"]), r, "ce_compressor") for _, r in group.iterrows()]
        means = [row[col] for _, row, col in bars]
        errors = [[row[col] - row[f"{col}_low"] for _, row, col in bars],
                  [row[f"{col}_high"] - row[col] for _, row, col in bars]]
        ax.bar(range(len(bars)), means, yerr=errors, capsize=4, color=[f"C{i}" for i in range(len(bars))])
        ax.set_xticks(range(len(bars)), labels=[name for name, _, _ in bars], fontsize=8, rotation=20)
        ax.set(title=f"{model}, k = {k}", ylabel="CE of follow_text (nats/token)")
    save_figure(fig, paths)


def compressor_section(summary: pd.DataFrame, protocol: dict) -> str:
    """The section: what was run (from the rule's parameters), the tables, the figure, the findings."""
    return render("soft_tokens.compression", "compressor.tex.j2", protocol=protocol, tables=compressor_tables(summary),
                  findings=compressor_findings(summary), figures=FIGURES)
