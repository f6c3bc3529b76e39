"""Cramming's report: per-job means and capacity from the per-sample results, findings checked
against the numbers, the two figures and the section of the report."""

import math

import numpy as np
import pandas as pd

from soft_tokens.cramming.metrics import INFORMATION_KEYS, MISMATCH_KEYS
from soft_tokens.report.figures import pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, fmt, render, table
from soft_tokens.workflow import INITS, VARIANTS

JOB_KEYS = ["model", "corpus", "length", "n_mem", "variant", "init"]
CAPACITY_KEYS = ["model", "corpus", "n_mem", "variant", "init"]
ORDER = {"variant": {v: i for i, v in enumerate(VARIANTS)}, "init": {v: i for i, v in enumerate(INITS)}}
MEANS = {
    "teacher_forcing_convergence": "mean_teacher_forcing_convergence",
    "greedy_convergence": "mean_greedy_convergence",
    **{k: f"mean_{k}" for k in INFORMATION_KEYS if k.endswith("bits") or k == "gain_tokens"},
    "steps": "mean_steps",
    "seconds": "mean_seconds",
    "converged": "converged_rate",
    **{m: m for m in MISMATCH_KEYS},
}
FIGURES = ("accuracy_vs_steps", "tf_vs_greedy")


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
    return [escape_text(s) for s in out]


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


def best_so_far_curves(samples: pd.DataFrame, grid: np.ndarray) -> np.ndarray:
    """Each sample's best accuracy so far on a common step grid (held after it stops), stacked."""
    return np.stack([
        np.interp(grid, r.curve_steps, np.maximum.accumulate(np.asarray(r.curve_accuracy, dtype=float)))
        for r in samples.itertuples() if len(r.curve_steps)
    ])


def plot_accuracy_vs_steps(samples: pd.DataFrame, paths: list) -> None:
    plt = pyplot()

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
    from matplotlib.lines import Line2D

    plt = pyplot()

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


def figures(samples: pd.DataFrame, summary: pd.DataFrame, paths: dict) -> None:
    """Both figures, each to the paths given for its name in FIGURES."""
    plot_accuracy_vs_steps(samples, paths["accuracy_vs_steps"])
    plot_tf_vs_greedy(summary, paths["tf_vs_greedy"])


def tables(summary: pd.DataFrame, capacity_df: pd.DataFrame) -> list[str]:
    """One reconstruction table per corpus, then the capacity table."""
    out = []
    for corpus, group in ordered(summary).groupby("corpus", sort=False):
        rows = pd.DataFrame({  # the seed's columns, in its order
            "model": group.apply(row_name, axis=1), "sequence length": group["length"].astype(int),
            **{f"mismatch@{k}": group[f"greedy_mismatch@{k}"].map(fmt) for k in (0, 1, 2)},
            "TF accuracy": group["mean_teacher_forcing_convergence"].map(fmt),
            "greedy accuracy": group["mean_greedy_convergence"].map(fmt),
        })
        failed = int(group["n_failed"].sum())
        out.append(table(rows, (
            f"Cramming on corpus \\texttt{{{escape(corpus)}}}: {int(group['n_samples'].max())} texts per row"
            + (f", {failed} failed (excluded from means)" if failed else "") + ". mismatch@$k$ is the fraction of "
            "texts whose greedy decode from the vectors alone is wrong at token $k$ (token 0 is BOS; -- where the "
            "variant does not score it). TF / greedy accuracy: mean teacher-forced / greedy reconstruction accuracy "
            "(\\texttt{mean\\_teacher\\_forcing\\_convergence}, \\texttt{mean\\_greedy\\_convergence} in "
            "\\texttt{cramming\\_summary.parquet})."), "lrrrrrr", size="footnotesize"))
    cap = ordered(capacity_df)
    rows = pd.DataFrame({
        "model": cap.apply(row_name, axis=1), "corpus": cap["corpus"], "capacity": cap["capacity_tokens"].astype(int),
        "longest tested": cap["max_tested_length"].astype(int),
        "bound": cap["theoretical_bound_tokens"].map(lambda v: fmt(v, 0)),
        "utilisation (\\%)": cap["utilisation"].map(lambda v: fmt(100 * v, 1)),
    })
    threshold = fmt(float(capacity_df["threshold"].iloc[0]), 2)
    out.append(table(rows, f"Capacity: the largest tested length with mean teacher-forced accuracy $\\geq$ "
                           f"{threshold}, against the bound $N \\cdot d \\cdot 16 / \\log_2 |V|$ tokens.", "llrrrr"))
    return out


def section(summary: pd.DataFrame, capacity_df: pd.DataFrame) -> str:
    return render("soft_tokens.cramming", "section.tex.j2", tables=tables(summary, capacity_df),
                  findings=findings(summary, capacity_df), figures=FIGURES)
