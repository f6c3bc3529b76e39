"""The Snakemake workflow itself: lint, format, the smoke run end to end (one run, read by small focused
tests), the same numbers from a second run, the jobs an edit reruns, and config errors."""

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from runner import ROOT, SMOKE, gone, snakemake, snakemake_command
from snakemake.utils import validate

from soft_tokens.core.io import parquet_metadata
from soft_tokens.core.job_settings import DERIVED, TOP
from soft_tokens.core.runlog import lock_path
from soft_tokens.core.warm_start import SWITCH
from soft_tokens.report.digest import inline_html, parts, table_cells
from soft_tokens.workflow import OWNER


def summary(run: Path, name: str) -> pd.DataFrame:
    return pd.read_parquet(run / "results" / f"{name}.parquet")


def section(run: Path, title: str) -> str:
    tex = (run / "results" / "report.tex").read_text()
    return tex[tex.index(title):]


def test_lint_is_clean():
    run = snakemake("--lint", "--configfile", str(SMOKE))
    assert "Congratulations, your workflow is in a good condition!" in run.stdout + run.stderr


def test_snakefmt_is_clean():
    run = subprocess.run([str(Path(sys.executable).parent / "snakefmt"), "--check", "."], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_smoke_cramming_rows_carry_every_variant_and_protocol(smoke_run):
    cram = summary(smoke_run, "cramming_summary")
    rows = cram.groupby(["optimizer", "variant"]).size().to_dict()  # per corpus: seed x 3 variants, fast x 2
    assert rows == {("seed", "2leading"): 2, ("seed", "base"): 2, ("seed", "bos"): 2, ("fast", "2leading"): 2,
                    ("fast", "base"): 2}
    assert set(cram.loc[cram["optimizer"] == "seed", "init"]) == {"uniform"}
    assert (cram["n_samples"] == 2).all() and (cram["n_failed"] == 0).all()
    means = cram.filter(regex="^mean_|mismatch@[12]$")
    bf16 = means.filter(regex="^mean_greedy_convergence_bf16")  # a second decode in bf16: none for a bf16 model
    assert bf16.isna().all(axis=1).equals(cram["dtype"] == "bfloat16") and (cram["dtype"] == "bfloat16").any()
    means = means.drop(columns=bf16.columns)
    assert means.notna().all().all() and np.isfinite(means.to_numpy()).all()
    assert (cram["mean_teacher_forcing_convergence_low"] <= cram["mean_teacher_forcing_convergence"]).all()
    tex = section(smoke_run, "Cramming")  # two texts per row, each mean with its interval; the protocol stated
    assert "tiny-llama & bos & seed & 8 & 2 & " in tex
    assert "fast (after\\_bos, margin 1.0, float32), at most 8 steps and 2 restarts" in tex
    assert "seed (first, uniform init, stop 0.99, bfloat16), at most 8 steps" in tex
    log = smoke_run / "logs" / "cramming" / "tiny-llama" / "random_words" / "len8_mem1_bos_uniform_seed.log"
    assert log.exists() and (smoke_run / "results" / "figures" / "accuracy_vs_steps.png").exists()


def test_smoke_capacity_searches_go_past_their_first_length(smoke_run):
    stages = summary(smoke_run, "capacity_stages")
    assert set(stages["corpus"]) == {"embedded_prose", "random_words"}
    # hidden_capacity's protocol in its own layout: vectors first, BOS given and unscored
    assert set(zip(stages["optimizer"], stages["variant"], stages["placement"])) == {("hidden_capacity", "bos", "first")}
    assert (stages.groupby("corpus")["stage"].nunique() >= 2).all()
    capacity = summary(smoke_run, "cramming_capacity")
    assert len(capacity) == 2 and (capacity["capacity_tokens"] >= 0).all()


def test_smoke_converter_and_recursive_demo(smoke_run):
    converter = summary(smoke_run, "converter_summary")
    assert sorted(zip(converter["layer"], converter["arch"])) == [(-1, "linear"), (-1, "mlp"), (1, "linear"),
                                                                   (1, "mlp")]
    assert (converter["n_heldout"] > 0).all() and converter["cosine"].between(-1, 1).all()
    demo = summary(smoke_run, "recursive_demo_summary")
    assert set(demo["condition"]) == {"none", "converter", "full_text"} and (demo["n_passages"] == 2).all()
    generations = smoke_run / "results" / "converter" / "tiny-llama" / "recursive_demo.jsonl"
    assert len(generations.read_text().splitlines()) == 2 * 3


def test_smoke_estar_and_compressors(smoke_run):
    estar = pd.read_parquet(smoke_run / "results" / "estar" / "tiny-llama" / "estar.parquet")
    assert set(estar.loc[estar["has_estar"], "status"]) <= {"converged", "patience", "max_steps"}
    assert estar.groupby("split")["has_estar"].sum().to_dict() == {"held_out": 2, "train": 2}
    compressors = summary(smoke_run, "compressor_summary")
    assert sorted(compressors["arch"]) == ["hyper", "qattn"] and (compressors["n_contexts"] == 2).all()
    assert "tiny-llama, $k$ = 2 vectors, 2 held-out contexts" in section(smoke_run, "e* and the compressor")
    assert (smoke_run / "results" / "figures" / "compressor_ce.png").exists()


def test_smoke_coconut_evaluates_every_stage_of_every_method_for_both_seeds(smoke_run):
    coconut = summary(smoke_run, "coconut_summary")
    stages = coconut.groupby("method")["stage"].apply(list)
    # gsm_symbolic starts from the CoT run (stages 1, 2), prosqa from the pretrained model (stage 0 too).
    assert stages.to_dict() == {"coconut": [1, 2, 0, 1, 2], "coconut_nocurriculum": [2, 2], "cot": [0, 0],
                                "nocot": [0, 0], "pause": [1, 2, 0, 1, 2]}
    assert set(coconut["dataset"]) == {"gsm_symbolic", "prosqa"}
    final = coconut[coconut["final"]].set_index(["dataset", "method"])
    # prosqa: every method trains 3 epochs; gsm_symbolic's latent methods the 2 after CoT's first. The
    # controls sit on the controlled methods' rows.
    assert final.groupby("dataset")["train_epochs"].unique().map(list).to_dict() == {"gsm_symbolic": [2.0, 3.0],
                                                                                      "prosqa": [3.0]}
    assert final.loc[("prosqa", "coconut"), ["zeros_drop", "random_drop", "other_drop"]].notna().all()
    assert final.loc[("prosqa", "pause"), ["zeros_drop", "random_drop"]].notna().all()
    assert pd.isna(final.loc[("prosqa", "pause"), "other_drop"]) and pd.isna(final.loc[("prosqa", "cot"), "zeros_drop"])
    assert (coconut["n_seeds"] == 2).all() and coconut["accuracy_sd"].notna().all()
    assert (coconut["accuracy_low"] <= coconut["accuracy"]).all()
    assert (coconut["mean_tokens"] <= coconut["mean_tokens_high"]).all()
    for seed in (1337, 1338):
        run = smoke_run / "results" / "coconut" / "tiny-llama" / "prosqa" / f"seed{seed}" / "coconut"
        assert (run / "stage2" / "history.json").exists()
    tex = section(smoke_run, "Coconut: reasoning")  # Table 1: a row per method over both datasets
    for method in ("No-CoT", "CoT", "Pause as thought", "Coconut w/o curriculum", "Coconut"):
        assert len([r for r in tex.splitlines() if r.startswith(f"{method} & ") and "(sd " in r]) == 1
    assert (smoke_run / "results" / "figures" / "coconut_accuracy_by_stage.png").exists()


def test_smoke_pooler_evaluates_every_method_at_both_windows(smoke_run):
    pooler = summary(smoke_run, "pooler_summary")
    per_window = {w: sorted(g["method"] + "/" + g["split"]) for w, g in pooler.groupby("window")}
    assert per_window == {1: ["cot/test", "full/test", "none/test"],
                          **{w: ["dropped/test", "online/test", "other/test", "pooler/test", "pooler/train",
                                 "sum/test", "untrained/test"] for w in (2, 4)}}
    assert pooler.groupby("split")["n"].unique().map(list).to_dict() == {"test": [4], "train": [6]}
    assert "Online compression & 4 & 4 & " in section(smoke_run, "Reasoning-window pooling")
    assert (smoke_run / "results" / "figures" / "pooler_compression.png").exists()


def test_smoke_hrpo_evaluates_the_start_model_and_every_method(smoke_run):
    hrpo = summary(smoke_run, "hrpo_summary")
    assert hrpo["policy"].tolist() == ["start", "grpo", "probs", "projection"]
    assert (hrpo["problems"] == 4).all() and (hrpo["seeds"] == 1).all()
    history = pd.read_parquet(smoke_run / "results" / "hrpo" / "tiny-llama" / "prosqa" / "probs" / "seed1337" /
                              "history.parquet")
    assert history["step"].tolist() == [1, 2] and history["hidden_ratio"].between(0, 1).all()
    assert "HRPO, projection state & 1 & 4 & " in section(smoke_run, "HRPO: hybrid latent reasoning")
    for name in ("hrpo_training", "hrpo_hidden_ratio"):
        assert (smoke_run / "results" / "figures" / f"{name}.png").exists()


def test_smoke_run_keeps_benchmarks_and_builds_the_html_report(smoke_run):
    assert (smoke_run / "results" / "benchmarks" / "prepare_model" / "tiny-llama.tsv").exists()
    html = smoke_run / "results" / "report.html"
    report = snakemake("--report", str(html), "--configfile", str(SMOKE), "--directory", str(smoke_run))
    assert report.returncode == 0 and html.exists(), report.stderr[-3000:]


def test_every_job_of_the_smoke_run_records_where_its_time_went(smoke_run):
    """One phases record per job (beside its log), each phase within the job's wall time, and the profile
    of benchmarks/profile_default.py adding up per track to what the jobs' benchmark files measured."""
    benchmarks = sorted((smoke_run / "results" / "benchmarks").rglob("*.tsv"))
    records = sorted((smoke_run / "logs").rglob("*.phases.json"))
    assert len(records) == len(benchmarks) > 50
    for record in records:
        spent = json.loads(record.read_text())
        assert 0 < spent["start-up"] and sum(v for k, v in spent.items() if k != "wall") <= spent["wall"] + 0.01
    run = subprocess.run([sys.executable, "benchmarks/profile_default.py", str(smoke_run)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = {line.split()[0]: line.split() for line in run.stdout.splitlines()[2:] if line.strip()}
    assert {"cramming", "coconut", "hrpo", "pooler", "estar", "total"} <= set(rows)
    measured = sum(pd.read_csv(f, sep="\t")["s"].sum() for f in benchmarks) / 60
    assert 0.6 * measured <= float(rows["total"][2]) <= measured  # each process's life within its job's
    assert "share of all job time: start-up" in run.stdout


def test_smoke_run_documents_its_results_with_their_provenance(smoke_run):
    digest = (smoke_run / "docs" / "results.md").read_text()
    assert "Generated from a run of `config/smoke.yaml` at commit `" in digest
    record = yaml.safe_load((smoke_run / "results" / "provenance.yaml").read_text())
    assert record["config"] == "config/smoke.yaml" and record["version_torch"] == torch.__version__
    assert re.fullmatch(r"[0-9a-f]{12}(-dirty)?", record["commit"]) and f"`{record['commit']}`" in digest
    for summary in (smoke_run / "results").glob("*_summary.parquet"):
        assert parquet_metadata(summary).keys() >= record.keys(), summary.name
        assert parquet_metadata(summary)["commit"] == record["commit"]
    document = (smoke_run / "results" / "report.tex").read_text()
    assert f"commit & \\texttt{{{record['commit']}}}" in document and "transformers & " in document
    # results/table.tex is the seed's table alone, one float per corpus, to \input elsewhere.
    seed = (smoke_run / "results" / "table.tex").read_text()
    assert seed.count("\\begin{table}") == 2 and "the seed's table" in seed and "\\section" not in seed
    titles = [line for line in digest.splitlines() if line.startswith("## ")]
    assert len(titles) == 6 and titles[0].startswith("## Cramming") and titles[-1].startswith("## HRPO")
    assert "| Online compression | 4 | 4 | " in digest and "\\" not in digest


def test_each_tracks_html_page_holds_its_tables_and_findings(smoke_run):
    """The Snakemake report's view of a section: every table (caption, header, each row's cells), its key
    findings and every finding; and no section prints NaN."""
    for tex in (smoke_run / "results" / "sections").glob("*.tex"):
        page = (tex.with_suffix(".html")).read_text()
        title, protocol, tables, key, findings = parts(tex.read_text())
        assert f"<h2>{inline_html(title)}</h2>" in page and inline_html(protocol) in page
        for block in tables:
            caption, header, rows = table_cells(block)
            assert f"<caption>{inline_html(caption)}</caption>" in page
            for row in rows:
                assert "".join(f"<td>{inline_html(c)}</td>" for c in row) in page
        assert page.count("<li>") == len(key) + len(findings) and all(inline_html(f) in page for f in key + findings)
        assert key and "[" in page and "]" in page  # intervals
        assert not re.search(r"\bnan\b", tex.read_text(), re.I), f"{tex.name} prints NaN"


def test_every_training_rule_leaves_a_training_curve_the_report_draws(smoke_run):
    results = smoke_run / "results"
    curves = {"train_converter": list(results.glob("converter/*/*_curve.parquet")),
              "train_compressor": list(results.glob("compressor/*/*_curve.parquet")),
              "train_pooler": list(results.glob("pooler/*/*/w*/curve.parquet")),
              "train_coconut": list(results.glob("coconut/*/*/seed*/*/curve.parquet")),
              "train_hrpo": list(results.glob("hrpo/*/*/*/seed*/history.parquet"))}
    for rule, files in curves.items():
        assert files, f"{rule} left no curve"
        for path in files:
            curve = pd.read_parquet(path)
            x = "step" if "step" in curve else "epoch"
            assert len(curve) and list(curve[x]) == list(range(1, len(curve) + 1)), path
            assert curve.filter(regex="loss|reward").notna().all().all() and "model" in curve, path
    cram = pd.concat(map(pd.read_parquet, results.glob("cramming/*/*/len*.parquet")))
    assert cram["curve_steps"].map(len).gt(0).all()  # cramming keeps each text's curve in its own table
    estar = pd.concat(map(pd.read_parquet, results.glob("estar/*/estar.parquet")))  # and e* each context's
    optimised = estar[estar["has_estar"]]
    assert len(optimised) and (optimised["accuracy_curve"].map(len) == optimised["steps"]).all()
    for figure in ("converter_training", "compressor_training", "estar_optimisation", "pooler_training",
                   "coconut_training", "hrpo_training", "accuracy_vs_steps"):
        assert (results / "figures" / f"{figure}.png").stat().st_size > 0


def test_every_job_kind_reads_every_key_its_spec_declares(smoke_run):
    """A declared key no job reads would rerun jobs for nothing when edited (an undeclared one is not there
    to read: the job fails naming the spec). Every job kind ran in the smoke run, which records its reads."""
    reads = {}
    for record in (smoke_run / ".reads").glob("*.json"):
        reads.setdefault(record.name.split(".")[0], set()).update(json.loads(record.read_text()))
    for rule, track in OWNER.items():
        kind = track.JOBS[rule]
        declared = {*kind.keys(), *kind.keys(TOP), *kind.keys(DERIVED)}
        assert declared <= reads.get(rule, set()), f"{rule} never reads {sorted(declared - reads.get(rule, set()))}"


# Wall-clock columns: the only ones two runs of one config may differ in (docs/statistics.md).
TIMING = re.compile(r"(^|_)seconds($|_)")


def parquet_tables(workdir: Path) -> dict:
    """Every parquet file the run's jobs wrote (results/<track>/... and resources/), without timing columns;
    the summaries (results/*.parquet) depend on which runs exist, so they are left out."""
    tables = {}
    for path in sorted([*(workdir / "results").glob("*/**/*.parquet"), *(workdir / "resources").rglob("*.parquet")]):
        table = pd.read_parquet(path)
        tables[str(path.relative_to(workdir))] = table.drop(columns=[c for c in table if TIMING.search(c)])
    return tables


# Jobs the same-config rerun starts in fresh processes: seeded training and sampling of three tracks, with
# the jobs they need.
FRESH = ("results/cramming/tiny-llama/random_words/len8_mem1_base_randn_fast.parquet",
         "results/coconut/tiny-llama/prosqa/seed1337/eval_coconut.parquet",
         "results/hrpo/tiny-llama/prosqa/probs/seed1337/eval.parquet")


def test_same_config_same_numbers(smoke_run, tmp_path):
    """A second run from clean writes what the first wrote, timings aside. It runs every kind of job once
    (a reduced grid of the same config): a job reads exactly its own keys, so each job it repeats must
    write exactly what the first run's same job wrote. The first run's jobs were forks of its warm-start
    server; the second run's first jobs (FRESH and what they need) are fresh processes
    (SOFT_TOKENS_WARM_START=0), so this also checks that a fork computes what a fresh process does."""
    fewer = yaml.safe_load(SMOKE.read_text())
    fewer["cramming"].update(corpora=["random_words"], variants=["base", "2leading"])
    fewer["converter"].update(layers=[1], archs=["mlp"])
    fewer["compressor"]["archs"] = ["qattn"]
    fewer["coconut"].update(datasets=["prosqa"], seeds=[1337], methods=["cot", "coconut"])
    fewer["pooler"]["windows"] = [2]
    fewer["hrpo"]["methods"] = ["probs"]
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(fewer))
    again = tmp_path / "again"
    args = ["--cores", "2", "--configfile", str(tmp_path / "fewer.yaml"), "--directory", str(again)]
    fresh = snakemake(*args, *FRESH, env={**os.environ, SWITCH: "0"})
    assert fresh.returncode == 0, (fresh.stdout + fresh.stderr)[-5000:]
    assert not (again / "logs" / "warm_start.log").exists()
    rest = snakemake(*args, "all")
    assert rest.returncode == 0, (rest.stdout + rest.stderr)[-5000:]
    scheduled_rules = rest.stdout + rest.stderr
    assert "rule cram:" in scheduled_rules and "rule train_hrpo:" not in scheduled_rules  # the fresh ones kept
    assert "modules preloaded" in (smoke_run / "logs" / "warm_start.log").read_text()
    first, second = parquet_tables(smoke_run), parquet_tables(again)
    assert set(second) < set(first) and len(second) > 20 and set(FRESH) < set(second)
    for name, table in second.items():
        pd.testing.assert_frame_equal(first[name], table, obj=name)


def scheduled(workdir, config: dict) -> dict:
    """The job counts a dry run of `config` in `workdir` schedules (after a complete run there)."""
    path = workdir / "edited.yaml"
    path.write_text(yaml.safe_dump(config))
    run = snakemake("-n", "--configfile", str(path), "--directory", str(workdir), "all")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    counts = re.findall(r"^(\w+)\s+(\d+)$", run.stdout.split("Job stats:")[-1], re.MULTILINE) \
        if "Job stats:" in run.stdout else []
    return {job: int(n) for job, n in counts if job != "total" and job != "compile_report"}


def test_edits_rerun_exactly_the_jobs_they_touch(smoke_run):
    smoke = yaml.safe_load(SMOKE.read_text())
    assert scheduled(smoke_run, smoke) == {}
    resources = copy.deepcopy(smoke)
    for track in ("cramming", "coconut", "pooler", "hrpo"):
        resources[track].update(runtime=999, mem_mb=123)
    # Scheduler resources are no job's parameters: only the record of the config is rewritten.
    assert scheduled(smoke_run, resources) == {"effective_config": 1, "all": 1}
    # Any other edit rewrites the report and the record of the config besides the jobs it touches.
    report = {"render_report": 1, "document_results": 1, "effective_config": 1, "all": 1}
    longer = copy.deepcopy(smoke)
    longer["cramming"]["lengths"] = [8, 12]
    assert scheduled(smoke_run, longer) == {"cram": 10, "summarize_cramming": 1, **report}
    decoding = copy.deepcopy(smoke)
    decoding["coconut"]["controls"] = ["zeros"]  # evaluation only: re-evaluate, never retrain
    assert scheduled(smoke_run, decoding) == {"eval_coconut": 20, "summarize_coconut": 1, **report}
    online = copy.deepcopy(smoke)
    online["pooler"]["max_new_tokens"] = 9  # evaluation only: the poolers are not retrained
    assert scheduled(smoke_run, online) == {"eval_pooler": 2, "eval_pooler_baselines": 1, "summarize_pooler": 1,
                                            **report}
    base = copy.deepcopy(smoke)
    base["pooler"]["main"] = "base"  # the prepared model as the main LM: every pooler job, nothing else
    assert scheduled(smoke_run, base) == {"train_pooler": 2, "eval_pooler": 2, "eval_pooler_baselines": 1,
                                          "summarize_pooler": 1, **report}
    seeds = copy.deepcopy(smoke)
    seeds["coconut"]["seeds"] = [1337, 1338, 1339]  # one more seed: its runs alone, and the summary
    assert scheduled(smoke_run, seeds) == {"train_coconut": 10, "eval_coconut": 10, "summarize_coconut": 1, **report}
    hrpo_seeds = copy.deepcopy(smoke)
    hrpo_seeds["hrpo"]["seeds"] = [1337, 1338]  # one more HRPO seed: each method once more; the start model stays
    assert scheduled(smoke_run, hrpo_seeds) == {"train_hrpo": 3, "eval_hrpo": 3, "summarize_hrpo": 1, **report}


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
    path.write_text(SMOKE.read_text() + text)
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


def slow_cram_job(tmp_path: Path, n_samples: int):
    """One cram job of `n_samples` slow samples, started in the background and waited on until its first
    sample is done: its Snakemake arguments, target, half-done work folder and Snakemake process."""
    config = yaml.safe_load(SMOKE.read_text())
    config["cramming"].update(corpora=["embedded_prose"], variants=["base"], optimizers=["hidden_capacity"],
                              n_samples=n_samples, batch_size=1, max_steps=100, patience=100)
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(config))
    target = "results/cramming/tiny-llama/embedded_prose/len8_mem1_base_randn_hidden_capacity.parquet"
    args = ["--cores", "1", "--configfile", str(path), "--directory", str(tmp_path), target]
    partial = tmp_path / (target + ".partial")
    proc = subprocess.Popen([*snakemake_command(), *args], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    while not list(partial.glob("sample_*.json")) and proc.poll() is None:  # the hang guard is pytest's timeout
        time.sleep(0.05)
    return args, target, partial, proc


def test_a_hard_killed_run_resumes_after_unlock_keeping_finished_samples(tmp_path):
    """kill -9 of snakemake leaves its lock: the rerun says so, `--unlock` clears it, and the rerun
    then keeps the samples that finished before the kill (as docs/pipeline.md says)."""
    args, target, partial, proc = slow_cram_job(tmp_path, n_samples=4)
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


def test_a_second_copy_of_a_running_job_stops_at_once_and_the_first_resumes(tmp_path):
    """kill -9 of Snakemake alone leaves its job running; `--unlock` and the same command (the recovery
    the lock message invites) used to start a second copy on the same half-done work, whose failure
    had Snakemake delete the first copy's finished result. The second copy now stops at once, naming
    the first; ending that one (as the message says) and rerunning resumes its finished samples."""
    args, target, partial, first = slow_cram_job(tmp_path, n_samples=2)
    job = int(re.search(r"PID (\d+)", (tmp_path / lock_path(target)).read_text()).group(1))
    os.kill(job, signal.SIGSTOP)  # still running, however slow the machine is
    first.send_signal(signal.SIGKILL)  # Snakemake alone: its job goes on
    first.wait()
    assert snakemake("--unlock", *args).returncode == 0
    second = snakemake(*args)
    out = second.stdout + second.stderr
    assert second.returncode != 0 and "Traceback" not in out
    assert f"PID {job} on {os.uname().nodename} is already writing {target}; a second copy of the job would " \
           "overwrite its work, so this one stops" in out, out[-3000:]
    before = {f.name: json.loads(f.read_text()) for f in partial.glob("sample_*.json")}
    assert before  # the first one's work is untouched
    os.kill(job, signal.SIGKILL)
    while not gone(job):
        time.sleep(0.05)
    rerun = snakemake(*args)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    after = pd.read_parquet(tmp_path / target).set_index("sample_id")
    for record in before.values():  # resumed, not recomputed
        assert after.loc[record["sample_id"], "seconds"] == record["seconds"]


def copy_run(run: Path, to: Path) -> Path:
    """A finished run folder copied as `cp -a` copies it (times kept)."""
    shutil.copytree(run, to, symlinks=True, ignore=shutil.ignore_patterns("locks"))
    return to


def test_a_copied_checkout_and_run_schedule_nothing_until_a_script_changes(smoke_run, tmp_path):
    """A clone (or any copy that does not keep times) makes every script newer than the outputs, and
    Snakemake's code trigger used to redo the whole run; now only a script whose content changed reruns."""
    code = tmp_path / "checkout"
    code.mkdir()
    shutil.copy(ROOT / "Snakefile", code)
    for part in ("rules", "workflow", "src", "config", "envs", "profiles", "report"):
        shutil.copytree(ROOT / part, code / part, copy_function=shutil.copy,  # new times, as a clone's
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = copy_run(smoke_run, tmp_path / "run")
    args = ["-n", "--configfile", str(code / "config" / "smoke.yaml"), "--directory", str(run)]
    moved = snakemake(*args, snakefile=code / "Snakefile", cwd=code)
    assert moved.returncode == 0 and "Nothing to be done" in moved.stdout, (moved.stdout + moved.stderr)[-3000:]
    script = code / "workflow" / "scripts" / "summarize_hrpo.py"
    script.write_text(script.read_text() + "# an edit\n")
    edited = snakemake(*args, snakefile=code / "Snakefile", cwd=code)
    assert "rule summarize_hrpo:" in edited.stdout and "Code has changed since last execution" in edited.stdout
    assert "rule train_hrpo:" not in edited.stdout


def flip_middle_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_outputs_are_named_and_a_damaged_stage_costs_only_that_stage(smoke_run, tmp_path):
    """Bytes changed inside a result parquet and a converter checkpoint (framing intact), a prepared
    model's tokenizer deleted, a Coconut stage's weights changed: the dry run used to say "Nothing to be
    done" and the report read the changed numbers. Each is named with its command; the stage's command
    makes the run redo that stage and the ones trained from it, keeping the stages before it."""
    run = copy_run(smoke_run, tmp_path / "run")
    coconut = "results/coconut/tiny-llama/prosqa/seed1337/coconut"
    damaged = {"results/cramming_summary.parquet": flip_middle_byte,
               "results/converter/tiny-llama/converter_layer1_linear.pt": flip_middle_byte,
               "resources/models/tiny-llama/tokenizer.json": Path.unlink,
               f"{coconut}/stage1/model.safetensors": flip_middle_byte}
    originals = {rel: (run / rel).read_bytes() for rel in damaged}
    for rel, damage in damaged.items():
        damage(run / rel)
    dry = snakemake("-n", "--configfile", str(SMOKE), "--directory", str(run))
    out = dry.stdout + dry.stderr
    assert dry.returncode != 0
    for line in ("results/cramming_summary.parquet: its bytes were changed after it was written",
                 "results/converter/tiny-llama/converter_layer1_linear.pt: its bytes were changed",
                 "resources/models/tiny-llama: tokenizer.json is missing",
                 f"{coconut}/stage1: model.safetensors was changed after it was written",
                 f"  cd {run}\n", "  rm -r results/cramming_summary.parquet\n", "  rm -r resources/models/tiny-llama\n",
                 f"  mv {coconut} {coconut}.partial && rm -r {coconut}.partial/stage1\n"):
        assert line in out, out[-3000:]
    for rel, data in originals.items():
        if rel.startswith("results/coconut"):
            continue
        (run / rel).write_bytes(data)  # the other damage undone: only the stage is left to repair
    kept = (run / coconut / "stage0" / "identity.sha256").read_text()
    assert subprocess.run(f"mv {coconut} {coconut}.partial && rm -r {coconut}.partial/stage1", shell=True,
                          cwd=run).returncode == 0
    redo = snakemake("--cores", "2", "--configfile", str(SMOKE), "--directory", str(run), coconut)
    assert redo.returncode == 0, (redo.stdout + redo.stderr)[-3000:]
    log = (run / "logs" / "coconut" / "tiny-llama" / "prosqa" / "seed1337" / "train_coconut.log").read_text()
    assert "stage 2 follows a missing stage; training it again" in log and "after finished stage 0" in log
    assert (run / coconut / "stage0" / "identity.sha256").read_text() == kept
    assert [p.name for p in sorted((run / coconut).glob("stage*"))] == ["stage0", "stage1", "stage2"]
