"""Cramming's report: per-job means from the per-sample results, capacity from the searches' stages,
findings checked against the numbers, the figures and the section of the report."""

import math

import numpy as np
import pandas as pd

from soft_tokens.core.io import read_parquet
from soft_tokens.cramming.spec import INFORMATION_KEYS, MISMATCH_KEYS, SECTIONS, VARIANTS
from soft_tokens.report import stats
from soft_tokens.report.figures import pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, fmt, render, table
from soft_tokens.vocabulary import INITS

JOB_KEYS = ["model", "corpus", "length", "n_mem", "variant", "init", "optimizer"]
SEARCH_KEYS = ["model", "corpus", "n_mem", "variant", "init", "optimizer"]
PROTOCOL_KEYS = ["placement", "margin", "stop_accuracy", "keep", "text", "protocol_init", "step_budget", "restarts",
                 "dtype", "hidden_size", "vocab_size"]
ORDER = {"variant": {v: i for i, v in enumerate(VARIANTS)}, "init": {v: i for i, v in enumerate(INITS)}}
MEANS = {
    "teacher_forcing_convergence": "mean_teacher_forcing_convergence",
    "greedy_convergence": "mean_greedy_convergence",
    "greedy_convergence_bf16": "mean_greedy_convergence_bf16",
    **{k: f"mean_{k}" for k in INFORMATION_KEYS if k.endswith("bits") or k == "gain_tokens"},
    "steps": "mean_steps",
    "seconds": "mean_seconds",
    "converged": "converged_rate",
    **{m: m for m in MISMATCH_KEYS},
}
RATES = ("converged", *MISMATCH_KEYS)  # shares of texts: Wilson intervals
ACCURACIES = ("teacher_forcing_convergence", "greedy_convergence", "greedy_convergence_bf16")  # in [0, 1]
FIGURES = SECTIONS["cramming"]


def read_samples(paths) -> pd.DataFrame:
    """The rows of every file in `paths` (none: an empty frame, e.g. when no capacity search is configured)."""
    frames = [read_parquet(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=SEARCH_KEYS)


def mean_interval(g: pd.DataFrame, column: str) -> stats.Interval:
    """A job's mean of `column` over its texts: Wilson for shares; accuracies and steps are bounded
    ([0, 1], [1, step budget]), so texts all at a bound keep an interval of positive width."""
    if column in RATES:
        return stats.rate(g[column])
    if column in ACCURACIES:
        return stats.bounded_mean(g[column])
    if column == "steps":
        return stats.bounded_mean(g[column], 1, int(g["step_budget"].iloc[0]) * (1 + int(g["restarts"].iloc[0])))
    return stats.bootstrap(g[column])


def summarize(samples: pd.DataFrame) -> pd.DataFrame:
    """One row per job: means over its samples with 95% intervals (mean_interval; failed samples are
    NaN and skipped), the paired difference of teacher-forced and greedy accuracy on the same texts
    (`tf_minus_greedy`), plus counts."""
    rows = []
    for keys, g in samples.groupby(JOB_KEYS, sort=False):
        row = dict(zip(JOB_KEYS, keys))
        for column, name in MEANS.items():
            row.update(stats.columns(name, mean_interval(g, column)))
        row.update(stats.columns("tf_minus_greedy", stats.paired_difference(g["teacher_forcing_convergence"],
                                                                            g["greedy_convergence"])))
        row.update(n_samples=len(g), n_failed=int((g["status"] == "failed").sum()),
                   **g[PROTOCOL_KEYS].iloc[0].to_dict())
        rows.append(row)
    return pd.DataFrame(rows)


def interval(row, name: str) -> stats.Interval:
    """A summary row's mean `name` with its interval, over the texts that did not fail."""
    return stats.from_columns(row, name, row["n_samples"] - row["n_failed"])


def theoretical_capacity(hidden_size: int, vocab_size: int, n_mem: int) -> float:
    """Tokens N vectors of 16-bit floats could encode at most: N * hidden * 16 / log2(vocab)."""
    return n_mem * hidden_size * 16 / math.log2(vocab_size)


def exact_greedy_length(search: pd.DataFrame, threshold: float) -> int:
    """The longest length tried at which greedy decoding reaches `threshold` on average, in the
    model's dtype and (where measured) in bf16: a lower bound on the length decoded back exactly."""
    means = search.groupby("length")[["greedy_convergence", "greedy_convergence_bf16"]].mean()
    ok = (means["greedy_convergence"] >= threshold) & (means["greedy_convergence_bf16"].isna()
                                                      | (means["greedy_convergence_bf16"] >= threshold))
    return int(means.index[ok].max()) if ok.any() else 0


def capacity_table(stages: pd.DataFrame) -> pd.DataFrame:
    """One row per capacity search: the capacity it found, against the bound, with the mean
    reconstruction and information gain of its texts at that length."""
    rows = []
    for keys, search in stages.groupby(SEARCH_KEYS, sort=False):
        first = search.iloc[0]
        found = int(first["capacity_tokens"])
        at = search[search["length"] == found]
        by_length = search.groupby("length")["teacher_forcing_convergence"].mean().sort_index()
        bound = theoretical_capacity(int(first["hidden_size"]), int(first["vocab_size"]), keys[2])
        rows.append({
            **dict(zip(SEARCH_KEYS, keys)),
            **{k: first[k] for k in ("placement", "margin", "stop_accuracy", "keep", "text", "protocol_init",
                                     "step_budget", "restarts", "dtype", "threshold")},
            "capacity_tokens": found,
            "tokens_per_vector": found / keys[2],
            "theoretical_bound_tokens": bound,
            "utilisation": found / bound,
            "n_samples": int(search["sample_id"].nunique()),
            **stats.columns("mean_teacher_forcing_at_capacity",
                            stats.bounded_mean(at["teacher_forcing_convergence"])),
            **stats.columns("mean_greedy_at_capacity", stats.bounded_mean(at["greedy_convergence"])),
            **stats.columns("mean_greedy_bf16_at_capacity", stats.bounded_mean(at["greedy_convergence_bf16"])),
            **stats.columns("information_gain_bits_at_capacity", stats.bootstrap(at["information_gain_bits"])),
            "exact_greedy_tokens": exact_greedy_length(search, first["threshold"]),
            "lengths_tried": [int(x) for x in search.drop_duplicates("stage")["length"]],
            "shortest_failed": int(by_length[by_length < first["threshold"]].index.min())
            if (by_length < first["threshold"]).any() else 0,
            "total_steps": int(search["steps"].sum()),
        })
    return pd.DataFrame(rows)


def variant_label(row) -> str:
    """`bos` style: the variant, plus the init where the protocol does not prescribe it and it is not
    randn, and the mem count where not 1."""
    label = row["variant"]
    if row["protocol_init"] == "grid" and row["init"] != "randn":
        label += f"_{row['init']}"
    if row["n_mem"] != 1:
        label += f"_mem{row['n_mem']}"
    return label


def row_name(row) -> str:
    """`Llama-3.2-1B_bos` style, for prose and legends: model and variant label."""
    return f"{row['model']}_{variant_label(row)}"


def protocol(row) -> str:
    """The optimiser's name and what sets it apart where it matters for greedy decoding."""
    margin = f", margin {fmt(row['margin'], 1)}" if row["margin"] else ""
    stop = f", stop {fmt(row['stop_accuracy'], 2)}" if row["stop_accuracy"] < 1 else ""
    init = "" if row["protocol_init"] == "grid" else f", {row['protocol_init']} init"
    return f"{row['optimizer']} ({row['placement']}{init}{margin}{stop}, {row['dtype']})"


def ordered(df: pd.DataFrame) -> pd.DataFrame:
    keys = ["corpus", "model", "optimizer", "variant", "init", "n_mem"] + (["length"] if "length" in df else [])
    return df.sort_values(keys, key=lambda c: c.map(ORDER[c.name]) if c.name in ORDER else c, kind="stable")


def findings(summary: pd.DataFrame, capacity_df: pd.DataFrame, samples: pd.DataFrame) -> list[str]:
    """Sentences whose claims are checked against the numbers: a difference is stated only where the
    95% interval of the paired difference (the same texts both ways) excludes 0; a claim that does not
    hold is not made."""
    out = []
    for _, r in ordered(summary).iterrows():
        tf, greedy = interval(r, "mean_teacher_forcing_convergence"), interval(r, "mean_greedy_convergence")
        bf16, gap = interval(r, "mean_greedy_convergence_bf16"), interval(r, "tf_minus_greedy")
        early = [k for k in (0, 1) if r[f"greedy_mismatch@{k}"] >= 0.5]
        where = f"{row_name(r)} with {r['optimizer']} at {r['length']} tokens ({r['corpus']})"
        paired = f"TF - greedy {gap.mean:+.3f} (95% CI {gap.low:+.3f} to {gap.high:+.3f}, paired over the texts)"
        if greedy.mean >= 0.99 and tf.mean >= 0.99:
            out.append(f"For {where}, greedy decoding reproduces the text as teacher forcing does: "
                       f"{stats.text(greedy)} vs {stats.text(tf)}, after {r['mean_steps']:.0f} steps per text on "
                       "average" + bf16_clause(bf16, greedy, r["margin"]) + ".")
        elif not gap.excludes_zero():
            out.append(f"For {where}, greedy decoding ({stats.text(greedy)}) and teacher forcing "
                       f"({stats.text(tf)}) are within noise of each other: {paired}.")
        elif early:
            out.append(
                f"For {where}, teacher forcing reaches {stats.text(tf)} but greedy decoding only "
                f"{stats.text(greedy)} ({paired}): the greedy decode already misses "
                f"token{'s' if len(early) > 1 else ''} {'--'.join(map(str, early))} (greedy mismatch@0 = "
                f"{fmt(r['greedy_mismatch@0'], 2)}, greedy mismatch@1 = {fmt(r['greedy_mismatch@1'], 2)}; "
                f"teacher-forced mismatch@0 = {fmt(r['tf_mismatch@0'], 2)}, mismatch@1 = "
                f"{fmt(r['tf_mismatch@1'], 2)}), so one early miss derails the decode."
            )
        else:
            out.append(f"For {where}, teacher forcing reaches {stats.text(tf)} yet greedy decoding only "
                       f"{stats.text(greedy)} ({paired}): right under teacher forcing is not enough when the "
                       "decode rounds differently" + bf16_clause(bf16, greedy, r["margin"]) + ".")
    out += contrasts(summary, samples, "optimizer") + contrasts(summary, samples, "variant")
    if (summary["mean_teacher_forcing_convergence"] < 0.5).all():
        out.append("No configuration reached a mean teacher-forced accuracy of 0.5 within its step budget.")
    for _, c in (ordered(capacity_df) if len(capacity_df) else capacity_df).iterrows():
        who = f"{row_name(c)} with {c['optimizer']} ({c['corpus']}, {c['dtype']}, {c['n_samples']} texts)"
        if c["capacity_tokens"] == 0:
            out.append(f"For {who}, no tried length reached a mean teacher-forced accuracy of {c['threshold']:.2f} "
                       f"(lengths tried: {', '.join(map(str, c['lengths_tried']))}).")
            continue
        limit = (f"; {c['shortest_failed']} tokens failed" if c["shortest_failed"]
                 else " (the longest tried, so the capacity may be higher)")
        at = {name: stats.from_columns(c, name, c["n_samples"]) for name in (
            "mean_teacher_forcing_at_capacity", "mean_greedy_at_capacity", "mean_greedy_bf16_at_capacity")}
        out.append(
            f"{who} reconstructs {c['capacity_tokens']} tokens{limit}: {c['tokens_per_vector']:.0f} tokens per "
            f"vector, {100 * c['utilisation']:.1f}\\% of the bound of {c['theoretical_bound_tokens']:.0f} tokens, "
            f"{c['information_gain_bits_at_capacity']:.0f} bits of information gain per text; greedy decoding "
            f"reaches {stats.text(at['mean_greedy_at_capacity'])} there (teacher forcing "
            f"{stats.text(at['mean_teacher_forcing_at_capacity'])})"
            + bf16_clause(at["mean_greedy_bf16_at_capacity"], at["mean_greedy_at_capacity"], c["margin"]) + "."
            + ("" if c["exact_greedy_tokens"] == c["capacity_tokens"] else
               f" Greedy decoding is exact (a mean of at least {c['threshold']:.2f}, in fp32 and bf16) up to "
               f"{c['exact_greedy_tokens']} tokens of the lengths tried: at the capacity, a text that misses one "
               "token under teacher forcing derails the greedy decode from there on.")
        )
    return [escape_text(s) for s in out]


def bf16_clause(bf16: stats.Interval, greedy: stats.Interval, margin: float) -> str:
    """What decoding the same vectors in bf16 gives, as a clause (nothing where it was not measured);
    it blames bf16 rounding only where bf16 decodes worse beyond noise."""
    if bf16.n == 0 or np.isnan(bf16.mean):
        return ""
    if bf16.mean >= 0.99:
        return f"; decoded by the model in bf16 too ({bf16.mean:.3f})"
    if bf16.separated_from(greedy) and bf16.mean < greedy.mean:
        return (f"; decoded by the model in bf16 only {stats.text(bf16)}: a stop margin of {margin:g} logits does "
                "not cover bf16 rounding for every text")
    return f"; decoded in bf16 within noise of that ({stats.text(bf16)})"


def greedy_by_text(samples: pd.DataFrame, job) -> pd.Series:
    """A job's greedy accuracy per text (sample_id), NaN for a failed text."""
    mine = np.logical_and.reduce([samples[k] == job[k] for k in JOB_KEYS])
    return samples[mine].set_index("sample_id")["greedy_convergence"]


def contrasts(summary: pd.DataFrame, samples: pd.DataFrame, vary: str) -> list[str]:
    """Greedy accuracy of each value of `vary` (optimizer, with the init its protocol brings, or variant)
    against the first on otherwise identical jobs. Jobs that cram the same texts (same corpus, length,
    seed and text span) are compared by the paired difference over the texts: a direction where its
    interval excludes 0, "within noise" where it holds 0; protocols that cut different spans of the
    passages are compared by their marginal intervals."""
    varied = {vary, "init"} if vary == "optimizer" else {vary}
    keys = [k for k in JOB_KEYS if k not in varied]
    out = []
    for key, g in ordered(summary).groupby(keys, sort=False):
        first = g.iloc[0]
        where = row_name(first) if vary == "optimizer" else f"{first['model']} with {first['optimizer']}"
        base = greedy_by_text(samples, first)
        for _, other in g.iloc[1:].iterrows():
            mine = greedy_by_text(samples, other)
            texts = mine.index.intersection(base.index)
            paired = stats.paired_difference(mine[texts], base[texts]) if other["text"] == first["text"] else None
            out.append(
                f"For {where} at {first['length']} tokens ({first['corpus']}), "
                + stats.difference(f"{vary} {other[vary]}", interval(other, "mean_greedy_convergence"),
                                   f"{first[vary]}", interval(first, "mean_greedy_convergence"), "greedy accuracy",
                                   diff=paired)
            )
    return out


def best_so_far_curves(samples: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """Each sample's best accuracy so far on a common step grid (held after it stops), stacked."""
    return np.stack([
        np.interp(grid, r.curve_steps, np.maximum.accumulate(np.asarray(r.curve_accuracy, dtype=float)))
        for r in samples.itertuples() if len(r.curve_steps)
    ])


def plot_accuracy_vs_steps(samples: pd.DataFrame, paths: list) -> None:
    """One panel per corpus (row) and text length (column); one line per model, variant and optimiser,
    in the same colour in every panel, named once in a legend below the panels."""
    plt = pyplot()

    samples = ordered(samples)
    corpora, lengths = list(samples["corpus"].unique()), sorted(samples["length"].unique())
    kinds = ["model", "variant", "init", "n_mem", "optimizer"]
    names = {keys: f"{row_name(g.iloc[0])} {keys[-1]}" for keys, g in samples.groupby(kinds, sort=False)}
    colour = {keys: f"C{i % 10}" for i, keys in enumerate(names)}
    fig, axes = plt.subplots(len(corpora), len(lengths), figsize=(4 * len(lengths), 2.8 * len(corpora)),
                             squeeze=False, sharey=True, layout="constrained")
    grid = np.arange(1, max(max(s) for s in samples["curve_steps"] if len(s)) + 1)
    for row, corpus in zip(axes, corpora):
        for ax, length in zip(row, lengths):
            for keys, g in samples[(samples["corpus"] == corpus) & (samples["length"] == length)].groupby(
                    kinds, sort=False):
                curves = best_so_far_curves(g, grid)
                ax.plot(grid, curves.mean(0), color=colour[keys], label=names[keys])
                ax.fill_between(grid, *stats.bootstrap_band(curves), color=colour[keys], alpha=0.2, linewidth=0)
            ax.set(title=f"{corpus}, {length} tokens", ylim=(0, 1.02))
        row[0].set_ylabel("best TF accuracy")
    for ax in axes[-1]:
        ax.set_xlabel("optimiser step")
    handles = {h.get_label(): h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]}
    fig.legend(handles=[handles[n] for n in names.values() if n in handles], fontsize=7, loc="outside lower center",
               ncol=min(3, len(handles)), frameon=False)
    save_figure(fig, paths)


def style_handles() -> list:
    """Legend entries for the two line styles every TF-and-greedy figure draws."""
    from matplotlib.lines import Line2D

    return [Line2D([], [], color="k", marker="o", label="teacher forcing"),
            Line2D([], [], color="k", marker="s", linestyle="--", label="greedy")]


def length_axis(ax, lengths) -> None:
    """A log2 length axis ticked at the lengths drawn, written as integers (8, not 2^3)."""
    ticks = sorted({int(x) for x in lengths})
    ax.set_xscale("log", base=2)
    ax.minorticks_off()
    ax.set_xticks(ticks, labels=[str(x) for x in ticks])
    ax.set_xlabel("text length (tokens)")


def plot_tf_vs_greedy(summary: pd.DataFrame, paths: list) -> None:
    plt = pyplot()

    panels = list(ordered(summary).groupby(["model", "corpus"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((model, corpus), group) in zip(axes[0], panels):
        for i, ((optimizer, *_), g) in enumerate(
                group.groupby(["optimizer", "variant", "init", "n_mem"], sort=False)):
            name = f"{variant_label(g.iloc[0])} {optimizer}"
            for column, style in (("mean_teacher_forcing_convergence", "o-"), ("mean_greedy_convergence", "s--")):
                ax.errorbar(g["length"], g[column], yerr=stats.error_bars(g, column), fmt=style, color=f"C{i % 10}",
                            capsize=3, label=name if style == "o-" else None)
        ax.set(title=f"{model} / {corpus}", ylim=(-0.02, 1.02))
        length_axis(ax, group["length"])
    axes[0][0].set_ylabel("mean accuracy")
    handles, _ = axes[0][-1].get_legend_handles_labels()
    axes[0][-1].legend(handles=handles + style_handles(), fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def plot_capacity_search(stages: pd.DataFrame, paths: list) -> None:
    """Each search's stages: mean best TF and greedy accuracy against length, with 95% intervals."""
    from matplotlib.lines import Line2D

    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for i, (keys, search) in enumerate(stages.groupby(SEARCH_KEYS, sort=False)):
        per_stage = pd.DataFrame([  # each length is one stage of the search
            {"length": length, **{k: v for column in ("teacher_forcing_convergence", "greedy_convergence")
                                  for k, v in stats.columns(column, stats.bootstrap(g[column])).items()}}
            for length, g in search.groupby("length")])
        first = search.iloc[0]
        name = f"{row_name(first)} {first['optimizer']} ({first['corpus']}, {first['dtype']})"
        for column, style in (("teacher_forcing_convergence", "o-"), ("greedy_convergence", "s--")):
            ax.errorbar(per_stage["length"], per_stage[column], yerr=stats.error_bars(per_stage, column), fmt=style,
                        color=f"C{i % 10}", capsize=3, label=name if style == "o-" else None)
        ax.axvline(search["capacity_tokens"].iloc[0], color=f"C{i % 10}", alpha=0.3)
    extra = style_handles()
    if len(stages):
        threshold = stages["threshold"].iloc[0]
        ax.axhline(threshold, color="k", lw=0.5, ls=":")
        extra.append(Line2D([], [], color="k", lw=0.5, ls=":", label=f"threshold {threshold:g}"))
        length_axis(ax, stages["length"])
    ax.set(ylabel="mean accuracy at that length", ylim=(-0.02, 1.02))
    handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=handles + extra, fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)


def figures(samples: pd.DataFrame, summary: pd.DataFrame, stages: pd.DataFrame, paths: dict) -> None:
    """Every figure, each to the paths given for its name in FIGURES."""
    plot_accuracy_vs_steps(samples, paths["accuracy_vs_steps"])
    plot_tf_vs_greedy(summary, paths["tf_vs_greedy"])
    plot_capacity_search(stages, paths["capacity_search"])


def corpus_tables(corpus: str, group: pd.DataFrame) -> tuple[str, str]:
    """A corpus's reconstruction table (the seed's) and its where-greedy-fails table; every mean carries
    its 95% interval in brackets and n."""
    texts = group["n_samples"] - group["n_failed"]

    def cells(name: str, digits: int = 2) -> list[str]:
        return stats.cells(group, name, texts, digits)

    head = {"model": group["model"], "variant": group.apply(variant_label, axis=1),
            "optimizer": group["optimizer"], "length": group["length"].astype(int), "$n$": texts}
    failed = int(group["n_failed"].sum())
    excluded = f" ({failed} failed texts excluded)" if failed else ""
    rows = pd.DataFrame({
        **head,
        **{f"mismatch@{k}": cells(f"tf_mismatch@{k}") for k in (0, 1, 2)},
        "TF accuracy": cells("mean_teacher_forcing_convergence"),
        "greedy accuracy": cells("mean_greedy_convergence"),
    })
    reconstruction = table(rows, (
        f"Cramming on \\texttt{{{escape(corpus)}}}, the seed's table: mismatch@$k$, the share of texts whose "
        "token $k$ (0 = BOS; -- where unscored) is wrong under teacher forcing; TF and greedy accuracy, the mean "
        f"share of tokens right; $n$ texts{excluded}, 95\\% intervals in brackets (docs/cramming.md)."),
        "lllrrrrrrr", size="scriptsize")
    rows = pd.DataFrame({
        **head,
        **{f"greedy mismatch@{k}": cells(f"greedy_mismatch@{k}") for k in (0, 1, 2)},
        "TF $-$ greedy": cells("tf_minus_greedy"),
        "greedy (bf16)": cells("mean_greedy_convergence_bf16"),
        "steps": cells("mean_steps", 0),
    })
    greedy = table(rows, (
        f"Where greedy decoding goes wrong on \\texttt{{{escape(corpus)}}}: the share of texts whose greedy "
        "decode is wrong at token $k$ (not the seed's mismatch: one early miss spoils the rest), TF minus greedy "
        "accuracy (paired), greedy accuracy in bfloat16, and optimiser steps per text; 95\\% intervals."),
        "lllrrrrrrrr", size="scriptsize")
    return reconstruction, greedy


SEED_TABLE = ("% results/table.tex: the seed's cramming table, one float per corpus (soft-tokens, rule "
              "summarize_cramming; do not edit).\n% \\input it after \\usepackage{booktabs}; the whole report is "
              "results/report.tex.\n")


def seed_table(summary: pd.DataFrame) -> str:
    """results/table.tex: the seed's table (teacher-forced mismatch@k, TF and greedy accuracy) per corpus."""
    return SEED_TABLE + "\n".join(corpus_tables(corpus, group)[0]
                                   for corpus, group in ordered(summary).groupby("corpus", sort=False))


def tables(summary: pd.DataFrame, capacity_df: pd.DataFrame) -> list[str]:
    """Per corpus a reconstruction table and a where-greedy-fails table; then the capacity tables.
    Every mean carries its 95% interval in brackets and n."""
    out = [t for corpus, group in ordered(summary).groupby("corpus", sort=False) for t in corpus_tables(corpus, group)]
    if len(capacity_df):
        cap = ordered(capacity_df)
        n = cap["n_samples"]
        head = {"model": cap["model"], "variant": cap.apply(variant_label, axis=1), "optimizer": cap["optimizer"],
                "capacity": cap["capacity_tokens"].astype(int)}
        rows = pd.DataFrame({
            **head, "corpus": cap["corpus"],
            "failed at": cap["shortest_failed"].map(lambda v: str(v) if v else "--"),
            "exact greedy": cap["exact_greedy_tokens"].astype(int),
            "bound": cap["theoretical_bound_tokens"].map(lambda v: fmt(v, 0)),
            "util. (\\%)": cap["utilisation"].map(lambda v: fmt(100 * v, 1)),
        })
        threshold = fmt(float(capacity_df["threshold"].iloc[0]), 2)
        out.append(table(rows, (
            f"Capacity by search: the longest length whose mean best teacher-forced accuracy is $\\geq$ {threshold} "
            "(lengths doubled until one failed, then bisected; each stage warm-started from the vectors of the "
            "longest length that passed), the shortest length that failed, exact greedy: the longest length tried "
            "whose mean greedy accuracy (fp32 and bf16) is $\\geq$ the threshold too, and the bound "
            "$N \\cdot d \\cdot 16 / \\log_2 |V|$ tokens."), "lllrlrrrr", size="footnotesize"))
        at = {name: stats.cells(cap, name, n, digits)
              for name, digits in (("mean_teacher_forcing_at_capacity", 3), ("mean_greedy_at_capacity", 3),
                                   ("mean_greedy_bf16_at_capacity", 3), ("information_gain_bits_at_capacity", 0))}
        rows = pd.DataFrame({**head, "$n$": n, "TF": at["mean_teacher_forcing_at_capacity"],
                             "greedy": at["mean_greedy_at_capacity"], "greedy (bf16)": at["mean_greedy_bf16_at_capacity"],
                             "gain (bits)": at["information_gain_bits_at_capacity"]})
        out.append(table(rows, (
            "At the capacity length: mean teacher-forced and greedy accuracy (the model in its dtype and in "
            "bfloat16) and information gain (CE of the text alone minus CE given the vectors) over $n$ texts, "
            "with 95\\% bootstrap intervals."), "lllrrrrrr", size="footnotesize"))
    return out


def protocol_text(summary: pd.DataFrame, capacity_df: pd.DataFrame) -> str:
    """The section's opening: model, data, n and budget, read from the results themselves."""
    jobs = pd.concat([summary, capacity_df], ignore_index=True)
    optimisers = "; ".join(f"{protocol(r)}, at most {int(r['step_budget'])} steps"
                           + (f" and {int(r['restarts'])} restarts" if r["restarts"] else "")
                           for _, r in jobs.drop_duplicates("optimizer").iterrows())
    lengths = ", ".join(map(str, sorted(summary["length"].unique())))
    spans = {"start": "its first tokens", "second_half": "its second half of sentences"}
    texts = " or ".join(sorted({spans[t] for t in jobs["text"]}))
    return escape_text(
        f"Each text (a passage of the corpus from {texts} by protocol, BOS first, cut to {lengths} tokens) is crammed "
        f"into its own mem vectors in front of the frozen {', '.join(jobs['model'].unique())}, which must then "
        f"reproduce it from the vectors alone; {int(summary['n_samples'].max())} texts per row, optimised with "
        f"AdamW by protocol: {optimisers}. Means carry 95% intervals over the texts (bootstrap; Wilson for "
        "shares), and where two numbers come from the same texts (teacher forcing against greedy decoding, one "
        "optimiser or variant against another on the same span) a difference is stated only where the 95% interval "
        "of the paired difference over the texts excludes 0."
    )


def section(summary: pd.DataFrame, capacity_df: pd.DataFrame, samples: pd.DataFrame) -> str:
    return render("soft_tokens.cramming", "section.tex.j2", protocol=protocol_text(summary, capacity_df),
                  tables=tables(summary, capacity_df), findings=findings(summary, capacity_df, samples),
                  figures=FIGURES)
