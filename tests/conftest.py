"""Shared fixtures: one tiny random Llama (with the embedded SmolLM2 tokenizer), tiny models of the other
paper architectures, and one finished smoke run for the session."""

import os
from pathlib import Path

import pytest
import torch

from runner import SMOKE, snakemake

from soft_tokens.core.job_settings import RECORD
from soft_tokens.core.models import load_model, prepare_model

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = {"source": "tiny", "hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "tiny"
    prepare_model("tiny", TINY_SPEC, path, seed=1337)
    return path


@pytest.fixture(scope="session")
def tiny_arch(tmp_path_factory, tiny_dir):
    """A tiny random model of a paper architecture (llama, gpt2, qwen2, gpt_neox), prepared once per
    session: `tiny_arch("gpt2")` is its folder. Llama is the shared `tiny_dir` model."""
    made = {"llama": tiny_dir}

    def folder(arch: str) -> Path:
        if arch not in made:
            made[arch] = tmp_path_factory.mktemp("models") / f"tiny-{arch}"
            prepare_model(f"tiny-{arch}", {**TINY_SPEC, "arch": arch}, made[arch], seed=1337)
        return made[arch]

    return folder


@pytest.fixture(scope="session")
def tiny(tiny_dir):
    torch.set_num_threads(2)
    return load_model(tiny_dir, "cpu", "float32")


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """No hub, as on the machines the pipeline runs on: the libraries read their offline switches once,
    at import, so the flags are set where they are read as well as in the environment (child processes)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_DATASETS_OFFLINE", True)


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The smoke config run once, end to end, for every test that reads a finished run; each job records
    the keys of its settings it read under .reads/ (soft_tokens.core.job_settings)."""
    workdir = tmp_path_factory.mktemp("smoke")
    env = {**os.environ, RECORD: str(workdir / ".reads")}
    run = snakemake("--cores", "2", "--configfile", str(SMOKE), "--directory", str(workdir), "all", env=env)
    assert run.returncode == 0, (run.stdout + run.stderr)[-5000:]
    return workdir
