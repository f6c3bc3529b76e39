"""Matplotlib for every track's figures: a headless backend and one way to save (PNG for the
Snakemake report, PDF for LaTeX)."""


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display on compute nodes), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, paths: list) -> None:
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    pyplot().close(fig)


def plot_training_curves(curves, x: str, ys: dict, panel: list[str], line: list[str], paths: list,
                         xlabel: str | None = None) -> None:
    """Training curves as the jobs recorded them (soft_tokens.core.curves): one column of panels per
    `panel` group (model, dataset), one row per quantity of `ys` (column -> axis label), one line per
    `line` group, averaged over whatever else varies (seeds)."""
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    groups = list(curves.groupby(panel, sort=False))
    fig, axes = plt.subplots(len(ys), len(groups), figsize=(4.2 * len(groups), 2.6 * len(ys)), squeeze=False,
                             layout="constrained")
    for j, (keys, group) in enumerate(groups):
        for i, (column, label) in enumerate(ys.items()):
            ax = axes[i][j]
            for name, lines in group.groupby(line, sort=False):
                mean = lines.groupby(x)[column].mean()
                ax.plot(mean.index, mean.to_numpy(), marker="o" if len(mean) <= 12 else None, markersize=3,
                        label=str(name[0]) if len(line) == 1 else ", ".join(f"{k} {v}" for k, v in zip(line, name)))
            ax.set(ylabel=label, xlabel=xlabel or x)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[0][j].set_title(" / ".join(str(k) for k in keys))
    axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1))
    save_figure(fig, paths)
