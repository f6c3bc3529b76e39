"""Names and helpers every track shares, free of torch, pandas and numpy (Snakemake imports them while
building the DAG). Nothing here imports a track: each track's own names live in its `spec` module."""

# How a trained prefix of vectors starts (the prefix optimiser, shared by cramming and e*).
INITS = ("randn", "uniform", "mean", "token")
# The splits of every reasoning dataset (Coconut, the pooler and HRPO read them).
REASONING_SPLITS = ("train", "val", "test")


def canonical(value):
    """`value` with every mapping's keys sorted: Snakemake compares params by their text, so the
    order keys happen to have in a YAML file must not make a job look changed."""
    if isinstance(value, dict):
        return {k: canonical(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def check_names(config: dict, key: str, names, section: str) -> None:
    """Every name a track's `key` lists must be defined under the top-level `section`."""
    unknown = [n for n in names if n not in config[section]]
    if unknown:
        raise ValueError(f"{key} names {unknown}, which are not defined under `{section}:` "
                         f"(defined: {sorted(config[section])})")


def check_reasoning_names(config: dict, section: str) -> None:
    """A reasoning track's models and datasets must be defined under `models:` and `reasoning:`."""
    check_names(config, f"{section}.models", config[section]["models"], "models")
    check_names(config, f"{section}.datasets", config[section]["datasets"], "reasoning")


def check_overrides(section: str, settings: dict, names, what: str) -> None:
    """Overrides must name what they apply to (which keys they may hold, and their values, the schema checks)."""
    for name in settings.get("overrides", {}):
        if name not in names:
            raise ValueError(f"{section}.overrides.{name}: not {what}")


def with_overrides(settings: dict, name: str) -> dict:
    """A section as it applies to `name` (a model or a dataset): its `overrides.<name>` keys win."""
    merged = {k: v for k, v in settings.items() if k != "overrides"}
    merged.update(settings.get("overrides", {}).get(name, {}))
    return merged


def check_datasets(section: str, settings: dict) -> None:
    """A reasoning track with models needs datasets to run them on."""
    if settings["models"] and not settings["datasets"]:
        raise ValueError(f"{section}.models is set but {section}.datasets is empty: name datasets from `reasoning:`")
