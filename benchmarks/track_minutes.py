"""Minutes per track of a finished run, from the `benchmark:` files Snakemake writes for every job.

    python benchmarks/track_minutes.py                  # after `make results`
    python benchmarks/track_minutes.py runs/smoke        # any workdir

A track is the folder a job's benchmark file sits in (cramming, capacity, converter, estar,
compressor, coconut, ...; the report rules and data preparation sit at the top level as "other").
Prints each track's summed job wall time, its share, and the total: the budget of `make results`
(75 minutes on 2 cores with every track) is checked against these numbers.
"""

import argparse
from pathlib import Path

import pandas as pd


def track_of(relative: Path) -> str:
    """The track of a job's benchmark or log file, from its path under results/benchmarks or logs."""
    return relative.parts[0] if len(relative.parts) > 1 else "other"


def track_minutes(workdir: Path) -> pd.Series:
    folder = workdir / "results" / "benchmarks"
    files = sorted(folder.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"no benchmark files under {folder}: run `make results` (or snakemake in {workdir}) first")
    rows = [{"track": track_of(f.relative_to(folder)), "seconds": pd.read_csv(f, sep="\t")["s"].sum()} for f in files]
    return pd.DataFrame(rows).groupby("track")["seconds"].sum().sort_values(ascending=False) / 60


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, nargs="?", default=Path("."))
    minutes = track_minutes(parser.parse_args().workdir)
    for track, value in minutes.items():
        print(f"{track:<16} {value:6.1f} min  {100 * value / minutes.sum():5.1f}%")
    print(f"{'total':<16} {minutes.sum():6.1f} min")


if __name__ == "__main__":
    main()
