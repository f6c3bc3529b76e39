"""The HRPO track's report: per model x dataset, the start model, GRPO and HRPO with each thinking
state, greedy test accuracy and completion length over seeds (crossed bootstrap: problems and
seeds), gains against GRPO and the start model, the goal's verdict, and training curves."""

import numpy as np
import pandas as pd

from soft_tokens.latent.hrpo.spec import SECTIONS
from soft_tokens.report import stats
from soft_tokens.report.figures import pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, render, table

FIGURES = SECTIONS["hrpo"]
KEYS = ["model", "dataset", "policy"]
NAMES = {"start": "Start model (no RL)", "grpo": "GRPO (no gate)", "probs": "HRPO, probs state",
         "projection": "HRPO, projection state"}
HRPO_STATES = ("probs", "projection")
# HRPO's goal against GRPO: 2 points more accuracy, or the same accuracy with 20% shorter completions.
GOAL = {"gain": 0.02, "length_ratio": 0.8}
NOTHING = stats.Interval(np.nan, np.nan, np.nan, 0)
CURVES = {"reward": "reward", "accuracy": "accuracy (sampled)", "length": "completion length (tokens)"}


def per_seed(g: pd.DataFrame, column: str) -> pd.DataFrame:
    """problems x seeds table of one column."""
    return g.pivot(index="id", columns="seed", values=column).sort_index()


def paired_difference(a: pd.DataFrame, b: pd.DataFrame) -> stats.Interval:
    """Accuracy of a - b over the test problems both answered (problems x seeds tables of 0/1): the
    crossed bootstrap with the problems shared and each policy's seeds drawn on their own (seed i of
    one policy is no partner of seed i of another; the start model has one); McNemar's exact interval
    where both have one seed."""
    b = b.loc[a.index]
    if a.shape[1] == b.shape[1] == 1:
        return stats.paired_units(a.iloc[:, 0], b.iloc[:, 0], rates=True)
    return stats.crossed_difference(a, b)


def length_ratio(a: pd.DataFrame, b: pd.DataFrame) -> stats.Interval:
    """mean length of a / mean length of b over the shared problems, by the same crossed bootstrap, so
    that one seed's short completions cannot carry the ratio."""
    return stats.crossed_difference(a, b.loc[a.index], lambda x, y: x.mean() / y.mean())


def hidden_ratio(table: pd.DataFrame) -> stats.Interval:
    """Mean sqrt(1 - a^2) at test by the crossed bootstrap, over the problems where every seed fed a
    thinking state (NaN where a completion wrote its answer at once, and throughout for GRPO)."""
    table = table.dropna()
    return stats.bootstrap_crossed(table.to_numpy()) if len(table) else NOTHING


def summarize(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x dataset x policy: accuracy (crossed bootstrap over problems and seeds, never
    narrower than Wilson), completion length, the share writing exactly one marker, sqrt(1 - a^2) at
    test, and against the start model and GRPO: the accuracy gain (points, crossed) and length ratio."""
    df = evals.assign(correct=evals["correct"].astype(float), one_marker=(evals["markers"] == 1).astype(float))
    tables = {keys: {c: per_seed(g, c) for c in ("correct", "length", "one_marker", "hidden_ratio")}
              for keys, g in df.groupby(KEYS, sort=False)}
    rows = []
    for (model, dataset, policy), t in tables.items():
        correct = t["correct"]
        row = {"model": model, "dataset": dataset, "policy": policy, "problems": len(correct),
               "seeds": correct.shape[1], "n": correct.size,
               **stats.columns("accuracy", stats.rate_crossed(correct.to_numpy())),
               **stats.columns("length", stats.bootstrap_crossed(t["length"].to_numpy())),
               **stats.columns("one_marker", stats.bootstrap_crossed(t["one_marker"].to_numpy())),
               **stats.columns("hidden_ratio", hidden_ratio(t["hidden_ratio"]))}
        for other in ("start", "grpo"):  # every row has the columns; NaN where there is nothing to compare
            base = tables.get((model, dataset, other))
            compared = base is not None and policy not in ("start", other)
            row.update(stats.columns(f"gain_vs_{other}", paired_difference(correct, base["correct"]) if compared
                                     else NOTHING))
            row.update(stats.columns(f"length_vs_{other}", length_ratio(t["length"], base["length"]) if compared
                                     else NOTHING))
        rows.append(row)
    return pd.DataFrame(rows)


def interval(row, name: str) -> stats.Interval:
    """A summary row's `name` with its interval, its n the test problems and its repeats the seeds."""
    return stats.from_columns(row, name, row["problems"], row["seeds"])


def tables(summary: pd.DataFrame) -> list[dict]:
    """Per model x dataset: the methods' table and the findings."""
    out = []
    for (model, dataset), group in summary.groupby(["model", "dataset"], sort=False):
        g = group.set_index("policy").loc[[p for p in NAMES if p in set(group["policy"])]].reset_index()
        frame = pd.DataFrame({
            "method": [NAMES[p] for p in g["policy"]], "seeds": g["seeds"].tolist(), "n": g["n"].tolist(),
            r"accuracy (\%)": stats.cells(g, "accuracy", g["n"], 1, scale=100),
            "vs start (points)": stats.cells(g, "gain_vs_start", g["n"], 1, scale=100),
            "vs GRPO (points)": stats.cells(g, "gain_vs_grpo", g["n"], 1, scale=100),
            "length (tokens)": stats.cells(g, "length", g["n"], 1),
            r"$\sqrt{1-a^2}$": stats.cells(g, "hidden_ratio", g["n"], 3)})
        caption = (f"{escape(model)} on {escape(dataset)}: greedy test completions. Accuracy: exact match with the "
                   "answer marker; 95\\% intervals by the crossed bootstrap over test problems and training seeds "
                   "(n = problems x seeds), never narrower than Wilson's. vs start / vs GRPO: accuracy gain over the "
                   "start model's or GRPO's on the same problems, by the crossed bootstrap (McNemar's exact interval "
                   "where both have one seed). Length: tokens per "
                   "completion (its ratio to GRPO's is in the findings). $\\sqrt{1-a^2}$: the gate's weight on the "
                   "thinking state, averaged where it blends.")
        out.append({"tables": [table(frame, caption, "lrrlllll", size="scriptsize")], "findings": findings(group)})
    return out


def findings(group: pd.DataFrame) -> list[str]:
    """RL against the start model, each HRPO state against GRPO (accuracy, length) and the goal."""
    by = {r["policy"]: r for _, r in group.iterrows()}
    out = []
    for policy in ("grpo", *HRPO_STATES):
        if policy in by and "start" in by:
            out.append(gain_sentence(NAMES[policy], by[policy], "gain_vs_start", "the start model"))
    for state in HRPO_STATES:
        if state in by and "grpo" in by:
            row = by[state]
            out.append(gain_sentence(NAMES[state], row, "gain_vs_grpo", "GRPO"))
            ratio = interval(row, "length_vs_grpo")
            out.append(f"{NAMES[state]} writes {stats.text(ratio, 2)} of GRPO's completion length"
                       f"{'' if ratio.low <= 1 <= ratio.high else ' (the interval excludes 1)'}; the goal (at least "
                       f"{100 * GOAL['gain']:.0f} points over GRPO, or equal accuracy at most "
                       f"{GOAL['length_ratio']} of its length) {goal_verdict(interval(row, 'gain_vs_grpo'), ratio)}.")
    return [escape_text(sentence) for sentence in out]


def gain_sentence(name: str, row, column: str, other: str) -> str:
    gain = interval(row, column).scaled(100)
    if gain.low > 0 or gain.high < 0:
        return (f"{name} is {'more' if gain.mean > 0 else 'less'} accurate than {other}: "
                f"{stats.text(gain, 1)} points (the interval excludes 0).")
    return f"{name} and {other} are within noise on accuracy: {stats.text(gain, 1)} points, the interval holds 0."


def goal_verdict(gain: stats.Interval, length: stats.Interval) -> str:
    """Met: the gain's interval lies above 2 points, or it holds 0 with the length ratio's under 0.8.
    Missed: neither is possible inside the intervals. Otherwise undecided at this n."""
    if gain.low >= GOAL["gain"] or (gain.low <= 0 <= gain.high and length.high <= GOAL["length_ratio"]):
        return "is met"
    if gain.high < GOAL["gain"] and (length.low > GOAL["length_ratio"] or gain.high < 0):
        return "is missed"
    return f"is neither met nor missed at {gain.size()}: an interval straddles a bound"


def curve_panels(histories: pd.DataFrame, column: str, axes, policies) -> None:
    """Mean over seeds of `column` per step with a bootstrap band, one line per policy."""
    from matplotlib.ticker import MaxNLocator

    for ax, ((model, dataset), group) in zip(axes, histories.groupby(["model", "dataset"], sort=False)):
        for policy in policies:
            g = group[group["policy"] == policy]
            if g.empty:
                continue
            curves = g.pivot_table(index="seed", columns="step", values=column)
            low, high = stats.bootstrap_band(curves.to_numpy())
            ax.plot(curves.columns, curves.mean(0), label=NAMES[policy])
            ax.fill_between(curves.columns, low, high, alpha=0.2)
        ax.set(title=f"{model} / {dataset}", xlabel="GRPO step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def figures(histories: pd.DataFrame, paths: dict) -> None:
    """Training curves (reward, sampled accuracy, length) per method; the hidden ratio of HRPO."""
    plt = pyplot()
    panels = histories.groupby(["model", "dataset"]).ngroups
    fig, axes = plt.subplots(panels, len(CURVES), figsize=(4.2 * len(CURVES), 3.2 * panels), squeeze=False)
    for i, (column, label) in enumerate(CURVES.items()):
        curve_panels(histories, column, axes[:, i], ("grpo", *HRPO_STATES))
        for ax in axes[:, i]:
            ax.set_ylabel(f"{label}, training rollouts")
    axes[0][-1].legend(fontsize=7)
    save_figure(fig, paths["hrpo_training"])
    fig, axes = plt.subplots(1, panels, figsize=(5, 3.2), squeeze=False)
    curve_panels(histories, "hidden_ratio", axes[0], HRPO_STATES)
    for ax in axes[0]:
        ax.set_ylabel(r"mean $\sqrt{1-a^2}$ while thinking")
    axes[0][0].legend(fontsize=7)
    save_figure(fig, paths["hrpo_hidden_ratio"])


def protocol_text(summary: pd.DataFrame, p: dict) -> str:
    start = ("the Coconut track's CoT model (stage 0) of the same dataset" if p["start"] == "cot"
             else "the prepared model")
    prompts = (f"{p['fresh_problems']} freshly generated problems of the dataset's kind (none in its splits)"
               if p["fresh_problems"] else "the training split")
    n = ", ".join(f"{d}: {int(r)}" for d, r in zip(summary.loc[summary["policy"] == "start", "dataset"],
                                                   summary.loc[summary["policy"] == "start", "problems"]))
    return escape_text(
        f"Every policy starts from {start} ({', '.join(summary['model'].unique())}) with a fresh LoRA (r = "
        f"{p['lora_r']}); HRPO adds the gate, which mixes each sampled token's embedding with a thinking state "
        f"(probs: the next-token distribution's embedding; projection: a learned map of the last hidden state, "
        f"{p['projection_norm']} norm) until the answer marker is written. GRPO: {p['steps']} steps of "
        f"{p['prompts_per_step']} prompts x {p['group_size']} completions at temperature {p['temperature']:g} (at "
        f"most {p['max_new_tokens']} tokens{', through the chat template' if p['chat_template'] else ''}), log-probs "
        f"scored at temperature {p['score_temperature']:g}, prompts from {prompts}, reward 1 for a right answer after "
        f"exactly one marker, one update per batch, KL weight {p['beta']:g}; learning rates LoRA {p['lr_lora']:g}, "
        f"gate {p['lr_gate']:g}, Lambda {p['lr_lambda']:g}, projection {p['lr_projection']:g}, "
        + (f"cosine after a {p['warmup_ratio']:g} warm-up" if p["lr_schedule"] == "cosine" else "constant")
        + f", gradient norm clipped at {p['max_grad_norm']:g}, weight decay {p['weight_decay']:g}"
        f"{' (gate biases too)' if p['decay_biases'] else ''}; seeds {p['seeds']}. "
        f"Test problems per dataset: {n}, decoded greedily. Every policy answers the same test problems with its "
        "own training seeds, so a gain or length ratio is stated only where its 95% interval, by the crossed bootstrap "
        "(problems shared, each policy's seeds drawn on their own; McNemar's exact interval for a gain between two "
        "single-seed policies), excludes 0 (or 1 for a ratio).")


def section(summary: pd.DataFrame, protocol: dict) -> str:
    per_model = tables(summary)
    return render("soft_tokens.latent.hrpo", "section.tex.j2", protocol=protocol_text(summary, protocol),
                  tables=per_model, findings=[f for t in per_model for f in t["findings"]], figures=FIGURES)
