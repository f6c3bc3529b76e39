"""What the workflow needs to know before any job runs, free of torch, pandas and numpy (Snakemake
imports it while building the DAG): the names every stage uses, config checks the JSON schema cannot
express, the job grids, and the exact parameters each job reads.

A job's parameters are exactly the config keys it reads, no more: Snakemake reruns a job when they
change, and the resumable jobs fingerprint them (with their inputs) to decide whether a half-done
run may be resumed. Scheduler resources (mem_mb, runtime) and the grid lists are never parameters.
"""

from itertools import product

# Names defined once for the whole package.
VARIANTS = ("base", "bos", "2leading")
INITS = ("randn", "mean", "token")
CONVERTER_ARCHS = ("linear", "mlp")
COMPRESSOR_ARCHS = ("hyper", "qattn")
REASONING_SPLITS = ("train", "val", "test")
COCONUT_METHODS = ("nocot", "cot", "pause", "coconut", "coconut_nocurriculum")
# Methods that continue from the CoT model (Coconut's stage 0).
STARTS_FROM_COT = ("pause", "coconut", "coconut_nocurriculum")

# The `pooler` keys that decide how a pooler and its training examples are built.
POOLER_BUILD = ("main", "compress_fraction", "pooling", "output_scale", "context", "lora_r", "lora_alpha",
                "lora_dropout", "lora_target_modules", "init_token", "max_prefixes")

# HRPO's trained methods (GRPO without the gate; HRPO with each thinking state), and the policies
# evaluated: those and the start model (no RL, evaluated once).
HRPO_METHODS = ("grpo", "probs", "projection")
HRPO_POLICIES = ("start", *HRPO_METHODS)
# The `hrpo` keys that decide how a policy is built and what it is evaluated with.
HRPO_BUILD = ("start", "prompt_prefix", "marker", "projection_norm", "a_min", "a_max", "gate_init_std", "lora_r",
              "lora_alpha", "lora_dropout", "lora_target_modules", "temperature", "max_new_tokens")

# Top-level keys a model job reads besides its section.
RUNTIME = ("device", "dtype")
# rule -> (config section, the keys of it the job reads, the top-level keys it reads).
READS = {
    "cram": ("cramming", ("n_samples", "batch_size", "max_steps", "patience", "leading_tokens", "leading_weight",
                          "curve_points"), ("seed", *RUNTIME)),
    "capacity": ("cramming", ("batch_size", "leading_tokens", "leading_weight", "curve_points",
                              "capacity"), ("seed", *RUNTIME)),
    "extract_pairs": ("converter", ("layers", "bos", "max_tokens", "batch_size"), ("seed", *RUNTIME)),
    "train_converter": ("converter", ("hidden_dim", "epochs", "lr", "weight_decay", "batch_size", "val_fraction"),
                        ("seed",)),
    "eval_converter": ("converter", ("val_fraction", "top_k"), ("seed", *RUNTIME)),
    "recursive_demo": ("recursive_demo", ("layer", "arch", "n_passages", "context_tokens", "continuation_tokens", "prompt",
                                          "max_new_tokens"), RUNTIME),
    "build_estar": ("estar", ("train_contexts", "held_out_contexts", "estar_train_contexts", "ctx_len", "follow_len",
                              "k", "context_layer", "match_layer", "match_weight", "match_loss", "lr", "max_steps",
                              "batch_size"), ("seed", *RUNTIME)),
    "train_compressor": ("compressor", ("width", "heads", "layers", "ffn_dim", "epochs", "batch_size", "lr",
                                        "weight_decay", "regression_weight", "kl_weight", "temperature",
                                        "hidden_weight", "attention_weight", "match_layers"), ("seed", *RUNTIME)),
    "eval_compressor": ("compressor", ("top_k",), RUNTIME),
    # Coconut jobs seed with their `seed` wildcard (one of coconut_seeds), not the top-level seed.
    "train_coconut": ("coconut", ("c_thought", "max_latent_stage", "epochs_per_stage", "lr", "weight_decay",
                                  "batch_size", "eval_batch_size", "finetune", "lora_r", "lora_alpha",
                                  "lora_dropout", "lora_target_modules", "init_token"), RUNTIME),
    "eval_coconut": ("coconut", ("c_thought", "max_latent_stage", "eval_batch_size", "max_new_tokens"), RUNTIME),
    "train_pooler": ("pooler", (*POOLER_BUILD, "lr", "weight_decay", "epochs", "batch_size", "grad_accumulation"),
                     ("seed", *RUNTIME)),
    # The untrained pooler is built (and its scale set) exactly as train_pooler builds it.
    "eval_pooler": ("pooler", (*POOLER_BUILD, "eval_batch_size", "max_new_tokens"), ("seed", *RUNTIME)),
    "eval_pooler_baselines": ("pooler", ("main", "eval_batch_size", "max_new_tokens"), RUNTIME),
    # HRPO jobs seed with their `seed` wildcard (one of hrpo.seeds).
    "train_hrpo": ("hrpo", (*HRPO_BUILD, "fresh_problems", "group_size", "prompts_per_step", "steps", "beta",
                            "updates_per_batch", "clip", "max_grad_norm", "lr_lora", "lr_gate", "lr_lambda",
                            "lr_projection", "weight_decay", "checkpoint_every"), RUNTIME),
    "eval_hrpo": ("hrpo", (*HRPO_BUILD, "eval_batch_size"), RUNTIME),
}


def check_config(config: dict) -> None:
    """Every name the grid uses must be defined; raise one error naming the key to fix."""
    cram = config["cramming"]
    references = (("cramming.models", cram["models"], "models"), ("cramming.corpora", cram["corpora"], "corpora"),
                  ("converter.models", config["converter"]["models"], "models"),
                  ("estar.models", config["estar"]["models"], "models"),
                  ("estar.corpus", [config["estar"]["corpus"]] if config["estar"]["models"] else [], "corpora"),
                  ("coconut.models", config["coconut"]["models"], "models"),
                  ("coconut.datasets", config["coconut"]["datasets"], "reasoning"),
                  ("pooler.models", config["pooler"]["models"], "models"),
                  ("pooler.datasets", config["pooler"]["datasets"], "reasoning"),
                  ("hrpo.models", config["hrpo"]["models"], "models"),
                  ("hrpo.datasets", config["hrpo"]["datasets"], "reasoning"))
    for key, names, section in references:
        unknown = [n for n in names if n not in config[section]]
        if unknown:
            raise ValueError(
                f"{key} names {unknown}, which are not defined under `{section}:` (defined: {sorted(config[section])})"
            )
    demo, conv = config["recursive_demo"], config["converter"]
    if conv["models"]:
        for key, value, allowed in (("layer", demo["layer"], conv["layers"]), ("arch", demo["arch"], conv["archs"]),
                                    ("corpus", demo["corpus"], list(config["corpora"]))):
            if value not in allowed:
                raise ValueError(f"recursive_demo.{key}: {value!r} is not among {allowed} (converter.layers, "
                                 "converter.archs or corpora)")
    check_overrides("cramming", cram, cram["models"], "a model listed in cramming.models")
    for key, names in (("cramming.optimizers", cram["optimizers"]),
                       ("cramming.capacity.optimizers", cram["capacity"]["optimizers"])):
        unknown = [n for n in names if n not in cram["optimizer_settings"]]
        if unknown:
            raise ValueError(f"{key} names {unknown}, which are not defined under cramming.optimizer_settings "
                             f"(defined: {sorted(cram['optimizer_settings'])})")
    if cram["capacity"]["optimizers"]:
        check_capacity(cram["capacity"])
    check_cram_grid(config)
    check_overrides("coconut", config["coconut"], config["reasoning"], "a dataset defined under `reasoning:`")
    if config["coconut"]["models"] and not config["coconut"]["datasets"]:
        raise ValueError("coconut.models is set but coconut.datasets is empty: name datasets from `reasoning:`")
    check_pooler(config["pooler"])
    check_hrpo(config["hrpo"])


def check_hrpo(hrpo: dict) -> None:
    """GRPO needs groups to compare; the gate's starting a must lie in (0, 1) with a_min <= a_max."""
    if hrpo["group_size"] < 2:
        raise ValueError(f"hrpo.group_size: {hrpo['group_size']}; GRPO normalises rewards within a prompt's group "
                         "of completions, so it needs >= 2 (the public runs use 4)")
    if hrpo["a_min"] > hrpo["a_max"]:
        raise ValueError(f"hrpo.a_min {hrpo['a_min']} is above hrpo.a_max {hrpo['a_max']}; swap them")
    if hrpo["models"] and not hrpo["datasets"]:
        raise ValueError("hrpo.models is set but hrpo.datasets is empty: name datasets from `reasoning:`")


def check_pooler(pooler: dict) -> None:
    """Window sizes are token counts; the track needs datasets once it has models."""
    small = [w for w in pooler["windows"] if w < 1]
    if small:
        raise ValueError(f"pooler.windows: {small}: a window holds W >= 1 reasoning tokens (W = 1 pools every "
                         "token on its own); list sizes such as [2, 4, 8]")
    if pooler["models"] and not pooler["datasets"]:
        raise ValueError("pooler.models is set but pooler.datasets is empty: name datasets from `reasoning:`")


def check_capacity(capacity: dict) -> None:
    """A capacity search must be able to try its first length and to stop bisecting."""
    if capacity["start_length"] < 2 or capacity["resolution"] < 1:
        raise ValueError(f"cramming.capacity: start_length {capacity['start_length']} must be >= 2 and resolution "
                         f"{capacity['resolution']} >= 1 token")
    if capacity["max_length"] < capacity["start_length"]:
        raise ValueError(f"cramming.capacity: max_length {capacity['max_length']} is below start_length "
                         f"{capacity['start_length']}, so the search cannot try its first length; raise max_length")


def check_overrides(section: str, settings: dict, names, what: str) -> None:
    """Overrides must name what they apply to (which keys they may hold, and their values, the schema checks)."""
    for name in settings.get("overrides", {}):
        if name not in names:
            raise ValueError(f"{section}.overrides.{name}: not {what}")


def check_cram_grid(config: dict) -> None:
    """Every model in cramming.models must leave at least one cram job: a job needs n_mem <= length,
    and `bos` with an `after_bos` optimizer is skipped as the same job as `base`."""
    with_jobs = {job["model"] for job in cram_jobs(config)}
    for model in config["cramming"]["models"]:
        if model not in with_jobs:
            s = cram_settings(config, model)
            where = f"cramming.overrides.{model}" if model in config["cramming"]["overrides"] else "cramming"
            if min(s["n_mem"]) > max(s["lengths"]):
                raise ValueError(f"cramming: {model} has no cram job left, since every n_mem {s['n_mem']} exceeds "
                                 f"every length {s['lengths']} (a text of L tokens takes at most L vectors); lower "
                                 f"n_mem or raise lengths under `{where}`")
            raise ValueError(f"cramming: {model} has no cram job left, since its variants {s['variants']} with "
                             f"optimizers {s['optimizers']} (placement after_bos) are only `bos`, the same job as "
                             "`base`; add `base` to cramming.variants")


def cram_settings(config: dict, model: str) -> dict:
    """The `cramming` section as it applies to one model."""
    cram = dict(config["cramming"])
    cram.update(cram.pop("overrides", {}).get(model, {}))
    return cram


def coconut_settings(config: dict, dataset: str) -> dict:
    """The `coconut` section as it applies to one dataset."""
    s = {k: v for k, v in config["coconut"].items() if k != "overrides"}
    s.update(config["coconut"]["overrides"].get(dataset, {}))
    return s


def coconut_seeds(config: dict) -> list[int]:
    """The seeds Coconut trains every method with, one run each: `coconut.seeds`, or the top-level seed."""
    seeds = config["coconut"]["seeds"]
    return [config["seed"]] if seeds is None else seeds


# The keys each report section's opening paragraph states (its summary rule's parameters), so that
# editing anything else, a scheduler resource above all, does not rewrite the report.
COMPRESSOR_PROTOCOL = {"estar": ("corpus", "ctx_len", "follow_len", "k", "max_steps", "train_contexts",
                                 "held_out_contexts", "estar_train_contexts"), "compressor": ("epochs",)}
COCONUT_PROTOCOL = ("c_thought", "max_latent_stage", "epochs_per_stage", "lr", "batch_size", "finetune")


POOLER_PROTOCOL = ("main", "windows", "compress_fraction", "pooling", "output_scale", "context", "lora_r", "lr",
                   "epochs", "batch_size", "grad_accumulation", "max_prefixes")


def pooler_protocol(config: dict) -> dict:
    return canonical({k: config["pooler"][k] for k in POOLER_PROTOCOL})


def first_cot_seed(config: dict) -> int:
    """The Coconut seed whose CoT model the pooler and HRPO tracks start from: the first one."""
    return coconut_seeds(config)[0]


HRPO_PROTOCOL = ("start", "fresh_problems", "methods", "seeds", "group_size", "prompts_per_step", "steps",
                 "temperature", "beta", "lr_lora", "lr_gate", "lr_lambda", "lr_projection", "projection_norm",
                 "lora_r", "max_new_tokens", "marker")


def hrpo_protocol(config: dict) -> dict:
    return canonical({k: config["hrpo"][k] for k in HRPO_PROTOCOL})


def hrpo_runs(config: dict) -> list[dict]:
    """Every HRPO evaluation: the start model once (first seed), each method once per seed."""
    h = config["hrpo"]
    return [dict(model=m, dataset=d, policy=p, seed=seed) for m in h["models"] for d in h["datasets"]
            for p, seed in [("start", h["seeds"][0]), *product(h["methods"], h["seeds"])]]


def compressor_protocol(config: dict) -> dict:
    return canonical({k: config[section][k] for section, keys in COMPRESSOR_PROTOCOL.items() for k in keys})


def coconut_protocol(config: dict) -> dict:
    """Per dataset, the Coconut settings (overrides applied) the section states."""
    return canonical({d: {k: coconut_settings(config, d)[k] for k in COCONUT_PROTOCOL}
                      for d in config["coconut"]["datasets"]})


def section_settings(config: dict, section: str, wildcards: dict) -> dict:
    """A section as it applies to one job: per-model overrides for cramming, per-dataset for Coconut."""
    if section == "cramming":
        return cram_settings(config, wildcards["model"])
    if section == "coconut":
        return coconut_settings(config, wildcards["dataset"])
    return config[section]


def canonical(value):
    """`value` with every mapping's keys sorted: Snakemake compares params by their text, so the
    order keys happen to have in a YAML file must not make a job look changed."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def job_params(config: dict, rule: str, wildcards: dict) -> dict:
    """Exactly the config keys the job of `rule` reads, plus its wildcards: what it is re-run and
    fingerprinted on. Editing anything else (a grid list, mem_mb, runtime, an eval-only key of a
    training job) leaves the job and its half-done work alone."""
    section, keys, top = READS[rule]
    s = section_settings(config, section, wildcards)
    params = {**{k: config[k] for k in top}, **{k: s[k] for k in keys}, **dict(wildcards)}
    if "seed" in wildcards:  # the Coconut seed a job trains (and is evaluated) with
        params["seed"] = int(wildcards["seed"])
    if rule in ("cram", "capacity"):
        params["optimizer_settings"] = dict(s["optimizer_settings"][wildcards["optimizer"]])
        for key in ("length", "n_mem"):
            if key in params:
                params[key] = int(params[key])
    if rule == "cram":
        params["draw_length"] = config["corpora"][wildcards["corpus"]]["draw_length"]
    if rule == "capacity":  # a search reads neither the grid lists nor restarts (its stages never restart)
        params["capacity"] = {k: v for k, v in s["capacity"].items() if k not in ("optimizers", "variants")}
        del params["optimizer_settings"]["restarts"]
    return canonical(params)


def same_as_base(settings: dict, variant: str, optimizer: str) -> bool:
    """With BOS given before the vectors, token 0 is never scored, so `bos` is `base` exactly."""
    return variant == "bos" and settings["optimizer_settings"][optimizer]["placement"] == "after_bos"


def cram_jobs(config: dict) -> list[dict]:
    """Every cramming job of the grid. Skipped: a job with more vectors than tokens, and the `bos`
    variant of an `after_bos` optimizer (the same job as its `base`)."""
    jobs = []
    for model in config["cramming"]["models"]:
        s = cram_settings(config, model)
        for corpus, length, n_mem, variant, init, optimizer in product(
            s["corpora"], s["lengths"], s["n_mem"], s["variants"], s["inits"], s["optimizers"]
        ):
            if n_mem <= length and not same_as_base(s, variant, optimizer):
                jobs.append(dict(model=model, corpus=corpus, length=length, n_mem=n_mem, variant=variant, init=init,
                                 optimizer=optimizer))
    return jobs


def capacity_jobs(config: dict) -> list[dict]:
    """Every capacity search: model x corpus x n_mem x variant x init x optimizer of `cramming.capacity`
    (skipping, as cram_jobs does, `bos` where it is the same search as `base`)."""
    jobs = []
    for model in config["cramming"]["models"]:
        s = cram_settings(config, model)
        c = s["capacity"]
        for corpus, n_mem, variant, init, optimizer in product(
            s["corpora"], s["n_mem"], c["variants"], s["inits"], c["optimizers"]
        ):
            if not same_as_base(s, variant, optimizer):
                jobs.append(dict(model=model, corpus=corpus, n_mem=n_mem, variant=variant, init=init,
                                 optimizer=optimizer))
    return jobs
