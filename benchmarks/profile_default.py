"""Where a finished run's job time goes, per track: start-up (interpreter, Snakemake's script preamble,
imports), model loading, training, decoding, forward passes without generation (scoring, extracted
states), saving, and the rest (data, bookkeeping), in minutes.

    python benchmarks/profile_default.py                 # after `make results`
    python benchmarks/profile_default.py runs/smoke       # any workdir

Every job writes `<its log>.phases.json` when it ends (soft_tokens.core.phases); a track is the folder
its log sits in, as in track_minutes.py. The wall column is each job's process lifetime, so it is close
to (a little under) the `benchmark:` seconds track_minutes.py sums.
"""

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from track_minutes import track_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from soft_tokens.core.phases import PHASES, SUFFIX  # noqa: E402


def profile(workdir: Path) -> pd.DataFrame:
    folder = workdir / "logs"
    files = sorted(folder.rglob(f"*{SUFFIX}"))
    if not files:
        raise SystemExit(f"no {SUFFIX} files under {folder}: run `make results` (or snakemake in {workdir}) with this "
                         "version first")
    rows = [{"track": track_of(f.relative_to(folder)), "jobs": 1, **json.loads(f.read_text())} for f in files]
    table = pd.DataFrame(rows).groupby("track").sum()
    table["other"] = table["wall"] - table[list(PHASES)].sum(axis=1)
    minutes = table[["wall", *PHASES, "other"]] / 60
    minutes.insert(0, "jobs", table["jobs"])
    minutes = minutes.sort_values("wall", ascending=False)
    minutes.loc["total"] = minutes.sum()
    return minutes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", type=Path, nargs="?", default=Path("."))
    minutes = profile(parser.parse_args().workdir)
    print("minutes of job time per track and phase\n")
    print(minutes.to_string(float_format=lambda v: f"{v:.1f}", formatters={"jobs": "{:.0f}".format}))
    total = minutes.loc["total"]
    print("\nshare of all job time: " + ", ".join(f"{name} {100 * total[name] / total['wall']:.0f}%"
                                               for name in [*PHASES, "other"]))


if __name__ == "__main__":
    main()
