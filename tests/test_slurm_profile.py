"""The SLURM profile: every rule's resources checked statically from the workflow itself, and one small
run through the profile against fake SLURM commands.

tests/fake_slurm/ provides sbatch, sacct, squeue, srun, ... that run jobs on this machine, so the
profile and the executor plugin are exercised end to end without a cluster, a GPU or network access.
"""
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from runner import HANG, ROOT, SMOKE, snakemake_command

from soft_tokens.core.job_settings import OnDevice
from soft_tokens.workflow import OWNER, TRACKS

PROFILE = ROOT / "profiles" / "slurm" / "profile.yaml"
FAKE_BIN = ROOT / "tests" / "fake_slurm"
PARTITION, ACCOUNT = "fakepart", "fake_account"


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


# Each rule as the workflow defines it (Snakemake's own API, in a child process: parsing the workflow
# sets process state): local (`localrule: True`, or `all`) or submitted, and the GPUs it asks for.
RULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    workflow = api.workflow(resource_settings=ResourceSettings(), config_settings=ConfigSettings(
        configfiles=[Path(sys.argv[1])]), snakefile=Path("Snakefile"), workdir=Path(sys.argv[2]))._workflow
    print(json.dumps({rule.name: {"local": rule.name in workflow._localrules or rule.norun,
                                  "gpu": rule.resources.get("gpu").value or 0} for rule in workflow.rules}))
"""


@pytest.fixture(scope="module")
def rules(tmp_path_factory):
    run = subprocess.run([sys.executable, "-c", RULES, str(SMOKE), str(tmp_path_factory.mktemp("rules"))],
                         cwd=ROOT, capture_output=True, text=True, timeout=HANG)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_profile_has_placeholders():
    """Users must see what to edit."""
    text = PROFILE.read_text()
    assert "<your-partition>" in text and "<your-account>" in text
    assert yaml.safe_load(text)["executor"] == "slurm"


def test_a_rule_asks_for_a_gpu_exactly_when_its_job_runs_on_the_configured_device(rules):
    on_device = {rule for rule, track in OWNER.items() if issubclass(track.JOBS[rule], OnDevice)}
    assert {name for name, rule in rules.items() if rule["gpu"]} == on_device
    assert {"cram", "train_coconut", "eval_pooler", "train_hrpo"} <= on_device and "train_converter" not in on_device


def test_local_rules_are_the_jobs_that_only_build_data_and_tables_and_start_without_torch(rules):
    local = sorted(name for name, rule in rules.items() if rule["local"] and name != "all")
    assert not {name for name in local if rules[name]["gpu"]} and not set(local) & set(OWNER)
    assert {"download_corpus", "build_reasoning_data", "render_report", "effective_config"} <= set(local)
    assert {f"summarize_{section}" for track in TRACKS for section in track.SECTIONS} <= set(local)
    modules = sorted({m for name in local for m in re.findall(
        r"^from (soft_tokens[\w.]*) import", (ROOT / "workflow" / "scripts" / f"{name}.py").read_text(), re.M)})
    code = (f"import sys; import {', '.join(modules)}; "
            "print(sorted(m for m in ('torch', 'transformers', 'peft') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=HANG)
    assert run.stdout.strip() == "[]", run.stderr


def test_a_run_through_the_profile_submits_jobs_with_their_resources(tmp_path):
    """One job of each kind (a GPU job, a CPU job, local jobs) through sbatch: --gpus for the GPU job
    only, the profile's partition and account, memory and time from the workflow config, local rules
    never submitted."""
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "profile.yaml").write_text(
        PROFILE.read_text().replace("<your-partition>", PARTITION).replace("<your-account>", ACCOUNT))
    work, state, log = tmp_path / "work", tmp_path / "state", tmp_path / "slurm.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(
        PATH=f"{FAKE_BIN}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        FAKE_SLURM_STATE=str(state), FAKE_SLURM_LOG=str(log), FAKE_SLURM_ACCOUNT=ACCOUNT,
        FAKE_SLURM_PARTITION=PARTITION, FAKE_SLURM_JOB_TIMEOUT=str(HANG), CUDA_VISIBLE_DEVICES="",
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    config = yaml.safe_load(SMOKE.read_text())
    config["cramming"].update(mem_mb=1234, runtime=56)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    targets = ["results/cramming/tiny-llama/random_words/len8_mem1_base_randn_fast.parquet", "results/config.yaml"]
    cmd = [*snakemake_command(), *targets, "--workflow-profile", str(profile), "--configfile",
           str(tmp_path / "config.yaml"), "--directory", str(work), "--retries", "0",
           "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "2",
           "--slurm-keep-successful-logs"]
    out_file = tmp_path / "snakemake.out"
    with open(out_file, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=HANG)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            rc = proc.wait()
        finally:
            kill_leftover_jobs(state)
    output = out_file.read_text()
    assert rc == 0, f"snakemake failed (rc={rc}):\n{output[-6000:]}"
    assert all((work / target).exists() for target in targets)

    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    sbatch = {rule_of(c["argv"]): c["argv"] for c in calls if c["prog"] == "sbatch"}
    assert set(sbatch) == {"prepare_model", "cram"}, sorted(sbatch)  # download_corpus, effective_config: local
    for argv in sbatch.values():
        assert argv[argv.index("-p") + 1] == PARTITION and argv[argv.index("-A") + 1] == ACCOUNT
    assert "--gpus=1" in sbatch["cram"] and not [a for a in sbatch["prepare_model"] if a.startswith("--gpus")]
    assert "--mem" in sbatch["cram"] and sbatch["cram"][sbatch["cram"].index("--mem") + 1] == "1234"
    assert "-t" in sbatch["cram"] and sbatch["cram"][sbatch["cram"].index("-t") + 1] == "56"
