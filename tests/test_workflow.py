"""The Snakemake workflow itself: lint, format, the smoke DAG end to end, and config errors."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def snakemake(*args, cwd=ROOT, timeout=600):
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_lint_is_clean():
    run = snakemake("--lint", "--configfile", str(ROOT / "config" / "smoke.yaml"))
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


def test_snakefmt_is_clean():
    run = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.timeout(900)
def test_smoke_dag_writes_the_tables_with_all_variants(tmp_path):
    run = snakemake("--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml"), "--directory",
                    str(tmp_path), "all", timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    tex = (tmp_path / "results" / "table.tex").read_text()
    for variant in ("base", "bos", "2leading"):
        assert f"tiny-llama\\_{variant} & 8 &" in tex
    assert r"tiny-llama & -1 & linear &" in tex and r"tiny-llama & 1 & mlp &" in tex  # the converter table
    assert r"tiny-llama & 1 & mlp & 2 &" in tex  # the recursive demo, two passages
    generations = (tmp_path / "results" / "converter" / "tiny-llama" / "recursive_demo.jsonl").read_text()
    assert len(generations.splitlines()) == 2 * 3
    assert r"tiny-llama & hyper & 2 & 2 &" in tex and r"tiny-llama & qattn & 2 & 2 &" in tex  # the compressor table
    assert (tmp_path / "results" / "figures" / "compressor_ce.png").exists()
    # Coconut: Table 1's five rows over both datasets, every stage evaluated, the stage figure.
    coconut = tex[tex.index("Coconut: reasoning"):]
    for method in ("No-CoT", "CoT", "Pause as thought", "Coconut w/o curriculum", "Coconut"):
        assert len([r for r in coconut.splitlines() if r.startswith(f"{method} & ")]) == 1
    assert r"\multicolumn{2}{c}{gsm\_symbolic} & \multicolumn{2}{c}{prosqa}" in coconut
    stages = pd.read_parquet(tmp_path / "results" / "coconut_summary.parquet").groupby("method")["stage"].apply(list)
    assert stages.to_dict() == {"coconut": [1, 2, 1, 2], "coconut_nocurriculum": [2, 2], "cot": [0, 0],
                                "nocot": [0, 0], "pause": [1, 2, 1, 2]}
    assert (tmp_path / "results" / "figures" / "coconut_accuracy_by_stage.png").exists()
    assert (tmp_path / "results" / "coconut" / "tiny-llama" / "prosqa" / "coconut" / "stage2" / "history.json").exists()
    summary = pd.read_parquet(tmp_path / "results" / "cramming_summary.parquet")
    assert len(summary) == 18 and (summary["n_samples"] == 2).all()
    assert (tmp_path / "logs" / "cramming" / "tiny-llama" / "random_words" / "len8_mem1_bos_mean.log").exists()
    assert (tmp_path / "results" / "benchmarks" / "prepare_model" / "tiny-llama.tsv").exists()


def write_config(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text((ROOT / "config" / "smoke.yaml").read_text() + text)
    return str(path)


def test_bad_config_value_fails_before_any_job(tmp_path):
    run = snakemake("-n", "--configfile", write_config(tmp_path, "threads: many\n"), "--directory", str(tmp_path))
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "threads" in out and "'many' is not of type 'integer'" in out


def test_unknown_model_name_fails_with_the_key(tmp_path):
    bad = write_config(tmp_path, "")
    run = snakemake("-n", "--configfile", bad, "--config", "cramming={models: [gpt-x]}", "--directory",
                    str(tmp_path))
    assert run.returncode != 0 and "cramming.models names ['gpt-x']" in run.stdout + run.stderr
