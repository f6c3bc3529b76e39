"""Run the smoke workflow through the SLURM profile against fake SLURM commands.

tests/fake_slurm/ provides sbatch, sacct, squeue, srun, ... that run jobs on
this machine, so the profile and the executor plugin are exercised end to end
without a cluster, a GPU or network access.
"""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "profiles" / "slurm" / "profile.yaml"
FAKE_BIN = REPO / "tests" / "fake_slurm"
PARTITION, ACCOUNT = "fakepart", "fake_account"
GPU_RULES = {"cram", "capacity", "extract_pairs", "train_converter", "recursive_demo", "build_estar", "train_compressor",
             "eval_compressor", "train_coconut", "eval_coconut", "train_pooler", "eval_pooler",
             "eval_pooler_baselines", "train_hrpo", "eval_hrpo"}
LOCAL_RULES = {"all", "download_corpus", "build_reasoning_data", "summarize_cramming", "summarize_converter",
               "summarize_compressor", "summarize_coconut", "summarize_pooler", "summarize_hrpo", "render_report",
               "compile_report",
               "effective_config"}
RUN_TIMEOUT = 540


def rule_of(argv):
    """The plugin names the rule in --comment as rule_<name>[_wildcards_<w>]."""
    comment = argv[argv.index("--comment") + 1]
    return comment[len("rule_"):].split("_wildcards_")[0]


def kill_leftover_jobs(state):
    """Fake jobs run in their own sessions; stop any the run left behind."""
    for pid_file in state.glob("*.pid"):
        if not pid_file.with_suffix(".rc").exists():
            try:
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
            except (ProcessLookupError, ValueError, PermissionError):
                pass


def test_profile_has_placeholders_and_gpu_request():
    """Users must see what to edit; cram must ask for a GPU."""
    text = PROFILE.read_text()
    assert "<your-partition>" in text and "<your-account>" in text
    prof = yaml.safe_load(text)
    assert prof["executor"] == "slurm"
    assert prof["set-resources"]["cram"]["gpu"] == 1


@pytest.mark.timeout(600)
def test_smoke_run_on_fake_slurm(tmp_path):
    """Jobs reach sbatch with --gpus for cram; local rules are never submitted."""
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "profile.yaml").write_text(
        PROFILE.read_text()
        .replace("<your-partition>", PARTITION)
        .replace("<your-account>", ACCOUNT))
    work, state, log = tmp_path / "work", tmp_path / "state", tmp_path / "slurm.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{FAKE_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}"
             f"{env.get('PATH', '')}",
        FAKE_SLURM_STATE=str(state), FAKE_SLURM_LOG=str(log),
        FAKE_SLURM_ACCOUNT=ACCOUNT, FAKE_SLURM_PARTITION=PARTITION,
        FAKE_SLURM_JOB_TIMEOUT=str(RUN_TIMEOUT),
        CUDA_VISIBLE_DEVICES="", HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1")
    # Part of the smoke grid is enough to see submissions (every kind of job once); the full grid runs
    # in test_workflow.
    config = yaml.safe_load((REPO / "config" / "smoke.yaml").read_text())
    config["cramming"].update(inits=["randn"], corpora=["embedded_prose"])
    config["coconut"].update(datasets=["prosqa"], methods=["cot"])
    config["pooler"]["windows"] = [2]
    config["hrpo"]["methods"] = ["probs"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake",
           "--snakefile", str(REPO / "Snakefile"),
           "--workflow-profile", str(profile),
           "--configfile", str(tmp_path / "config.yaml"),
           "--directory", str(work),
           "--retries", "0",
           "--seconds-between-status-checks", "1",
           "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs"]
    out_file = tmp_path / "snakemake.out"
    with open(out_file, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        finally:
            kill_leftover_jobs(state)
    output = out_file.read_text()
    assert rc == 0, f"snakemake failed (rc={rc}):\n{output[-6000:]}"
    assert (work / "results" / "table.tex").exists()

    calls = [json.loads(line) for line in log.read_text().splitlines()] \
        if log.exists() else []
    sbatch = [c["argv"] for c in calls if c["prog"] == "sbatch"]
    rules = [rule_of(argv) for argv in sbatch]
    assert {"cram", "train_coconut", "eval_coconut", "train_pooler", "eval_pooler", "train_hrpo",
            "eval_hrpo"} <= set(rules), \
        f"GPU jobs missing: {rules}"
    assert not LOCAL_RULES & set(rules), f"local rules were submitted: {rules}"
    for rule, argv in zip(rules, sbatch):
        gpus = [a for a in argv if a.startswith("--gpus=")]
        if rule in GPU_RULES:
            assert gpus, f"{rule} submitted without --gpus: {argv}"
        else:
            assert not gpus, f"{rule} asks for a GPU: {argv}"
        assert argv[argv.index("-p") + 1] == PARTITION
        assert argv[argv.index("-A") + 1] == ACCOUNT
