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
