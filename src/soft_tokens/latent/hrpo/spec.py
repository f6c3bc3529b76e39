"""HRPO as the workflow sees it, free of torch: its methods and policies, the keys each of its jobs
reads, its runs, its report section and its config checks. The torch code reads its names from here."""

from dataclasses import dataclass
from itertools import product

from soft_tokens.core.job_settings import Lora, OnDevice, section_dtype, wildcard
from soft_tokens.latent.coconut.spec import cot_run
from soft_tokens.vocabulary import REASONING_SPLITS, canonical, check_datasets, check_reasoning_names

# HRPO's thinking states; the trained methods are GRPO without the gate and HRPO with each state, and
# the policies evaluated are those and the start model (no RL, evaluated once).
THINKING_STATES = ("probs", "projection")
METHODS = ("grpo", *THINKING_STATES)
POLICIES = ("start", *METHODS)
# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 50
SECTIONS = {"hrpo": ("hrpo_training", "hrpo_hidden_ratio")}
ENUMS = ((("hrpo", "methods"), METHODS),)


@dataclass(frozen=True)
class BuildPolicy(OnDevice, Lora):
    """The keys that decide how a policy is built and what it is evaluated with. HRPO jobs seed with
    their `seed` wildcard (one of hrpo.seeds)."""

    SECTION = "hrpo"
    model: str = wildcard()
    dataset: str = wildcard()
    policy: str = wildcard()
    seed: int = wildcard()
    start: str
    prompt_prefix: str
    chat_template: bool
    system_prompt: str
    marker: str
    projection_norm: str
    a_min: float
    a_max: float
    gate_init_std: float
    temperature: float
    max_new_tokens: int


@dataclass(frozen=True)
class TrainHrpo(BuildPolicy):
    fresh_problems: int
    group_size: int
    prompts_per_step: int
    steps: int
    beta: float
    updates_per_batch: int
    clip: float
    max_grad_norm: float
    lr_schedule: str
    warmup_ratio: float
    score_temperature: float
    lr_lora: float
    lr_gate: float
    lr_lambda: float
    lr_projection: float
    weight_decay: float
    decay_biases: bool
    checkpoint_every: int


@dataclass(frozen=True)
class EvalHrpo(BuildPolicy):
    eval_batch_size: int


# rule -> the settings of its jobs (soft_tokens.core.job_settings).
JOBS = {"train_hrpo": TrainHrpo, "eval_hrpo": EvalHrpo}
PROTOCOL = ("start", "fresh_problems", "methods", "seeds", "group_size", "prompts_per_step", "steps",
            "temperature", "score_temperature", "beta", "lr_lora", "lr_gate", "lr_lambda", "lr_projection",
            "lr_schedule", "warmup_ratio", "max_grad_norm", "weight_decay", "decay_biases", "chat_template",
            "projection_norm", "lora_r", "max_new_tokens", "marker")


def sections(config: dict) -> dict:
    return SECTIONS if config["hrpo"]["models"] else {}


def protocol(config: dict) -> dict:
    return canonical({**{k: config["hrpo"][k] for k in PROTOCOL}, "dtype": section_dtype(config, config["hrpo"])})


def runs(config: dict) -> list[dict]:
    """Every HRPO evaluation: the start model once (first seed), each method once per seed."""
    h = config["hrpo"]
    return [dict(model=m, dataset=d, policy=p, seed=seed) for m in h["models"] for d in h["datasets"]
            for p, seed in [("start", h["seeds"][0]), *product(h["methods"], h["seeds"])]]


def start(config: dict, wildcards: dict) -> str:
    """The start checkpoint: the Coconut CoT run of the first Coconut seed, or the prepared model."""
    if config["hrpo"]["start"] == "cot":
        return cot_run(config, wildcards["model"], wildcards["dataset"])
    return f"resources/models/{wildcards['model']}"


def train_inputs(config: dict, wildcards: dict) -> dict:
    """The start checkpoint and every split (prompts come from train, or are fresh problems kept
    apart from all three)."""
    return {"start": start(config, wildcards),
            **{split: f"resources/reasoning/{wildcards['dataset']}/{split}.parquet" for split in REASONING_SPLITS}}


def eval_inputs(config: dict, wildcards: dict) -> dict:
    """The start checkpoint, the test split and, for a trained method, its policy."""
    inputs = {"start": start(config, wildcards), "test": f"resources/reasoning/{wildcards['dataset']}/test.parquet"}
    if wildcards["policy"] != "start":
        inputs["policy"] = "results/hrpo/{model}/{dataset}/{policy}/seed{seed}/policy".format(**wildcards)
    return inputs


def check(config: dict) -> None:
    """Names defined, and the section's own checks."""
    hrpo = config["hrpo"]
    check_datasets("hrpo", hrpo)
    check_reasoning_names(config, "hrpo")
    check_hrpo(hrpo)


def check_hrpo(hrpo: dict) -> None:
    """GRPO needs groups to compare; the gate's starting a must lie in (0, 1) with a_min <= a_max; a
    clipped ratio needs its two log-probs at one temperature."""
    if hrpo["group_size"] < 2:
        raise ValueError(f"hrpo.group_size: {hrpo['group_size']}; GRPO normalises rewards within a prompt's group "
                         "of completions, so it needs >= 2 (the public runs use 4)")
    if hrpo["a_min"] > hrpo["a_max"]:
        raise ValueError(f"hrpo.a_min {hrpo['a_min']} is above hrpo.a_max {hrpo['a_max']}; swap them")
    if hrpo["updates_per_batch"] > 1 and hrpo["score_temperature"] != hrpo["temperature"]:
        raise ValueError(f"hrpo.score_temperature {hrpo['score_temperature']} differs from hrpo.temperature "
                         f"{hrpo['temperature']} with updates_per_batch {hrpo['updates_per_batch']}: the clipped ratio "
                         "compares with the rollout's log-probs, taken at the sampling temperature; set them equal or "
                         "updates_per_batch: 1")
