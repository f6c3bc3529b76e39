"""The Snakemake workflow itself: lint, format, the smoke DAG end to end, and config errors."""

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

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
def test_smoke_dag_writes_the_tables_and_reruns_only_what_an_edit_touches(tmp_path):
    run = snakemake("--cores", "2", "--configfile", str(ROOT / "config" / "smoke.yaml"), "--directory",
                    str(tmp_path), "all", timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    tex = (tmp_path / "results" / "table.tex").read_text()
    for variant in ("base", "bos", "2leading"):  # two texts per row, each mean with its interval
        assert f"tiny-llama\\_{variant} & anchor & 8 & 2 & " in tex
    assert "tiny-llama\\_base & fast & 8 & 2 & " in tex
    assert "fast (after\\_bos, margin 1.0, float32), at most 8 steps and 2 restarts" in tex  # the protocol
    assert r"tiny-llama & -1 & linear & " in tex and r"tiny-llama & 1 & mlp & " in tex  # the converter table
    assert r"tiny-llama & 1 & mlp & no prefix & 2 & " in tex  # the recursive demo, two passages
    generations = (tmp_path / "results" / "converter" / "tiny-llama" / "recursive_demo.jsonl").read_text()
    assert len(generations.splitlines()) == 2 * 3
    compressor = tex[tex.index("e* and the compressor"):]  # two held-out contexts; a row per compressor
    assert "tiny-llama, $k$ = 2 vectors, 2 held-out contexts" in compressor
    assert "\nHyperPromptNet & " in compressor and "\nquery attention & " in compressor
    assert (tmp_path / "results" / "figures" / "compressor_ce.png").exists()
    # Coconut: Table 1's five rows over both datasets, every stage evaluated for both seeds, the stage figure.
    coconut = tex[tex.index("Coconut: reasoning"):]
    for method in ("No-CoT", "CoT", "Pause as thought", "Coconut w/o curriculum", "Coconut"):
        assert len([r for r in coconut.splitlines() if r.startswith(f"{method} & ") and "(sd " in r]) == 1
    assert r"\multicolumn{2}{c}{gsm\_symbolic ($n = 2 \times 4$)} & \multicolumn{2}{c}{prosqa ($n = 2 \times 4$)}" \
        in coconut
    coconut_summary = pd.read_parquet(tmp_path / "results" / "coconut_summary.parquet")
    stages = coconut_summary.groupby("method")["stage"].apply(list)
    assert stages.to_dict() == {"coconut": [1, 2, 1, 2], "coconut_nocurriculum": [2, 2], "cot": [0, 0],
                                "nocot": [0, 0], "pause": [1, 2, 1, 2]}
    assert (coconut_summary["n_seeds"] == 2).all() and coconut_summary["accuracy_sd"].notna().all()
    assert (coconut_summary["accuracy_low"] <= coconut_summary["accuracy"]).all()
    assert (coconut_summary["mean_tokens"] <= coconut_summary["mean_tokens_high"]).all()
    assert (tmp_path / "results" / "figures" / "coconut_accuracy_by_stage.png").exists()
    for seed in (1337, 1338):
        run = tmp_path / "results" / "coconut" / "tiny-llama" / "prosqa" / f"seed{seed}" / "coconut"
        assert (run / "stage2" / "history.json").exists()
    # The pooler: both W's with every method, the training problems beside the test ones, the online table.
    pooler = tex[tex.index("Reasoning-window pooling"):]
    for row in ("No reasoning & 1 & 4 & ", "Full reasoning & 1 & 4 & ", "Trained pooler & 2 & 4 & ",
                "Sum / sqrt(W) & 4 & 4 & ", "Windows dropped & 4 & 4 & ", "Trained pooler (train split) & 2 & 6 & ",
                "Plain CoT (own reasoning) & 1 & 4 & ", "Online compression & 4 & 4 & "):
        assert row in pooler, row
    assert (tmp_path / "results" / "figures" / "pooler_compression.png").exists()
    # HRPO: the start model and the three trained methods, one seed each, and both training figures.
    hrpo = tex[tex.index("HRPO: hybrid latent reasoning"):]
    for name in ("Start model (no RL)", "GRPO (no gate)", "HRPO, probs state", "HRPO, projection state"):
        assert f"{name} & 1 & 4 & " in hrpo, name
    for name in ("hrpo_training", "hrpo_hidden_ratio"):
        assert (tmp_path / "results" / "figures" / f"{name}.png").exists()
    history = pd.read_parquet(tmp_path / "results" / "hrpo" / "tiny-llama" / "prosqa" / "probs" / "seed1337" /
                              "history.parquet")
    assert history["step"].tolist() == [1, 2] and history["hidden_ratio"].between(0, 1).all()
    summary = pd.read_parquet(tmp_path / "results" / "cramming_summary.parquet")
    assert len(summary) == 10 and (summary["n_samples"] == 2).all() and (summary["n_failed"] == 0).all()
    means = summary.filter(regex="^mean_|mismatch@[12]$")
    assert means.notna().all().all() and np.isfinite(means.to_numpy()).all()
    assert (tmp_path / "logs" / "cramming" / "tiny-llama" / "random_words" / "len8_mem1_bos_randn_anchor.log").exists()
    stages = pd.read_parquet(tmp_path / "results" / "capacity_stages.parquet")
    assert set(stages["corpus"]) == {"embedded_prose", "random_words"} and (stages["optimizer"] == "fast").all()
    assert (stages.groupby("corpus")["stage"].nunique() >= 2).all()  # the search went on past its first length
    assert (tmp_path / "results" / "benchmarks" / "prepare_model" / "tiny-llama.tsv").exists()
    report = snakemake("--report", str(tmp_path / "results" / "report.html"), "--configfile",
                       str(ROOT / "config" / "smoke.yaml"), "--directory", str(tmp_path))
    assert report.returncode == 0 and (tmp_path / "results" / "report.html").exists(), report.stderr[-3000:]
    estar = pd.read_parquet(tmp_path / "results" / "estar" / "tiny-llama" / "estar.parquet")
    assert set(estar.loc[estar["has_estar"], "status"]) <= {"converged", "patience", "max_steps"}
    assert estar.groupby("split")["has_estar"].sum().to_dict() == {"held_out": 2, "train": 2}

    # Same config, same numbers: a second run from clean writes identical tables, timings aside. To keep
    # the suite short it runs Coconut on one dataset and seed (its other 30 jobs would repeat the same
    # code); a job reads exactly its own keys, so every job it repeats must write what the first run did.
    smoke = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    fewer = copy.deepcopy(smoke)
    fewer["coconut"].update(datasets=["prosqa"], seeds=[1337])
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(fewer))
    again = snakemake("--cores", "2", "--configfile", str(tmp_path / "fewer.yaml"), "--directory",
                      str(tmp_path / "again"), "all", timeout=900)
    assert again.returncode == 0, (again.stdout + again.stderr)[-5000:]
    first, second = parquet_tables(tmp_path), parquet_tables(tmp_path / "again")
    assert set(second) < set(first) and len(second) > 30
    for name, table in second.items():
        if name != "results/coconut_summary.parquet":  # a summary over fewer runs
            pd.testing.assert_frame_equal(first[name], table, obj=name)

    # Edits a dry run must answer with exactly the jobs they touch, and nothing else.
    assert scheduled(tmp_path, smoke) == {}
    resources = copy.deepcopy(smoke)
    resources["cramming"].update(runtime=999, mem_mb=123)
    resources["coconut"].update(runtime=999, mem_mb=123)
    resources["pooler"].update(runtime=999, mem_mb=123)
    resources["hrpo"].update(runtime=999, mem_mb=123)
    # Scheduler resources are no job's parameters: only the record of the config is rewritten.
    assert scheduled(tmp_path, resources) == {"effective_config": 1, "all": 1}
    longer = copy.deepcopy(smoke)
    longer["cramming"]["lengths"] = [8, 12]
    assert scheduled(tmp_path, longer) == {"cram": 10, "summarize_cramming": 1, "render_report": 1,
                                           "effective_config": 1, "all": 1}
    decoding = copy.deepcopy(smoke)
    decoding["coconut"]["max_new_tokens"] = 9  # evaluation only: re-evaluate, never retrain
    assert scheduled(tmp_path, decoding) == {"eval_coconut": 20, "summarize_coconut": 1, "render_report": 1,
                                             "effective_config": 1, "all": 1}
    online = copy.deepcopy(smoke)
    online["pooler"]["max_new_tokens"] = 9  # evaluation only: the poolers are not retrained
    assert scheduled(tmp_path, online) == {"eval_pooler": 2, "eval_pooler_baselines": 1, "summarize_pooler": 1,
                                           "render_report": 1, "effective_config": 1, "all": 1}
    base = copy.deepcopy(smoke)
    base["pooler"]["main"] = "base"  # the prepared model as the main LM: every pooler job, nothing else
    assert scheduled(tmp_path, base) == {"train_pooler": 2, "eval_pooler": 2, "eval_pooler_baselines": 1,
                                         "summarize_pooler": 1, "render_report": 1, "effective_config": 1, "all": 1}
    seeds = copy.deepcopy(smoke)
    seeds["coconut"]["seeds"] = [1337, 1338, 1339]  # one more seed: its runs alone, and the summary
    assert scheduled(tmp_path, seeds) == {"train_coconut": 10, "eval_coconut": 10, "summarize_coconut": 1,
                                          "render_report": 1, "effective_config": 1, "all": 1}
    hrpo_seeds = copy.deepcopy(smoke)
    hrpo_seeds["hrpo"]["seeds"] = [1337, 1338]  # one more HRPO seed: each method once more; the start model stays
    assert scheduled(tmp_path, hrpo_seeds) == {"train_hrpo": 3, "eval_hrpo": 3, "summarize_hrpo": 1,
                                               "render_report": 1, "effective_config": 1, "all": 1}


# Wall-clock columns: the only ones two runs of one config may differ in (README: "Reading the numbers").
TIMING = re.compile(r"(^|_)seconds($|_)")


def parquet_tables(workdir: Path) -> dict:
    """Every parquet file the run wrote (results/ and resources/), without its timing columns."""
    tables = {}
    for path in sorted([*(workdir / "results").rglob("*.parquet"), *(workdir / "resources").rglob("*.parquet")]):
        table = pd.read_parquet(path)
        tables[str(path.relative_to(workdir))] = table.drop(columns=[c for c in table if TIMING.search(c)])
    return tables


def scheduled(workdir, config: dict) -> dict:
    """The job counts a dry run of `config` in `workdir` schedules (after a complete run there)."""
    path = workdir / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    run = snakemake("-n", "--configfile", str(path), "--directory", str(workdir), "all")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    counts = re.findall(r"^(\w+)\s+(\d+)$", run.stdout.split("Job stats:")[-1], re.MULTILINE) \
        if "Job stats:" in run.stdout else []
    return {job: int(n) for job, n in counts if job != "total" and job != "compile_report"}


@pytest.mark.parametrize("name", ["config.yaml", "smoke.yaml", "paper.yaml"])
def test_each_config_is_complete_on_its_own(tmp_path, name):
    """What a run uses is its config file alone (schema defaults filled in), never merged with the
    default config; results/config.yaml records it. Run from the repository root, as `make` does."""
    workdir = tmp_path / "run"
    run = snakemake("results/config.yaml", "--cores", "1", "--configfile", f"config/{name}", "--config",
                    f"workdir={workdir}")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    expected = yaml.safe_load((ROOT / "config" / name).read_text())
    expected["workdir"] = str(workdir)
    validate(expected, str(ROOT / "config" / "schema.yaml"))
    assert yaml.safe_load((workdir / "results" / "config.yaml").read_text()) == expected


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


@pytest.mark.timeout(600)
def test_a_hard_killed_run_resumes_after_unlock_keeping_finished_samples(tmp_path):
    """kill -9 of snakemake leaves its lock: the rerun says so, `--unlock` clears it, and the rerun
    then keeps the samples that finished before the kill (as the README says)."""
    config = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
    config["cramming"].update(corpora=["embedded_prose"], variants=["base"], optimizers=["anchor"], n_samples=4,
                              batch_size=1, max_steps=400, patience=400)
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(config))
    target = "results/cramming/tiny-llama/embedded_prose/len8_mem1_base_randn_anchor.parquet"
    args = ["--cores", "1", "--configfile", str(path), "--directory", str(tmp_path), target]
    partial = tmp_path / (target + ".partial")
    proc = subprocess.Popen([*SNAKEMAKE, *args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    while not list(partial.glob("sample_*.json")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {f.name: json.loads(f.read_text()) for f in partial.glob("sample_*.json")}
    assert 1 <= len(before) < 4, "the job must be killed mid-way"

    locked = snakemake(*args)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout + locked.stderr
    assert snakemake("--unlock", *args).returncode == 0
    rerun = snakemake(*args)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    after = pd.read_parquet(tmp_path / target).set_index("sample_id")
    assert len(after) == 4
    for record in before.values():  # reused as they were, wall time included, not recomputed
        assert after.loc[record["sample_id"], "seconds"] == record["seconds"]
        assert list(after.loc[record["sample_id"], "curve_loss"]) == record["curve_loss"]
