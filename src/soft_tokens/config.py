"""Config checks the JSON schema cannot express, and the job grid the config implies."""

from itertools import product

# Keys of the `cramming` section a model may override (e.g. the paper's length per model).
OVERRIDABLE = ("lengths", "n_mem", "batch_size", "n_samples", "max_steps", "patience", "mem_mb", "runtime")
# Reasoning-data splits, Coconut's methods and those that continue from the CoT model (Coconut's
# stage 0): the job graph needs them, so they live here, free of torch.
REASONING_SPLITS = ("train", "val", "test")
COCONUT_METHODS = ("nocot", "cot", "pause", "coconut", "coconut_nocurriculum")
STARTS_FROM_COT = ("pause", "coconut", "coconut_nocurriculum")
# Keys of the `coconut` section a dataset may override (the paper's c and stages differ per dataset).
COCONUT_OVERRIDABLE = ("c_thought", "max_latent_stage", "epochs_per_stage", "lr", "weight_decay", "batch_size",
                       "max_new_tokens")


def check_config(config: dict) -> None:
    """Every name the grid uses must be defined; raise one error naming the key to fix."""
    cram = config["cramming"]
    references = (("cramming.models", cram["models"], "models"), ("cramming.corpora", cram["corpora"], "corpora"),
                  ("converter.models", config["converter"]["models"], "models"),
                  ("estar.models", config["estar"]["models"], "models"),
                  ("estar.corpus", [config["estar"]["corpus"]] if config["estar"]["models"] else [], "corpora"),
                  ("coconut.models", config["coconut"]["models"], "models"),
                  ("coconut.datasets", config["coconut"]["datasets"], "reasoning"))
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
    check_overrides("cramming", cram, cram["models"], "a model listed in cramming.models", OVERRIDABLE)
    check_overrides("coconut", config["coconut"], config["reasoning"], "a dataset defined under `reasoning:`",
                    COCONUT_OVERRIDABLE)
    if config["coconut"]["models"] and not config["coconut"]["datasets"]:
        raise ValueError("coconut.models is set but coconut.datasets is empty: name datasets from `reasoning:`")


def check_overrides(section: str, settings: dict, names, what: str, allowed: tuple) -> None:
    for name, override in settings.get("overrides", {}).items():
        if name not in names:
            raise ValueError(f"{section}.overrides.{name}: not {what}")
        bad = sorted(set(override) - set(allowed))
        if bad:
            raise ValueError(f"{section}.overrides.{name}: keys {bad} cannot be overridden (allowed: {allowed})")


def cram_settings(config: dict, model: str) -> dict:
    """The `cramming` section as it applies to one model."""
    cram = dict(config["cramming"])
    cram.update(cram.pop("overrides", {}).get(model, {}))
    return cram


def coconut_settings(config: dict, dataset: str) -> dict:
    """The `coconut` section as it applies to one dataset, with seed, device and dtype."""
    s = {k: v for k, v in config["coconut"].items() if k not in ("models", "datasets", "methods", "overrides")}
    s.update(config["coconut"]["overrides"].get(dataset, {}))
    return {**s, "seed": config["seed"], "device": config["device"], "dtype": config["dtype"]}


def cram_jobs(config: dict) -> list[dict]:
    """Every cramming job of the grid; a job with more vectors than tokens is skipped."""
    jobs = []
    for model in config["cramming"]["models"]:
        s = cram_settings(config, model)
        for corpus, length, n_mem, variant, init in product(
            s["corpora"], s["lengths"], s["n_mem"], s["variants"], s["inits"]
        ):
            if n_mem <= length:
                jobs.append(dict(model=model, corpus=corpus, length=length, n_mem=n_mem, variant=variant, init=init))
    return jobs
