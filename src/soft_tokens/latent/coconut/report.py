"""Coconut's report: accuracy and tokens per method and stage with 95% intervals, over every training
seed; Table 1 per model with its findings, the accuracy-by-stage figure and the section of the report."""

from pathlib import Path

import pandas as pd

from soft_tokens.latent.coconut.history import stage_curve
from soft_tokens.latent.coconut.spec import CONTROLS, SECTIONS
from soft_tokens.report import stats
from soft_tokens.report.figures import plot_training_curves, pyplot, save_figure
from soft_tokens.report.latex import escape, escape_text, render, table

FIGURES = SECTIONS["coconut"]
KEYS = ["model", "dataset", "method", "stage"]

# Coconut's Table 1 order and names for its METHODS (spec).
METHOD_NAMES = {"nocot": "No-CoT", "cot": "CoT", "pause": "Pause as thought",
                "coconut_nocurriculum": "Coconut w/o curriculum", "coconut": "Coconut"}
# The findings' comparisons, a against b on a summary quantity: what Coconut's claims rest on.
COMPARISONS = (("coconut", "cot", "accuracy"), ("coconut", "cot", "mean_tokens"), ("coconut", "nocot", "accuracy"),
               ("coconut", "coconut_nocurriculum", "accuracy"), ("pause", "coconut", "accuracy"))
QUANTITIES = {"accuracy": ("accuracy (%)", 100), "mean_tokens": ("tokens per answer", 1)}  # name, scale
# What each latent control feeds in place of the method's latent vectors, as the findings say it.
CONTROL_NAMES = {"zeros": "zeros", "random": "random vectors of the same norms", "other": "another problem's thoughts"}


def summarize(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per model x dataset x method x stage over every seed: test accuracy and tokens per
    answer, each with its 95% interval and its sd across seeds (NaN with one seed).

    `tokens` counts what the model produces after the question, as Coconut's "# tokens" does:
    continuous thoughts plus generated tokens (EOS included). With one seed the accuracy interval is
    Wilson's and the tokens' a bootstrap over problems; with several, every seed answers the same
    test problems, so both intervals resample problems and seeds (stats.bootstrap_crossed; for
    accuracy never narrower than Wilson's over the problems, stats.rate_crossed).
    n_problems is per seed, n_correct pooled over the n_seeds; `truncated_rate` is the share of
    answers cut off at max_new_tokens; `final` marks each method's last stage; `train_epochs` and
    `train_steps` are the run's training up to the stage (mean over seeds). The latent controls' rows
    (control other than `none`) are left to with_controls.
    """
    df = evals.assign(tokens=evals["latent_tokens"] + evals["generated_tokens"],
                      correct=evals["correct"].astype(float), truncated=evals["truncated"].astype(float))
    df, controls = df[df["control"] == "none"], df[df["control"] != "none"]
    rows = []
    for keys, g in df.groupby(KEYS):
        correct, tokens = (g.pivot(index="id", columns="seed", values=v) for v in ("correct", "tokens"))
        per_seed = g.groupby("seed")
        if correct.shape[1] == 1:
            accuracy, mean_tokens = stats.wilson(int(g["correct"].sum()), len(g)), stats.bootstrap(g["tokens"])
        else:
            accuracy, mean_tokens = stats.rate_crossed(correct), stats.bootstrap_crossed(tokens)
        rows.append({**dict(zip(KEYS, keys)),
                     **stats.columns("accuracy", accuracy), "accuracy_sd": per_seed["correct"].mean().std(),
                     **stats.columns("mean_tokens", mean_tokens), "mean_tokens_sd": per_seed["tokens"].mean().std(),
                     "truncated_rate": g["truncated"].mean(), "mean_latent_tokens": g["latent_tokens"].mean(),
                     "mean_generated_tokens": g["generated_tokens"].mean(), "n_problems": correct.shape[0],
                     "n_seeds": correct.shape[1], "n_correct": int(g["correct"].sum()),
                     "final_train_loss": per_seed["final_train_loss"].first().mean(),
                     "train_epochs": per_seed["train_epochs"].first().mean(),
                     "train_steps": per_seed["train_steps"].first().mean()})
    out = pd.DataFrame(rows)
    out["final"] = out["stage"] == out.groupby(KEYS[:3])["stage"].transform("max")
    return with_controls(with_comparisons(out, df), df, controls)


def with_controls(summary: pd.DataFrame, evals: pd.DataFrame, controls: pd.DataFrame) -> pd.DataFrame:
    """Per latent control of a method's last stage, its accuracy (`<control>_accuracy`) and the drop from
    the method as trained (`<control>_drop` = as trained - control), paired over the same test problems."""
    extra = []
    for keys, g in controls.groupby(KEYS):
        trained = evals.set_index(KEYS).loc[keys].reset_index()
        row = dict(zip(KEYS, keys))
        for control, c in g.groupby("control"):
            correct = c.pivot(index="id", columns="seed", values="correct")
            accuracy = (stats.wilson(int(c["correct"].sum()), len(c)) if correct.shape[1] == 1 else
                        stats.rate_crossed(correct))
            row.update({**stats.columns(f"{control}_accuracy", accuracy),
                        **stats.columns(f"{control}_drop", paired(trained, c, "correct"))})
        extra.append(row)
    return summary.merge(pd.DataFrame(extra), on=KEYS, how="left") if extra else summary


def comparison_column(b: str, name: str) -> str:
    """The summary column of a's `name` minus b's, on a's final row (`accuracy_minus_cot`)."""
    return f"{name}_minus_{b}"


def paired(a: pd.DataFrame, b: pd.DataFrame, name: str) -> stats.Interval:
    """a - b on `name` ("correct" or "tokens") over the test problems both answered: with one seed each,
    McNemar's exact interval for accuracy and the bootstrap of per-problem differences for tokens; with
    training seeds, the crossed bootstrap, problems shared and each method's seeds drawn on their own."""
    ta, tb = (g.pivot(index="id", columns="seed", values=name) for g in (a, b))
    shared = ta.index.intersection(tb.index)
    ta, tb = ta.loc[shared], tb.loc[shared]
    if ta.shape[1] > 1 or tb.shape[1] > 1:
        return stats.crossed_difference(ta, tb)
    return stats.paired_units(ta.iloc[:, 0], tb.iloc[:, 0], rates=name == "correct")


def with_comparisons(summary: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """COMPARISONS as columns of a's final row: every method answers the same test problems, so each
    difference is paired over them (a real gain is not drowned by how hard problems differ)."""
    final = summary[summary["final"]].set_index(KEYS[:3])["stage"]
    by = {key: g for key, g in evals.groupby(KEYS)}
    extra = {}
    for (model, dataset, method), stage in final.items():
        for a, b, name in COMPARISONS:
            if a != method or (model, dataset, b) not in final.index:
                continue
            other = by[(model, dataset, b, final[(model, dataset, b)])]
            values = {"accuracy": "correct", "mean_tokens": "tokens"}[name]
            d = paired(by[(model, dataset, method, stage)], other, values)
            extra.setdefault((model, dataset, method, stage), {}).update(stats.columns(comparison_column(b, name), d))
    if not extra:
        return summary
    return summary.merge(pd.DataFrame([{**dict(zip(KEYS, k)), **v} for k, v in extra.items()]), on=KEYS, how="left")


def interval(row, name: str) -> stats.Interval:
    """A summary row's `accuracy` or `mean_tokens` with its interval over the problems and seeds."""
    return stats.from_columns(row, name, row["n_problems"], row["n_seeds"])


def pooled(row, times: str = r" \times ") -> str:
    """The n of a summary row: `200` problems, or `3 x 200` answers over seeds (`times` between them)."""
    return str(row["n_problems"]) if row["n_seeds"] == 1 else f"{row['n_seeds']}{times}{row['n_problems']}"


def cells(row) -> tuple[str, str]:
    """Table 1's accuracy (%) and tokens cells: with one seed the value and its 95% interval, with
    several `75.0 (sd 2.1)`, the mean and sd across seeds (plain text, escaped as every cell is)."""
    if row["n_seeds"] == 1:
        return stats.cell(interval(row, "accuracy").scaled(100), 1), stats.cell(interval(row, "mean_tokens"), 1)
    return (f"{100 * row['accuracy']:.1f} (sd {100 * row['accuracy_sd']:.1f})",
            f"{row['mean_tokens']:.1f} (sd {row['mean_tokens_sd']:.1f})")


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
            n = " / ".join(dict.fromkeys(pooled(r) for _, r in group[group["dataset"] == d].iterrows()))
            head = f"{escape(d)} ($n = {n}$)" if n else escape(d)
            row_cells = [cells(by.loc[(m, d)]) if (m, d) in by.index else ("--", "--") for m in methods]
            columns[(head, r"Acc. (\%)")] = [acc for acc, _ in row_cells]
            columns[(head, r"\# tokens")] = [tok for _, tok in row_cells]
            columns[(head, "epochs / steps")] = [
                f"{by.loc[(m, d), 'train_epochs']:g} / {by.loc[(m, d), 'train_steps']:g}" if (m, d) in by.index else "--"
                for m in methods]
        rows = pd.DataFrame(columns)
        rows.columns = pd.MultiIndex.from_tuples(rows.columns)
        seeds = int(group["n_seeds"].max())
        spread = ("in brackets their 95\\% intervals (Wilson for accuracy, bootstrap over problems for tokens)"
                  if seeds == 1 else
                  f"the mean and sd across {seeds} training seeds, each answering the same test problems "
                  "($n$ pools the answers; the findings give 95\\% intervals over problems and seeds)")
        caption = (f"{escape(model)}: test accuracy and tokens per answer (continuous thoughts plus generated tokens, "
                   "EOS included) on $n$ held-out problems per dataset, each method at its last curriculum stage, in "
                   f"the shape of Coconut's Table~1; {spread}.")
        caption += (" Epochs / steps: each method's training, epochs and optimiser steps (every method of a "
                    "dataset trains the same epochs, from the pretrained model unless its start is CoT's; see the "
                    "settings above).")
        out.append({"table": table(rows, caption, "l" + "rrr" * len(datasets), size="footnotesize"),
                    "controls": controls_table(group), "findings": findings(group) + control_findings(group)})
    return out


def controls_table(final: pd.DataFrame) -> str | None:
    """Per dataset and controlled method: accuracy as trained and with each latent control, and the
    drop with its paired 95% interval."""
    rows = []
    for _, r in final.iterrows():
        for control in CONTROLS:
            if f"{control}_accuracy" not in r or pd.isna(r[f"{control}_accuracy"]):
                continue
            rows.append({"dataset": r["dataset"], "method": METHOD_NAMES[r["method"]],
                         "latent vectors": CONTROL_NAMES[control],
                         r"Acc. (\%)": cell(r, f"{control}_accuracy"),
                         r"as trained (\%)": stats.cell(interval(r, "accuracy").scaled(100), 1),
                         "drop (points)": cell(r, f"{control}_drop")})
    if not rows:
        return None
    caption = ("Latent controls at the last stage: the method's latent vectors replaced at test time (Coconut's "
               "continuous thoughts; pause's learned pause embedding), its accuracy then and as trained, and the drop "
               "(as trained minus control) with its 95\\% interval paired over the same test problems (McNemar's "
               "exact interval with one seed). A drop whose interval lies above 0 shows the answers depend on the "
               "latents.")
    return table(pd.DataFrame(rows), caption, "lllrrr", size="footnotesize")


def cell(row, name: str) -> str:
    """A rate column of a summary row in percent with its interval, as Table 1 gives it."""
    return stats.cell(stats.from_columns(row, name, row["n_problems"], row["n_seeds"]).scaled(100), 1)


def control_findings(final: pd.DataFrame) -> list[str]:
    """Per controlled method: whether it uses its latents, read from the drops' paired intervals."""
    out = []
    for _, r in final.iterrows():
        drops = {c: stats.from_columns(r, f"{c}_drop", r["n_problems"], r["n_seeds"]).scaled(100)
                 for c in CONTROLS if f"{c}_drop" in r and not pd.isna(r[f"{c}_drop"])}
        if not drops:
            continue
        said = "; ".join(f"{CONTROL_NAMES[c]} {d.mean:+.1f} (95\\% CI {d.low:+.1f} to {d.high:+.1f})"
                         for c, d in drops.items())
        used = [c for c, d in drops.items() if d.low > 0]
        verdict = (f"uses its latent vectors: accuracy drops when they are replaced by "
                   f"{' or by '.join(CONTROL_NAMES[c] for c in used)}" if used else
                   "shows no evidence of using its latent vectors: no drop's interval lies above 0")
        out.append(escape_text(f"On {r['dataset']}, {METHOD_NAMES[r['method']]} {verdict} (drops in points, as "
                               f"trained minus control, n = {pooled(r, ' x ')}: {said})."))
    return out


def findings(final: pd.DataFrame) -> list[str]:
    """Per dataset: how many answers each method gets right, then Coconut against CoT (accuracy and
    tokens), No-CoT and itself without the curriculum, and pause tokens against Coconut; a difference
    is named only where the 95% interval of the paired difference over the shared test problems
    excludes 0 (where a summary lacks it, only where the two intervals separate), otherwise it is
    "within noise at n = ..."."""
    out = []
    for (model, dataset), g in final.groupby(["model", "dataset"], sort=False):
        by = g.set_index("method")
        methods = [m for m in METHOD_NAMES if m in by.index]
        first = by.loc[methods[0]]
        of = (f"{first['n_problems']} test problems" if first["n_seeds"] == 1 else
              f"{first['n_problems'] * first['n_seeds']} answers ({first['n_seeds']} seeds, each on the same "
              f"{first['n_problems']} test problems)")
        right = [f"{by.loc[m, 'n_correct']} with {METHOD_NAMES[m]} ({by.loc[m, 'mean_tokens']:.1f} tokens per answer)"
                 for m in methods]
        listed = f"{', '.join(right[:-1])} and {right[-1]}" if len(right) > 1 else right[0]
        out.append(f"On {dataset}, of {of}, {model} gets right {listed}.")
        for a, b, name in COMPARISONS:
            if {a, b} <= set(methods):
                label, scale = QUANTITIES[name]
                row = by.loc[a]
                diff = stats.from_columns_or_none(row, comparison_column(b, name), row["n_problems"], row["n_seeds"])
                out.append(stats.difference(METHOD_NAMES[a], interval(row, name).scaled(scale), METHOD_NAMES[b],
                                            interval(by.loc[b], name).scaled(scale), f"{dataset} {label}", 1,
                                            diff and diff.scaled(scale)))
    return [escape_text(sentence) for sentence in out]


def run_curves(runs: list[Path]) -> pd.DataFrame:
    """The training curves of Coconut run folders (results/coconut/{model}/{dataset}/seed{seed}/{method}),
    read from their stages' histories, so that runs trained before curves were recorded have one too."""
    frames = []
    for run in map(Path, runs):
        model, dataset, seed, method = run.parts[-4:]
        frames.append(pd.DataFrame(stage_curve(run)).assign(model=model, dataset=dataset,
                                                            seed=int(seed.removeprefix("seed")), method=method))
    return pd.concat(frames, ignore_index=True)


def figures(summary: pd.DataFrame, curves: pd.DataFrame, paths: dict) -> None:
    """The accuracy-by-stage figure with 95% error bars, and each method's training curve over its
    epochs (stages in turn), to the paths given for their names in FIGURES."""
    plot_training_curves(curves, "step", {"train_loss": "training CE", "val_loss": "validation CE"},
                         ["model", "dataset"], ["method"], paths["coconut_training"], xlabel="epoch (all stages)")
    plt = pyplot()

    def errorbar(ax, g, fmt, shift=0.0, **style):
        ax.errorbar(g["stage"] + shift, 100 * g["accuracy"], yerr=100 * stats.error_bars(g, "accuracy"), fmt=fmt,
                    capsize=3, **style)

    panels = list(summary.groupby(["model", "dataset"], sort=False))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False, sharey=True)
    for ax, ((model, dataset), group) in zip(axes[0], panels):
        by_method = {m: g.sort_values("stage") for m, g in group.groupby("method")}
        cot = by_method.get("cot")
        for method, fmt, shift in (("coconut", "o-", 0.0), ("pause", "s--", 0.08)):
            if method not in by_method:
                continue
            g = pd.concat([cot, by_method[method]]) if cot is not None else by_method[method]
            errorbar(ax, g, fmt, shift, label=METHOD_NAMES[method], fillstyle="none" if method == "pause" else "full",
                     markersize=8 if method == "pause" else 5)
        if "coconut_nocurriculum" in by_method:
            errorbar(ax, by_method["coconut_nocurriculum"], "D", -0.08, color="C2",
                     label=METHOD_NAMES["coconut_nocurriculum"])
        if "nocot" in by_method:
            nocot = by_method["nocot"].iloc[0]
            ax.axhline(100 * nocot["accuracy"], color="gray", linestyle="--", label=METHOD_NAMES["nocot"])
            ax.axhspan(100 * nocot["accuracy_low"], 100 * nocot["accuracy_high"], color="gray", alpha=0.15, lw=0)
        ax.set(title=f"{model} / {dataset} (n = {pooled(group.iloc[0], ' x ')})",
               xlabel="curriculum stage (0 = CoT)", ylim=(-2, 102))
        ax.set_xticks(sorted(group["stage"].unique()))
    axes[0][0].set_ylabel("test accuracy (%), 95% intervals")
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths["coconut_accuracy_by_stage"])


def protocol_text(summary: pd.DataFrame, protocol: dict) -> str:
    """The section's opening: models, what each method trains on, the settings per dataset (the
    rule's parameters: `coconut` as it applies to each dataset) and how the numbers are read."""
    seeds = int(summary["n_seeds"].max())

    def setting(dataset: str, s: dict) -> str:
        start = "the pretrained model (Coconut and pause train their own stage 0)" if s["start"] == "base" else \
            f"the CoT run, skipping its first {s['epochs_per_stage']} epochs"
        return (f"{dataset}: {s['num_epochs']} epochs for every method, a stage every {s['epochs_per_stage']} "
                f"epoch{'s' if s['epochs_per_stage'] > 1 else ''} up to stage {s['max_latent_stage']} and the rest "
                f"without any step, c = {s['c_thought']} thought{'s' if s['c_thought'] > 1 else ''} per step, latent "
                f"methods from {start}, "
                f"{'the epoch of best validation accuracy' if s['select_best'] else 'the last epoch'} kept, AdamW lr "
                f"{s['lr']:g}{' reset every epoch' if s['reset_optimizer'] else ''}, batch {s['batch_size']}, "
                f"uniform_prob {s['uniform_prob']:g}, {s['finetune']} fine-tuning, trained and evaluated in "
                f"{s['dtype']}")

    settings = "; ".join(setting(dataset, s) for dataset, s in protocol.items())
    return escape_text(
        f"Each method fine-tunes {', '.join(summary['model'].unique())} on a dataset's training split on the "
        f"reference's stage schedule and answers its held-out test problems greedily (n in each table header; {seeds} "
        f"training seed{'s' if seeds > 1 else ''}): {settings}. Methods answer the same test problems, so a difference "
        "is stated only where the 95% interval of the paired difference excludes 0 (McNemar's exact interval for "
        "accuracy with one seed; with several, the crossed bootstrap over problems and each method's seeds)."
    )


def section(summary: pd.DataFrame, protocol: dict) -> str:
    per_model = tables(summary)
    return render("soft_tokens.latent.coconut", "section.tex.j2", protocol=protocol_text(summary, protocol),
                  tables=per_model, findings=[f for t in per_model for f in t["findings"]], figures=FIGURES)
