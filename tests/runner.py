"""Snakemake as the tests run it: in a subprocess of this Python, from the repository root; and whether a
process it left has ended."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "smoke.yaml"
# A guard against a hung run only: a loaded machine may take several times the usual minutes.
HANG = 3600


def snakemake_command(snakefile=ROOT / "Snakefile") -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(snakefile)]


def snakemake(*args, cwd=ROOT, snakefile=ROOT / "Snakefile", timeout=HANG, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([*snakemake_command(snakefile), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended: no longer there, a zombie (Z) or being reaped (X)."""
    try:
        return re.search(r"^State:\s+[ZX]", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE) is not None
    except FileNotFoundError:
        return True
