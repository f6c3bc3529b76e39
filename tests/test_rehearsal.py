"""config/rehearsal.yaml: config/paper.yaml at tiny scale, run end to end in bf16 with a tiny model of
every architecture the paper grid names, and kept from drifting away from it."""

import os

import pandas as pd
import pytest
import yaml
from snakemake.utils import validate

from runner import ROOT, snakemake

from soft_tokens.rehearsal import write_rehearsal_data

PAPER, REHEARSAL = ROOT / "config" / "paper.yaml", ROOT / "config" / "rehearsal.yaml"
# Where the two may differ in kind as well as in size: what a model or dataset is made from, and where
# and on what the run happens.
SOURCES = ("models", "corpora", "reasoning")
WHERE = ("workdir", "device", "threads")


def leaves(node, path=()):
    """Every (path, value) of a config, lists of scalars kept whole."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield from leaves(value, (*path, key))
    else:
        yield path, node


def size_or_budget(value) -> bool:
    """Integers (sizes, steps, epochs, lengths, layers, seeds, memory and time), alone or in lists, or
    null (unbounded)."""
    items = value if isinstance(value, list) else [value]
    return all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in items)


def drift(paper: dict, rehearsal: dict) -> list[str]:
    """How the rehearsal departs from the paper config other than in sizes, sources and budgets."""
    problems = []
    for section in SOURCES:
        if set(paper.get(section, {})) != set(rehearsal.get(section, {})):
            problems.append(f"{section}: names differ ({sorted(paper[section])} vs {sorted(rehearsal[section])})")
    ours = {path: value for path, value in leaves(rehearsal) if path[0] not in SOURCES + WHERE}
    theirs = {path: value for path, value in leaves(paper) if path[0] not in SOURCES + WHERE}
    for path in sorted(set(ours) | set(theirs), key=str):
        a, b = theirs.get(path, "<missing>"), ours.get(path, "<missing>")
        if a != b and not (size_or_budget(a) and size_or_budget(b)):
            problems.append(f"{'.'.join(map(str, path))}: {a!r} in paper.yaml, {b!r} in rehearsal.yaml")
    for section in ("corpora", "reasoning"):
        for name, spec in paper[section].items():
            if spec["kind"] != rehearsal[section][name]["kind"]:
                problems.append(f"{section}.{name}.kind: {spec['kind']} vs {rehearsal[section][name]['kind']}")
    return problems


def test_rehearsal_differs_from_the_paper_config_only_in_sizes_sources_and_budgets():
    paper, rehearsal = (yaml.safe_load(p.read_text()) for p in (PAPER, REHEARSAL))
    assert drift(paper, rehearsal) == []
    assert rehearsal["dtype"] == paper["dtype"] == "bfloat16"
    archs = {spec["arch"] for spec in rehearsal["models"].values()}
    assert archs == {"llama", "gpt2", "qwen2"}


def test_the_drift_check_catches_a_changed_method_a_lost_key_and_a_changed_rate():
    paper = yaml.safe_load(PAPER.read_text())
    changed = yaml.safe_load(REHEARSAL.read_text())
    changed["hrpo"]["methods"] = ["grpo", "probs"]
    del changed["coconut"]["select_best"]
    changed["pooler"]["lr"] = 0.001
    found = drift(paper, changed)
    assert [line.split(":")[0] for line in found] == ["coconut.select_best", "hrpo.methods", "pooler.lr"]


@pytest.fixture(scope="module")
def rehearsal_run(tmp_path_factory):
    """`make rehearsal` in a fresh folder: the data written, then the config run from there as is."""
    start = tmp_path_factory.mktemp("rehearsal")
    workdir = start / "runs" / "rehearsal"
    write_rehearsal_data(workdir / "data")
    run = snakemake("all", "--cores", "2", "--configfile", str(REHEARSAL), cwd=start)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return workdir


def test_the_rehearsal_runs_every_track_end_to_end_in_bf16(rehearsal_run):
    results = rehearsal_run / "results"
    expected = yaml.safe_load(REHEARSAL.read_text())
    validate(expected, str(ROOT / "config" / "schema.yaml"))  # the defaults filled in
    start = rehearsal_run.parents[1]
    for corpus in expected["corpora"].values():  # recorded relative to the run folder, where the jobs read them
        corpus["data_files"] = os.path.relpath(start / corpus["data_files"], rehearsal_run)
    assert yaml.safe_load((results / "config.yaml").read_text()) == expected
    for summary in ("cramming_summary", "cramming_capacity", "converter_summary", "compressor_summary",
                    "coconut_summary", "pooler_summary", "hrpo_summary"):
        assert len(pd.read_parquet(results / f"{summary}.parquet")) > 0, summary
    coconut = pd.read_parquet(results / "coconut_summary.parquet")
    assert set(coconut["dataset"]) == {"gsm8k_aug", "prontoqa", "prosqa"} and set(coconut["model"]) == {"gpt2"}
    assert set(pd.read_parquet(results / "hrpo_summary.parquet")["policy"]) == {"start", "grpo", "probs", "projection"}
    assert (results / "table.tex").exists() and (results / "report.tex").exists()


def paper_cost():
    import importlib.util

    spec = importlib.util.spec_from_file_location("paper_cost", ROOT / "benchmarks" / "paper_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_paper_cost_knows_every_paper_model_at_its_published_size():
    cost, paper = paper_cost(), yaml.safe_load(PAPER.read_text())
    assert set(paper["models"]) == set(cost.MODELS)
    published = {"gpt2": 0.124, "Llama-3.2-1B": 1.24, "Llama-3.2-3B": 3.21, "Llama-3.1-8B": 8.03,
                 "DeepSeek-R1-Distill-Qwen-1.5B": 1.78, "Qwen2.5-1.5B-Instruct": 1.54}  # billions, model cards
    for name, billions in published.items():
        assert cost.MODELS[name].params() / 1e9 == pytest.approx(billions, rel=0.01), name


def test_paper_cost_flags_a_job_over_one_gpu_and_one_over_its_runtime():
    cost, paper = paper_cost(), yaml.safe_load(PAPER.read_text())
    gpu = type("Gpu", (), {"peak_tflops": 989.0, "fp32_tflops": 67.0, "bandwidth_tbs": 3.35, "mfu": 0.4,
                           "gpu_gb": 80.0})
    rows = cost.jobs(paper, gpu)
    assert all(r["memory_gb"] <= 80 for r in rows)
    paper["cramming"]["overrides"]["Llama-3.2-3B"]["batch_size"] = 10  # 10 texts of 4096 tokens at once
    wide = [r for r in cost.jobs(paper, gpu) if r["kind"].startswith("capacity") and r["model"] == "Llama-3.2-3B"]
    assert wide[0]["memory_gb"] > 80
    gpu.mfu = 0.001
    assert any(r["runtime_h"] is not None and r["hours"] > r["runtime_h"] for r in cost.jobs(paper, gpu))
