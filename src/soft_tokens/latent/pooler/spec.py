"""The reasoning-window pooler as the workflow sees it, free of torch: the keys each of its jobs
reads, its report section and its config checks."""

from soft_tokens.latent.coconut.spec import cot_run
from soft_tokens.vocabulary import RUNTIME, canonical, check_datasets, check_reasoning_names

# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 40
SECTIONS = {"pooler": ("pooler_compression",)}
ENUMS = ()
# The keys that decide how a pooler and its training examples are built.
BUILD = ("main", "compress_fraction", "pooling", "output_scale", "context", "lora_r", "lora_alpha",
         "lora_dropout", "lora_target_modules", "init_token", "max_prefixes")
READS = {
    "train_pooler": ("pooler", (*BUILD, "lr", "weight_decay", "epochs", "batch_size", "grad_accumulation"),
                     ("seed", *RUNTIME)),
    # The untrained pooler is built (and its scale set) exactly as train_pooler builds it.
    "eval_pooler": ("pooler", (*BUILD, "eval_batch_size", "max_new_tokens"), ("seed", *RUNTIME)),
    "eval_pooler_baselines": ("pooler", ("main", "eval_batch_size", "max_new_tokens"), RUNTIME),
}
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
    return canonical({k: config["pooler"][k] for k in PROTOCOL})


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
