"""Every command the README shows works as written: make targets and Snakemake calls are
dry-run from the repository root (outputs redirected to a temporary folder), and the benchmark
scripts accept every flag the README passes them. `snakemake --report` needs a finished run: the
smoke test builds one."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def readme_commands() -> list[str]:
    """Shell commands of the README's bash blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


COMMANDS = readme_commands()


def test_the_readme_shows_the_two_commands_and_the_cluster_call():
    assert {"make results", "make test"} <= set(COMMANDS)
    assert any("--workflow-profile profiles/slurm" in c for c in COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(command):
    run = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("snakemake ") and "--report" not in c])
def test_snakemake_calls_dry_run(command, tmp_path):
    args = shlex.split(command)[1:]
    run = subprocess.run([str(BIN / "snakemake"), *args, "-n", "--directory", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "This was a dry-run" in run.stdout


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("python benchmarks/")])
def test_benchmarks_accept_the_readme_flags(command):
    script, *args = shlex.split(command)[1:]
    run = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    for flag in (a for a in args if a.startswith("--")):
        assert flag in run.stdout, f"{script} has no {flag}"
