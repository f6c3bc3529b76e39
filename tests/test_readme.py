"""Every command the README and the docs show works as written: make targets and Snakemake calls are
dry-run from the repository root (outputs redirected to a temporary folder), `python -m` tools run,
and the benchmark scripts accept every flag the docs pass them. `snakemake --report` needs a finished
run: the smoke tests build one. The README stays short enough to read in five minutes."""

import re
import runpy
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]


def readme_commands() -> list[str]:
    """Shell commands of the bash blocks of the README and the docs, continuation lines joined, comments dropped."""
    blocks = [b for page in PAGES for b in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S)]
    text = "\n".join(blocks).replace("\\\n", " ")
    return [line.split(" #")[0].strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


COMMANDS = readme_commands()


def test_the_readme_shows_the_two_commands_and_the_cluster_call_in_at_most_150_lines():
    readme = (ROOT / "README.md").read_text()
    assert "make results" in readme and "make test" in readme and "--workflow-profile profiles/slurm" in readme
    assert len(readme.splitlines()) <= 150


def test_every_local_link_of_the_readme_and_the_docs_exists():
    for page in PAGES:
        for link in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
            if not link.startswith("http"):
                assert (page.parent / link).exists(), f"{page.name} links to {link}"


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("python -m ")])
def test_python_tools_run(command):
    run = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


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


def run_benchmark(script: str, *args: str, monkeypatch, capsys) -> tuple[int, str, str]:
    """A benchmark script run as `python benchmarks/<script> <args>` would run it, but in this process (its
    imports already made: a new process would spend seconds on torch), to its exit: status, stdout, stderr.
    Only for arguments that make it stop before its work."""
    monkeypatch.chdir(ROOT)
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.setattr(sys, "argv", [script, *args])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(ROOT / "benchmarks" / script), run_name="__main__")
    out, err = capsys.readouterr()
    return stop.value.code, out, err


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("python benchmarks/")])
def test_benchmarks_accept_the_readme_flags(command, monkeypatch, capsys):
    script, *args = shlex.split(command)[1:]
    status, out, err = run_benchmark(Path(script).name, "--help", monkeypatch=monkeypatch, capsys=capsys)
    assert status == 0, err
    for flag in (a for a in args if a.startswith("--")):
        assert flag in out, f"{script} has no {flag}"


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")
                                          if "--model-dir" in p.read_text()))
def test_benchmarks_answer_a_bad_model_folder_with_one_line(script, tmp_path, monkeypatch, capsys):
    status, _, err = run_benchmark(script, "--model-dir", str(tmp_path), monkeypatch=monkeypatch, capsys=capsys)
    assert status == 2
    assert err.splitlines()[-1] == (
        f"{script}: error: argument --model-dir: {tmp_path} is not a prepared model folder (it has no config.json); "
        "make one with `snakemake --cores 2 resources/models/<name>` (a name among the config's models) and point at it")
