"""Config checks the JSON schema cannot express, and the job grid the config implies."""

from itertools import product

# Keys of the `cramming` section a model may override (e.g. the paper's length per model).
OVERRIDABLE = ("lengths", "n_mem", "batch_size", "n_samples", "max_steps", "patience", "mem_mb", "runtime")


def check_config(config: dict) -> None:
    """Every name the grid uses must be defined; raise one error naming the key to fix."""
    cram = config["cramming"]
    references = (("cramming.models", cram["models"], "models"), ("cramming.corpora", cram["corpora"], "corpora"),
                  ("converter.models", config["converter"]["models"], "models"),
                  ("estar.models", config["estar"]["models"], "models"),
                  ("estar.corpus", [config["estar"]["corpus"]] if config["estar"]["models"] else [], "corpora"))
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
    for model, override in cram.get("overrides", {}).items():
        if model not in cram["models"]:
            raise ValueError(f"cramming.overrides.{model}: not a model listed in cramming.models")
        bad = sorted(set(override) - set(OVERRIDABLE))
        if bad:
            raise ValueError(f"cramming.overrides.{model}: keys {bad} cannot be overridden (allowed: {OVERRIDABLE})")


def cram_settings(config: dict, model: str) -> dict:
    """The `cramming` section as it applies to one model."""
    cram = dict(config["cramming"])
    cram.update(cram.pop("overrides", {}).get(model, {}))
    return cram


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
