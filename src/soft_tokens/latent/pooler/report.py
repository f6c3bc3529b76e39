"""The pooler track's report: accuracy, answer CE and compression per method and W with 95% intervals,
online compression against plain chain of thought, the figure against compression ratio, findings."""

import numpy as np
import pandas as pd

from soft_tokens.latent.pooler.spec import SECTIONS
from soft_tokens.report import stats
from soft_tokens.report.figures import plot_training_curves, pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, render, table

FIGURES = SECTIONS["pooler"]
KEYS = ["model", "dataset", "method", "window", "split"]
# On the gold reasoning, the model made to answer at its marker; then online.
METHOD_NAMES = {"none": "No reasoning", "full": "Full reasoning", "pooler": "Trained pooler",
                "sum": "Sum / sqrt(W)", "untrained": "Untrained pooler", "dropped": "Windows dropped",
                "other": "Another problem's vectors", "cot": "Plain CoT (own reasoning)",
                "online": "Online compression"}
TEACHER_FORCED = ("none", "full", "pooler", "sum", "untrained", "dropped", "other")
# The trained pooler against what it must beat, on a quantity: (other method, quantity).
CONTRASTS = (("dropped", "accuracy"), ("dropped", "answer_ce"), ("other", "accuracy"), ("other", "answer_ce"),
             ("sum", "accuracy"), ("sum", "answer_ce"), ("untrained", "accuracy"))
QUANTITIES = {"accuracy": ("accuracy (%)", 100, 1), "answer_ce": ("answer CE (nats/token)", 1, 3)}
# The names of the compared methods in a sentence.
PROSE = {"dropped": "dropped windows", "other": "another problem's vectors (the latent control)", "sum": "sum pooling",
         "untrained": "the untrained pooler"}
GOAL = {"accuracy_ratio": 0.9, "context_ratio": 0.6}


def ratio(a, b) -> stats.Interval:
    """mean(a) / mean(b) over paired problems, bootstrapped."""
    return stats.bootstrap(np.column_stack([a, b]), lambda x, y: np.mean(x) / np.mean(y))


def paired_contrast(a: pd.DataFrame, b: pd.DataFrame, quantity: str) -> stats.Interval:
    """a - b on `quantity` over the test problems both answered: McNemar's exact interval for accuracy,
    the bootstrap of the per-problem differences for answer CE."""
    column = "correct" if quantity == "accuracy" else quantity
    return stats.paired_units(a.set_index("id")[column], b.set_index("id")[column], rates=quantity == "accuracy")


def contrast_column(other: str, quantity: str) -> str:
    """The summary column of a row's `quantity` minus `other`'s at the same W (`accuracy_minus_sum`)."""
    return f"{quantity}_minus_{other}"


def summarize(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x dataset x method x W x split.

    accuracy: Wilson; answer_ce (teacher-forced methods): bootstrap over problems; compression:
    reasoning tokens / the positions that hold them (markers, vectors, plain rest), the ratio of means
    bootstrapped over problems (online: tokens written / positions kept). For online rows,
    context_ratio and accuracy_ratio compare with plain CoT on the same problems (paired bootstrap).
    For gold-reasoning rows with vectors, gap_kept is the share of the no-reasoning -> full-reasoning
    accuracy gap the method keeps, (method - none) / (full - none), paired over problems. The trained
    pooler's test rows carry its CONTRASTS, and full reasoning's its accuracy minus no reasoning's, as
    differences paired over the same problems (paired_contrast).
    """
    df = evals.assign(correct=evals["correct"].astype(float))
    cot, full, none = (df[df["method"] == m].set_index(["model", "dataset", "id"]) for m in ("cot", "full", "none"))
    groups = dict(tuple(df.groupby(KEYS, sort=False)))
    rows = []
    for keys, g in groups.items():
        model, dataset, method, window, split = keys
        contrasts = {"pooler": CONTRASTS, "full": (("none", "accuracy"),)}.get(method, ()) if split == "test" else ()
        row = {**dict(zip(KEYS, keys)), "n": len(g), "n_correct": int(g["correct"].sum()),
               **stats.columns("accuracy", stats.wilson(int(g["correct"].sum()), len(g))),
               **stats.columns("answer_ce", stats.bootstrap(g["answer_ce"])),
               "mean_vectors": g["vectors"].mean(),
               **stats.columns("mean_positions", stats.bootstrap(g["positions"])),
               **stats.columns("positions_saved", stats.bootstrap(g["reasoning_tokens"] - g["positions"]))}
        held = g["positions"] > 0
        row.update(stats.columns("compression", ratio(g.loc[held, "reasoning_tokens"], g.loc[held, "positions"])
                                 if held.any() else stats.Interval(np.nan, np.nan, np.nan, 0)))
        paired = [(keys[0], keys[1], i) for i in g["id"]]
        if keys[2] in ("pooler", "sum", "untrained", "dropped", "other") and keys[4] == "test":
            row.update(stats.columns("gap_kept", stats.gap_share(none.loc[paired, "correct"].to_numpy(),
                                                                 g["correct"].to_numpy(),
                                                                 full.loc[paired, "correct"].to_numpy())))
        if keys[2] == "online":
            base = cot.loc[paired]
            row.update(stats.columns("context_ratio", ratio(g["positions"].to_numpy(), base["positions"].to_numpy())))
            row.update(stats.columns("accuracy_ratio", ratio(g["correct"].to_numpy(), base["correct"].to_numpy())))
        for other, quantity in contrasts:
            if (model, dataset, other, window, split) in groups:
                row.update(stats.columns(contrast_column(other, quantity),
                                         paired_contrast(g, groups[(model, dataset, other, window, split)], quantity)))
        rows.append(row)
    return pd.DataFrame(rows)


def interval(row, name: str) -> stats.Interval:
    return stats.from_columns(row, name, row["n"])


def contrast(row, other: str, quantity: str, scale: float) -> stats.Interval | None:
    """The row's paired difference against `other`, scaled; None where the summary does not carry it."""
    diff = stats.from_columns_or_none(row, contrast_column(other, quantity), row["n"])
    return diff and diff.scaled(scale)


def ordered(group: pd.DataFrame, methods) -> pd.DataFrame:
    """Rows in the table's order: methods as listed, each over W ascending, training split last."""
    rank = {m: i for i, m in enumerate(methods)}
    g = group[group["method"].isin(rank)]
    return g.assign(_r=g["method"].map(rank), _s=g["split"] != "test").sort_values(["_s", "_r", "window"]).drop(
        columns=["_r", "_s"])


def tables(summary: pd.DataFrame) -> list[dict]:
    """Per model x dataset: the gold-reasoning table, the online table and the findings."""
    out = []
    for (model, dataset), group in summary.groupby(["model", "dataset"], sort=False):
        forced = ordered(group, TEACHER_FORCED)
        name = [METHOD_NAMES[m] + (" (train split)" if s != "test" else "")
                for m, s in zip(forced["method"], forced["split"])]
        first = pd.DataFrame({"method": name, "W": forced["window"].tolist(), "n": forced["n"].tolist(),
                              r"accuracy (\%)": stats.cells(forced, "accuracy", forced["n"], 1, scale=100),
                              "answer CE": stats.cells(forced, "answer_ce", forced["n"]),
                              "gap kept": stats.cells(forced, "gap_kept", forced["n"], 2),
                              "compression": stats.cells(forced, "compression", forced["n"], 2),
                              "positions saved": stats.cells(forced, "positions_saved", forced["n"], 1)})
        caption = (f"{escape(model)} on {escape(dataset)}, the gold reasoning given (every full window compressed; "
                   "a ragged rest plain) and the model made to answer at the answer marker: exact-match accuracy "
                   "(Wilson 95\\% interval), mean CE of the answer tokens (nats/token), the share of the no-reasoning "
                   "$\\to$ full-reasoning accuracy gap kept (paired), compression (reasoning tokens per position "
                   "that holds them) and positions saved per problem, bootstrapped over problems. W = 1 is the "
                   "uncompressed trace.")
        online = ordered(group, ("cot", "online"))
        second = pd.DataFrame({"method": [METHOD_NAMES[m] for m in online["method"]], "W": online["window"].tolist(),
                               "n": online["n"].tolist(),
                               r"accuracy (\%)": stats.cells(online, "accuracy", online["n"], 1, scale=100),
                               "context (positions)": stats.cells(online, "mean_positions", online["n"], 1),
                               "context / CoT": stats.cells(online, "context_ratio", online["n"], 2),
                               "accuracy / CoT": stats.cells(online, "accuracy_ratio", online["n"], 2)})
        online_caption = (f"{escape(model)} on {escape(dataset)}, reasoning written by the model itself: plain CoT, "
                          "and online compression, where each completed window of W reasoning tokens is pooled by "
                          "the trained pooler and spliced in on the KV cache. Context: positions after the question "
                          "the attention reads at the end (mean, bootstrap interval); ratios to plain CoT on the same "
                          "problems with paired bootstrap 95\\% intervals.")
        out.append({"tables": [table(first, caption, "lrrlllll", size="scriptsize"),
                               table(second, online_caption, "lrrllll", size="footnotesize")],
                    "findings": findings(group)})
    return out


def findings(group: pd.DataFrame) -> list[str]:
    """What the vectors carry (against dropped windows, sum pooling and the untrained pooler), how much
    of the full-vs-none gap they keep, memorisation (train beside test) and the online goal."""
    test = group[group["split"] == "test"]
    by = {(r["method"], r["window"]): r for _, r in test.iterrows()}
    out = []
    full, none = by.get(("full", 1)), by.get(("none", 1))
    if full is not None and none is not None:
        out.append(stats.difference("Full reasoning", interval(full, "accuracy").scaled(100), "no reasoning",
                                    interval(none, "accuracy").scaled(100), "accuracy (%)", 1,
                                    contrast(full, "none", "accuracy", 100)))
    for window in sorted(test.loc[test["method"] == "pooler", "window"]):
        pooler = by[("pooler", window)]
        out.append(gap_sentence(window, pooler, by.get(("sum", window)), by.get(("dropped", window)), full, none))
        for other, quantity in CONTRASTS:
            if (other, window) in by:
                label, scale, digits = QUANTITIES[quantity]
                out.append(stats.difference(f"At W = {window}, the trained pooler",
                                            interval(pooler, quantity).scaled(scale), PROSE[other],
                                            interval(by[(other, window)], quantity).scaled(scale), label, digits,
                                            contrast(pooler, other, quantity, scale)))
        train = group[(group["method"] == "pooler") & (group["window"] == window) & (group["split"] == "train")]
        if len(train):
            t = train.iloc[0]
            out.append(f"Memorisation at W = {window}: the trained pooler answers {t['n_correct']} of its {t['n']} "
                       f"training problems ({stats.text(interval(t, 'accuracy').scaled(100), 1)}) and "
                       f"{pooler['n_correct']} of {pooler['n']} test problems.")
        if ("online", window) in by:
            o = by[("online", window)]
            acc, ctx = interval(o, "accuracy_ratio"), interval(o, "context_ratio")
            if np.isnan(acc.mean):
                out.append(f"Online at W = {window}: the accuracy ratio to plain CoT is not measured, since plain "
                           f"CoT answers none of the {o['n']} test problems right; it reads "
                           f"{stats.text(ctx, 2)} of CoT's context.")
            else:
                out.append(f"Online at W = {window}: accuracy {stats.text(acc, 2)} of plain CoT's at "
                           f"{stats.text(ctx, 2)} of its context; the goal (at least {GOAL['accuracy_ratio']} of "
                           f"CoT's accuracy at most {GOAL['context_ratio']} of its context) {goal_verdict(acc, ctx)}.")
    return [escape_text(sentence) for sentence in out]


def gap_sentence(window: int, pooler, summed, dropped, full, none) -> str:
    """The share of the no-reasoning -> full-reasoning accuracy gap the pooler keeps (sum pooling's and
    dropped windows' beside it); not measured where the two answer alike, so that there is no gap."""
    kept = interval(pooler, "gap_kept")
    if np.isnan(kept.mean):
        alike = (f" ({100 * full['accuracy']:.1f}% and {100 * none['accuracy']:.1f}%)"
                 if full is not None and none is not None else "")
        return (f"At W = {window}, the share of the accuracy gap the trained pooler keeps is not measured: full "
                f"and no reasoning answer alike on these problems{alike}, so there is no gap to keep.")
    others = [f"{name} {row['gap_kept']:.2f}" for name, row in (("sum pooling", summed), ("windows dropped", dropped))
              if row is not None]
    return (f"At W = {window}, the trained pooler keeps {stats.text(kept, 2)} of the accuracy gap between no "
            "reasoning and full reasoning" + (f" ({', '.join(others)})." if others else "."))


def goal_verdict(accuracy: stats.Interval, context: stats.Interval) -> str:
    """Met when both ratios' intervals lie inside the goal, missed when either lies wholly outside it,
    otherwise undecided at this n."""
    if accuracy.low >= GOAL["accuracy_ratio"] and context.high <= GOAL["context_ratio"]:
        return "is met"
    if accuracy.high < GOAL["accuracy_ratio"] or context.low > GOAL["context_ratio"]:
        return "is missed"
    means = accuracy.mean >= GOAL["accuracy_ratio"] and context.mean <= GOAL["context_ratio"]
    return (f"is neither met nor missed at n = {accuracy.n}: the means {'meet' if means else 'miss'} it, but an "
            "interval straddles a bound")


def figures(summary: pd.DataFrame, curves: pd.DataFrame, paths: dict) -> None:
    """Accuracy and answer CE against compression, per method over W; full reasoning at 1, no reasoning
    as a line; 95% error bars. Then each pooler's training curve."""
    plot_training_curves(curves, "epoch", {"train_loss": "training CE (nats/token)"}, ["model", "dataset"],
                         ["window"], paths["pooler_training"])
    plt = pyplot()
    test = summary[summary["split"] == "test"]
    panels = list(test.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 3.4 * len(panels)), squeeze=False)
    for (ax_acc, ax_ce), ((model, dataset), group) in zip(axes, panels):
        for method, fmt in (("pooler", "o-"), ("sum", "s--"), ("untrained", "^:"), ("dropped", "x-.")):
            g = group[group["method"] == method].sort_values("window")
            if g.empty:
                continue
            x = g["compression"]
            ax_acc.errorbar(x, 100 * g["accuracy"], yerr=100 * stats.error_bars(g, "accuracy"), fmt=fmt, capsize=3,
                            label=METHOD_NAMES[method])
            ax_ce.errorbar(x, g["answer_ce"], yerr=stats.error_bars(g, "answer_ce"), fmt=fmt, capsize=3,
                           label=METHOD_NAMES[method])
        for method, style in (("full", dict(color="black", linestyle="-")),
                              ("none", dict(color="gray", linestyle="--"))):
            row = group[group["method"] == method]
            if len(row):
                r = row.iloc[0]
                ax_acc.axhline(100 * r["accuracy"], label=METHOD_NAMES[method], **style)
                ax_ce.axhline(r["answer_ce"], label=METHOD_NAMES[method], **style)
        ax_acc.set(title=f"{model} / {dataset}", xlabel="compression (reasoning tokens per position)",
                   ylabel="test accuracy (%), 95% intervals", ylim=(-2, 102))
        ax_ce.set(title=f"{model} / {dataset}", xlabel="compression (reasoning tokens per position)",
                  ylabel="answer CE (nats/token)")
        # Each window named once, at the trained pooler's point (every method shares its windows).
        pooled = group[group["method"] == "pooler"]
        for xi, yi, w in zip(pooled["compression"], 100 * pooled["accuracy"], pooled["window"]):
            ax_acc.annotate(f"W={w}", (xi, yi), fontsize=7, xytext=(6, 4), textcoords="offset points", ha="left")
    axes[0][1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths["pooler_compression"])


def protocol_text(summary: pd.DataFrame, p: dict) -> str:
    test = summary[(summary["split"] == "test") & (summary["method"] == "full")]
    n = ", ".join(f"{d}: {int(r)}" for d, r in zip(test["dataset"], test["n"]))
    main = ("the Coconut track's CoT model (stage 0) of the same dataset" if p["main"] == "cot"
            else "the prepared model")
    compressed = "every step" if p["compress_fraction"] == 1 else f"the first {p['compress_fraction']:g} of the steps"
    return escape_text(
        f"The main LM, frozen, is {main} ({', '.join(summary['model'].unique())}). A pooler, a copy of it with LoRA "
        f"(r = {p['lora_r']}) and its embedding table trained, reads each window of W reasoning tokens "
        f"(W in {p['windows']}) {'with the text before it' if p['context'] else 'on its own'} and "
        f"{p['pooling']}-pools its last hidden states into one vector"
        f"{' times a learned scale' if p['output_scale'] else ''}; the vectors replace "
        f"{compressed} between two markers (a ragged last window stays plain). Each W trains for {p['epochs']} "
        f"epochs at lr {p['lr']:g}, batch {p['batch_size']} x {p['grad_accumulation']} accumulated, on next-token CE "
        f"of what follows the compressed part, {p['max_prefixes']} prefix lengths per training trace. Test problems "
        f"per dataset: {n}. Methods answer the same test problems, so a difference between them is stated only where "
        "the 95% interval of the paired difference excludes 0 (McNemar's exact interval for accuracy).")


def section(summary: pd.DataFrame, protocol: dict) -> str:
    per_model = tables(summary)
    return render("soft_tokens.latent.pooler", "section.tex.j2", protocol=protocol_text(summary, protocol),
                  tables=per_model, findings=[f for t in per_model for f in t["findings"]], figures=FIGURES)
