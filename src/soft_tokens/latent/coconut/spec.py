"""Coconut as the workflow sees it, free of torch: its methods, the keys each of its jobs reads, its
seeds, its report section and its config checks. The torch code reads its names from here."""

from dataclasses import dataclass

from soft_tokens.core.job_settings import Lora, OnDevice, section_dtype, wildcard
from soft_tokens.vocabulary import (canonical, check_datasets, check_overrides, check_reasoning_names,
                                    with_overrides)

METHODS = ("nocot", "cot", "pause", "coconut", "coconut_nocurriculum")
# Methods with latent positions: with `start: cot` they continue from the CoT model (Coconut's stage 0).
LATENT_METHODS = ("pause", "coconut", "coconut_nocurriculum")
# What the latent controls feed in place of the thoughts at evaluation, and the methods they test
# (pause's vectors are one learned embedding, the same in every problem: `other` would change nothing).
CONTROLS = ("zeros", "random", "other")
CONTROLLED = {"coconut": CONTROLS, "pause": ("zeros", "random")}
# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 30
SECTIONS = {"coconut": ("coconut_accuracy_by_stage", "coconut_training")}
ENUMS = ((("coconut", "methods"), METHODS),)


@dataclass(frozen=True)
class CoconutJob(OnDevice):
    """What training and evaluating one method share. Coconut jobs seed with their `seed` wildcard
    (one of coconut_seeds), not the top-level seed."""

    SECTION = "coconut"
    model: str = wildcard()
    dataset: str = wildcard()
    seed: int = wildcard()
    method: str = wildcard()
    c_thought: int
    max_latent_stage: int
    eval_batch_size: int
    max_new_tokens: int


@dataclass(frozen=True)
class TrainCoconut(CoconutJob, Lora):
    num_epochs: int
    epochs_per_stage: int
    start: str
    select_best: bool
    reset_optimizer: bool
    uniform_prob: float
    lr: float
    weight_decay: float
    batch_size: int
    finetune: str
    init_token: str


@dataclass(frozen=True)
class EvalCoconut(CoconutJob):
    controls: list[str]
    stage_curves: list[str]


# rule -> the settings of its jobs (soft_tokens.core.job_settings).
JOBS = {"train_coconut": TrainCoconut, "eval_coconut": EvalCoconut}
# The keys the section's opening paragraph states (its summary rule's parameters).
PROTOCOL = ("c_thought", "max_latent_stage", "num_epochs", "epochs_per_stage", "start", "select_best",
            "reset_optimizer", "uniform_prob", "lr", "batch_size", "finetune", "dtype")


def sections(config: dict) -> dict:
    return SECTIONS if config["coconut"]["models"] else {}


def coconut_settings(config: dict, dataset: str) -> dict:
    """The `coconut` section as it applies to one dataset."""
    return with_overrides(config["coconut"], dataset)


def settings(config: dict, wildcards: dict) -> dict:
    return coconut_settings(config, wildcards["dataset"])


def from_cot(method: str, start: str) -> bool:
    """Whether a method's run continues from the CoT model of its seed (`start: cot`, latent methods)."""
    return start == "cot" and method in LATENT_METHODS


def coconut_seeds(config: dict) -> list[int]:
    """The seeds Coconut trains every method with, one run each: `coconut.seeds`, or the top-level seed."""
    seeds = config["coconut"]["seeds"]
    return [config["seed"]] if seeds is None else seeds


def first_cot_seed(config: dict) -> int:
    """The Coconut seed whose CoT model the pooler and HRPO tracks start from: the first one."""
    return coconut_seeds(config)[0]


def cot_run(config: dict, model: str, dataset: str) -> str:
    """The CoT run of the first Coconut seed, which the pooler and HRPO tracks start from."""
    return f"results/coconut/{model}/{dataset}/seed{first_cot_seed(config)}/cot"


def train_inputs(config: dict, wildcards: dict) -> dict:
    """The base model and the data; methods that continue from CoT also get the CoT run of their seed."""
    model, dataset = wildcards["model"], wildcards["dataset"]
    inputs = {"model": f"resources/models/{model}", "train": f"resources/reasoning/{dataset}/train.parquet",
              "val": f"resources/reasoning/{dataset}/val.parquet"}
    if from_cot(wildcards["method"], coconut_settings(config, dataset)["start"]):
        inputs["cot"] = f"results/coconut/{model}/{dataset}/seed{wildcards['seed']}/cot"
    return inputs


def protocol(config: dict) -> dict:
    """Per dataset, the Coconut settings (overrides applied, dtype resolved) the section states."""
    return canonical({d: {**{k: coconut_settings(config, d)[k] for k in PROTOCOL},
                          "dtype": section_dtype(config, coconut_settings(config, d))} for d in config["coconut"]["datasets"]})


def check(config: dict) -> None:
    coconut = config["coconut"]
    check_reasoning_names(config, "coconut")
    check_overrides("coconut", coconut, config["reasoning"], "a dataset defined under `reasoning:`")
    check_datasets("coconut", coconut)
    for dataset in coconut["datasets"]:
        s = coconut_settings(config, dataset)
        # The last stage is max_latent_stage + 1 (every step gone) when a chain is longer than max_latent_stage,
        # which only the built data tells (method.final_stage): the job would fail after hours of training.
        if s["num_epochs"] <= (s["max_latent_stage"] + 1) * s["epochs_per_stage"]:
            raise ValueError(
                f"coconut ({dataset}): num_epochs = {s['num_epochs']} may never reach the last stage ((max_latent_stage "
                f"{s['max_latent_stage']} + 1) x epochs_per_stage {s['epochs_per_stage']} epochs come first where a "
                "chain has more steps than max_latent_stage); raise coconut.num_epochs or lower max_latent_stage / "
                "epochs_per_stage")
