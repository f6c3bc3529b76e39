"""The converter, e* and compressor track as the workflow sees it, free of torch: its names, the keys
each of its jobs reads, its report sections and its config checks."""

from dataclasses import dataclass

from soft_tokens.core.job_settings import JobSettings, OnDevice, top, wildcard
from soft_tokens.vocabulary import canonical, check_names

CONVERTER_ARCHS = ("linear", "mlp")
COMPRESSOR_ARCHS = ("hyper", "qattn")
# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 20
# Report section -> its figures (each captioned once, in report/<figure>.rst).
SECTIONS = {"converter": ("converter_training",),
            "compressor": ("compressor_ce", "compressor_training", "estar_optimisation")}
ENUMS = ((("converter", "archs"), CONVERTER_ARCHS), (("recursive_demo", "arch"), CONVERTER_ARCHS),
         (("compressor", "archs"), COMPRESSOR_ARCHS))


@dataclass(frozen=True)
class ExtractPairs(OnDevice):
    """Hidden states and the input embeddings they came from, at each converter layer."""

    SECTION = "converter"
    model: str = wildcard()
    seed: int = top()
    layers: list[int]
    bos: bool
    max_tokens: int | None
    batch_size: int


@dataclass(frozen=True)
class TrainConverter(JobSettings):
    """One converter (no model runs: it trains on the extracted pairs)."""

    SECTION = "converter"
    model: str = wildcard()
    layer: str = wildcard()
    arch: str = wildcard()
    seed: int = top()
    hidden_dim: int
    epochs: int
    lr: float
    weight_decay: float
    batch_size: int
    val_fraction: float


@dataclass(frozen=True)
class EvalConverter(OnDevice):
    SECTION = "converter"
    model: str = wildcard()
    layer: str = wildcard()
    arch: str = wildcard()
    seed: int = top()
    val_fraction: float
    top_k: int


@dataclass(frozen=True)
class RecursiveDemo(OnDevice):
    SECTION = "recursive_demo"
    model: str = wildcard()
    layer: int
    arch: str
    n_passages: int
    context_tokens: int
    continuation_tokens: int
    prompt: str
    max_new_tokens: int


@dataclass(frozen=True)
class BuildEstar(OnDevice):
    SECTION = "estar"
    model: str = wildcard()
    seed: int = top()
    train_contexts: int
    held_out_contexts: int
    estar_train_contexts: int
    ctx_len: int
    follow_len: int
    k: int
    context_layer: int
    match_layer: int
    match_weight: float
    match_loss: str
    lr: float
    max_steps: int
    batch_size: int


@dataclass(frozen=True)
class TrainCompressor(OnDevice):
    SECTION = "compressor"
    model: str = wildcard()
    arch: str = wildcard()
    seed: int = top()
    width: int
    heads: int
    layers: int
    ffn_dim: int
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    regression_weight: float
    kl_weight: float
    temperature: float
    hidden_weight: float
    attention_weight: float
    match_layers: list[int]


@dataclass(frozen=True)
class EvalCompressor(OnDevice):
    SECTION = "compressor"
    model: str = wildcard()
    arch: str = wildcard()
    top_k: int


# rule -> the settings of its jobs (soft_tokens.core.job_settings).
JOBS = {"extract_pairs": ExtractPairs, "train_converter": TrainConverter, "eval_converter": EvalConverter,
        "recursive_demo": RecursiveDemo, "build_estar": BuildEstar, "train_compressor": TrainCompressor,
        "eval_compressor": EvalCompressor}
# The keys the compressor section's opening paragraph states (its summary rule's parameters), so that
# editing anything else, a scheduler resource above all, does not rewrite the report.
COMPRESSOR_PROTOCOL = {"estar": ("corpus", "ctx_len", "follow_len", "k", "max_steps", "train_contexts",
                                 "held_out_contexts", "estar_train_contexts"), "compressor": ("epochs",)}


def sections(config: dict) -> dict:
    on = {"converter": config["converter"]["models"], "compressor": config["estar"]["models"]}
    return {name: figures for name, figures in SECTIONS.items() if on[name]}


def check(config: dict) -> None:
    """Names defined, and a recursive demo that reads a converter the grid trains."""
    check_names(config, "converter.models", config["converter"]["models"], "models")
    check_names(config, "estar.models", config["estar"]["models"], "models")
    check_names(config, "estar.corpus", [config["estar"]["corpus"]] if config["estar"]["models"] else [], "corpora")
    demo, conv = config["recursive_demo"], config["converter"]
    if conv["models"]:
        for key, value, allowed in (("layer", demo["layer"], conv["layers"]), ("arch", demo["arch"], conv["archs"]),
                                    ("corpus", demo["corpus"], list(config["corpora"]))):
            if value not in allowed:
                raise ValueError(f"recursive_demo.{key}: {value!r} is not among {allowed} (converter.layers, "
                                 "converter.archs or corpora)")


def compressor_protocol(config: dict) -> dict:
    return canonical({k: config[section][k] for section, keys in COMPRESSOR_PROTOCOL.items() for k in keys})
