"""The reasoning-window pooler as the workflow sees it, free of torch: the keys each of its jobs
reads, its report section and its config checks."""

from dataclasses import dataclass

from soft_tokens.core.job_settings import Lora, OnDevice, section_dtype, top, wildcard
from soft_tokens.latent.coconut.spec import cot_run
from soft_tokens.vocabulary import canonical, check_datasets, check_reasoning_names

# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 40
SECTIONS = {"pooler": ("pooler_compression", "pooler_training")}
ENUMS = ()


@dataclass(frozen=True)
class PoolerJob(OnDevice):
    """What every pooler job reads: the main LM it runs (`cot` or `base`) and the data."""

    SECTION = "pooler"
    model: str = wildcard()
    dataset: str = wildcard()
    main: str


@dataclass(frozen=True)
class BuildPooler(PoolerJob, Lora):
    """The keys that decide how a pooler and its training examples are built; the untrained pooler
    (its scale set) is built by eval_pooler exactly as train_pooler builds it."""

    window: str = wildcard()
    seed: int = top()
    compress_fraction: float
    pooling: str
    output_scale: bool
    context: bool
    init_token: str
    max_prefixes: int


@dataclass(frozen=True)
class TrainPooler(BuildPooler):
    lr: float
    weight_decay: float
    epochs: int
    batch_size: int
    grad_accumulation: int


@dataclass(frozen=True)
class EvalPooler(BuildPooler):
    eval_batch_size: int
    max_new_tokens: int


@dataclass(frozen=True)
class EvalPoolerBaselines(PoolerJob):
    eval_batch_size: int
    max_new_tokens: int


# rule -> the settings of its jobs (soft_tokens.core.job_settings).
JOBS = {"train_pooler": TrainPooler, "eval_pooler": EvalPooler, "eval_pooler_baselines": EvalPoolerBaselines}
PROTOCOL = ("main", "windows", "compress_fraction", "pooling", "output_scale", "context", "lora_r", "lr",
            "epochs", "batch_size", "grad_accumulation", "max_prefixes")


def sections(config: dict) -> dict:
    return SECTIONS if config["pooler"]["models"] else {}


def inputs(config: dict, wildcards: dict) -> dict:
    """The frozen main LM (the Coconut CoT run of the first Coconut seed, or the prepared model) and
    the training problems (which also set the untrained pooler's output scale)."""
    model, dataset = wildcards["model"], wildcards["dataset"]
    main = cot_run(config, model, dataset) if config["pooler"]["main"] == "cot" else f"resources/models/{model}"
    return {"main": main, "train": f"resources/reasoning/{dataset}/train.parquet"}


def protocol(config: dict) -> dict:
    return canonical({**{k: config["pooler"][k] for k in PROTOCOL}, "dtype": section_dtype(config, config["pooler"])})


def check(config: dict) -> None:
    """Names defined, and the section's own checks."""
    pooler = config["pooler"]
    check_reasoning_names(config, "pooler")
    check_pooler(pooler)


def check_pooler(pooler: dict) -> None:
    """Window sizes are token counts; the track needs datasets once it has models."""
    small = [w for w in pooler["windows"] if w < 1]
    if small:
        raise ValueError(f"pooler.windows: {small}: a window holds W >= 1 reasoning tokens (W = 1 pools every "
                         "token on its own); list sizes such as [2, 4, 8]")
    check_datasets("pooler", pooler)
