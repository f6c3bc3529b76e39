"""Jobs started warm against cold: config/smoke.yaml (93 jobs of seconds each) run end to end twice, in
fresh folders, once with every job in a fresh process (SOFT_TOKENS_WARM_START=0) and once forked from
the run's warm-start server (soft_tokens.core.warm_start, the default for local runs). Prints each
run's wall time, its jobs' summed seconds (their benchmark files) and start-up (their phases records),
and the ratios.

    python benchmarks/job_start.py              # about 7 minutes on 2 cores
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from profile_default import profile
from track_minutes import track_minutes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from soft_tokens.core.warm_start import SWITCH  # noqa: E402


def timed_run(workdir: Path, cores: int, warm: bool) -> dict:
    command = [sys.executable, "-m", "snakemake", "--cores", str(cores), "--configfile", "config/smoke.yaml",
               "--directory", str(workdir), "all"]
    began = time.perf_counter()
    run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env={**os.environ, SWITCH: str(int(warm))})
    wall = time.perf_counter() - began
    if run.returncode:
        raise SystemExit(f"the {'warm' if warm else 'cold'} run failed:\n{run.stderr[-3000:]}")
    phases = profile(workdir).loc["total"]
    return {"wall": wall / 60, "jobs": phases["jobs"], "job time": track_minutes(workdir).sum(),
            "start-up": phases["start-up"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cores", type=int, default=2)
    cores = parser.parse_args().cores
    with tempfile.TemporaryDirectory() as scratch:
        cold = timed_run(Path(scratch) / "cold", cores, warm=False)
        warm = timed_run(Path(scratch) / "warm", cores, warm=True)
    print(f"config/smoke.yaml, {int(cold['jobs'])} jobs, --cores {cores}; minutes")
    print(f"{'':<12}{'cold':>8}{'warm':>8}{'ratio':>8}")
    for name in ("wall", "job time", "start-up"):
        print(f"{name:<12}{cold[name]:8.2f}{warm[name]:8.2f}{cold[name] / warm[name]:7.1f}x")


if __name__ == "__main__":
    main()
