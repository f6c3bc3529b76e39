"""Coconut's report: accuracy and tokens per method and stage, Table 1 per model with its
findings, the accuracy-by-stage figure and the section of the report."""

import pandas as pd

from soft_tokens.report.figures import pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, fmt, render, table

FIGURES = ("coconut_accuracy_by_stage",)


# Coconut's Table 1 order and names for soft_tokens.workflow.COCONUT_METHODS.
METHOD_NAMES = {"nocot": "No-CoT", "cot": "CoT", "pause": "Pause as thought",
                   "coconut_nocurriculum": "Coconut w/o curriculum", "coconut": "Coconut"}


def summarize(evals: pd.DataFrame) -> pd.DataFrame:
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


def tables(summary: pd.DataFrame) -> list[dict]:
    """Per model: one row per method (final stage), accuracy and tokens per dataset, as in Table 1;
    with the findings on that model."""
    final = summary[summary["final"]]
    datasets = list(dict.fromkeys(final["dataset"]))
    out = []
    for model, group in final.groupby("model", sort=False):
        by = group.set_index(["method", "dataset"])
        methods = [m for m in METHOD_NAMES if m in set(group["method"])]
        columns = {("", "method"): [METHOD_NAMES[m] for m in methods]}
        for d in datasets:
            cells = [by.loc[(m, d)] if (m, d) in by.index else None for m in methods]
            columns[(escape(d), r"Acc. (\%)")] = ["--" if c is None else fmt(100 * c["accuracy"], 1) for c in cells]
            columns[(escape(d), r"\# tokens")] = ["--" if c is None else fmt(c["mean_tokens"], 1) for c in cells]
        rows = pd.DataFrame(columns)
        rows.columns = pd.MultiIndex.from_tuples(rows.columns)
        caption = (f"{escape(model)}: test accuracy and tokens per answer (continuous thoughts plus generated tokens, "
                   f"EOS included) on {int(group['n_problems'].max())} held-out problems per dataset, each method at "
                   "its last curriculum stage, in the shape of Coconut's Table~1.")
        out.append({"table": table(rows, caption, "l" + "rr" * len(datasets)), "findings": findings(group)})
    return out


def findings(final: pd.DataFrame) -> list[str]:
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
            f"({100 * by.loc['coconut', 'accuracy']:.1f}\\%) with {tokens['coconut']:.1f} tokens per answer; CoT "
            f"answers {right['cot']} ({100 * by.loc['cot', 'accuracy']:.1f}\\%) with {tokens['cot']:.1f} tokens, "
            f"{tokens['cot'] / tokens['coconut']:.1f} times as many."
        )
        if "coconut_nocurriculum" in right:
            gap = right["coconut"] - right["coconut_nocurriculum"]
            out.append(
                f"Without the curriculum, Coconut answers {right['coconut_nocurriculum']} of {n} on {dataset}: "
                + ("the same number." if gap == 0 else
                   f"{abs(gap)} problem{'s' if abs(gap) > 1 else ''} {'fewer' if gap > 0 else 'more'} than with it.")
            )
    return [escape_text(sentence) for sentence in out]


def figures(summary: pd.DataFrame, paths: dict) -> None:
    """The accuracy-by-stage figure, to the paths given for its name in FIGURES."""
    plt = pyplot()

    panels = list(summary.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((model, dataset), group) in zip(axes[0], panels):
        by_method = {m: g.sort_values("stage") for m, g in group.groupby("method")}
        cot = by_method.get("cot")
        for method, style in (("coconut", "o-"), ("pause", "s--")):
            if method not in by_method:
                continue
            g = pd.concat([cot, by_method[method]]) if cot is not None else by_method[method]
            ax.plot(g["stage"], 100 * g["accuracy"], style, label=METHOD_NAMES[method], fillstyle="none"
                    if method == "pause" else "full", markersize=8 if method == "pause" else 5)
        if "coconut_nocurriculum" in by_method:
            g = by_method["coconut_nocurriculum"]
            ax.plot(g["stage"], 100 * g["accuracy"], "D", color="C2", label=METHOD_NAMES["coconut_nocurriculum"])
        if "nocot" in by_method:
            ax.axhline(100 * by_method["nocot"]["accuracy"].iloc[0], color="gray", linestyle="--",
                       label=METHOD_NAMES["nocot"])
        ax.set(title=f"{model} / {dataset}", xlabel="curriculum stage (0 = CoT)", ylim=(-2, 102))
        ax.set_xticks(sorted(group["stage"].unique()))
    axes[0][0].set_ylabel("test accuracy (%)")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths["coconut_accuracy_by_stage"])


def section(summary: pd.DataFrame) -> str:
    return render("soft_tokens.latent.coconut", "section.tex.j2", tables=tables(summary), figures=FIGURES)
