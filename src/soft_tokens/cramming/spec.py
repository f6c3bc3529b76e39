"""Cramming as the workflow sees it, free of torch: its names, the keys each of its jobs reads, its
job grids, its report section and its config checks. The torch code reads its names from here."""

from dataclasses import dataclass
from itertools import product

from soft_tokens.core.job_settings import OnDevice, derived, top, wildcard
from soft_tokens.vocabulary import INITS, check_names, check_overrides, with_overrides

VARIANTS = ("base", "bos", "2leading")
# The per-sample metrics a cram job reports (cramming.metrics computes them; a failed sample has NaN in each).
MISMATCH_POSITIONS = (0, 1, 2)
MISMATCH_KEYS = [f"{kind}_mismatch@{k}" for kind in ("tf", "greedy") for k in MISMATCH_POSITIONS]
INFORMATION_KEYS = ["ce_text_nats", "ce_text_bits", "ce_with_mem_nats", "ce_with_mem_bits", "information_gain_bits",
                    "gain_tokens"]
METRIC_KEYS = ["teacher_forcing_accuracy", "greedy_convergence", "greedy_convergence_bf16", *MISMATCH_KEYS,
               *INFORMATION_KEYS]
# Where the track's sections stand in the report (soft_tokens.workflow finds every spec).
ORDER = 10
# Report section -> its figures (each captioned once, in report/<figure>.rst).
SECTIONS = {"cramming": ("accuracy_vs_steps", "tf_vs_greedy", "capacity_search")}
# Schema enums that must list exactly these names: (path of the enum in config/schema.yaml, names).
ENUMS = ((("cramming", "variants"), VARIANTS), (("cramming", "inits"), INITS),
         (("cramming", "capacity", "variants"), VARIANTS))


@dataclass(frozen=True)
class CramSettings(OnDevice):
    """What a cram job and a capacity search share: the text, the vectors and how they are optimised."""

    SECTION = "cramming"
    model: str = wildcard()
    corpus: str = wildcard()
    n_mem: int = wildcard()
    variant: str = wildcard()
    init: str = wildcard()
    optimizer: str = wildcard()
    seed: int = top()
    batch_size: int
    leading_tokens: int
    leading_weight: float
    curve_points: int
    optimizer_settings: dict = derived()


@dataclass(frozen=True)
class Cram(CramSettings):
    """One cram job: n_samples texts of one length."""

    length: int = wildcard()
    n_samples: int
    max_steps: int
    patience: int
    draw_length: bool = derived()


@dataclass(frozen=True)
class Capacity(CramSettings):
    """One capacity search: its settings less its grid lists (its stages never restart)."""

    capacity: dict = derived()


# rule -> the settings of its jobs (soft_tokens.core.job_settings).
JOBS = {"cram": Cram, "capacity": Capacity}


def sections(config: dict) -> dict:
    return SECTIONS if config["cramming"]["models"] else {}


def cram_settings(config: dict, model: str) -> dict:
    """The `cramming` section as it applies to one model."""
    return with_overrides(config["cramming"], model)


def settings(config: dict, wildcards: dict) -> dict:
    return cram_settings(config, wildcards["model"])


def job_extras(config: dict, rule: str, wildcards: dict, s: dict) -> dict:
    """What a cram job or search reads beyond its section's keys: its optimizer's settings, the corpus's draw
    rule and the protocol's own step budget where it has one (cram), and the search's settings less its grid
    lists, with neither the protocol's restarts nor its step budget (capacity: its stages have their own)."""
    protocol = dict(s["optimizer_settings"][wildcards["optimizer"]])
    budget = protocol.pop("max_steps")
    extras = {"optimizer_settings": protocol,
              **{key: int(wildcards[key]) for key in ("length", "n_mem") if key in wildcards}}
    if rule == "cram":
        extras["draw_length"] = config["corpora"][wildcards["corpus"]]["draw_length"]
        if budget is not None:
            extras["max_steps"] = budget
    else:
        extras["capacity"] = {k: v for k, v in s["capacity"].items() if k not in ("optimizers", "variants")}
        del protocol["restarts"]
    return extras


def check(config: dict) -> None:
    """Names defined, optimizers known, a search that can run, and a job left for every model."""
    cram = config["cramming"]
    check_names(config, "cramming.models", cram["models"], "models")
    check_names(config, "cramming.corpora", cram["corpora"], "corpora")
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


def check_capacity(capacity: dict) -> None:
    """A capacity search must be able to try its first length and to stop bisecting."""
    if capacity["start_length"] < 2 or capacity["resolution"] < 1:
        raise ValueError(f"cramming.capacity: start_length {capacity['start_length']} must be >= 2 and resolution "
                         f"{capacity['resolution']} >= 1 token")
    if capacity["max_length"] < capacity["start_length"]:
        raise ValueError(f"cramming.capacity: max_length {capacity['max_length']} is below start_length "
                         f"{capacity['start_length']}, so the search cannot try its first length; raise max_length")


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


def same_as_base(settings: dict, variant: str, optimizer: str) -> bool:
    """With BOS given before the vectors, token 0 is never scored, so `bos` is `base` exactly."""
    return variant == "bos" and settings["optimizer_settings"][optimizer]["placement"] == "after_bos"


def protocol_inits(settings: dict, optimizer: str) -> list[str]:
    """The inits an optimizer runs with: the one its protocol prescribes, or (`init: grid`) each of
    cramming.inits."""
    init = settings["optimizer_settings"][optimizer]["init"]
    return list(settings["inits"]) if init == "grid" else [init]


def cram_jobs(config: dict) -> list[dict]:
    """Every cramming job of the grid. Skipped: a job with more vectors than tokens, and the `bos`
    variant of an `after_bos` optimizer (the same job as its `base`)."""
    jobs = []
    for model in config["cramming"]["models"]:
        s = cram_settings(config, model)
        for corpus, length, n_mem, variant, optimizer in product(
            s["corpora"], s["lengths"], s["n_mem"], s["variants"], s["optimizers"]
        ):
            if n_mem <= length and not same_as_base(s, variant, optimizer):
                jobs += [dict(model=model, corpus=corpus, length=length, n_mem=n_mem, variant=variant, init=init,
                              optimizer=optimizer) for init in protocol_inits(s, optimizer)]
    return jobs


def capacity_jobs(config: dict) -> list[dict]:
    """Every capacity search: model x corpus x n_mem x variant x optimizer (x its inits) of `cramming.capacity`
    (skipping, as cram_jobs does, `bos` where it is the same search as `base`)."""
    jobs = []
    for model in config["cramming"]["models"]:
        s = cram_settings(config, model)
        c = s["capacity"]
        for corpus, n_mem, variant, optimizer in product(s["corpora"], s["n_mem"], c["variants"], c["optimizers"]):
            if not same_as_base(s, variant, optimizer):
                jobs += [dict(model=model, corpus=corpus, n_mem=n_mem, variant=variant, init=init, optimizer=optimizer)
                         for init in protocol_inits(s, optimizer)]
    return jobs


def cram_results(config: dict, ext: str) -> list[str]:
    """Every cram job's output file with extension `ext`, over the configured grid."""
    return ["results/cramming/{model}/{corpus}/len{length}_mem{n_mem}_{variant}_{init}_{optimizer}{ext}".format(
        ext=ext, **job) for job in cram_jobs(config)]


def capacity_results(config: dict) -> list[str]:
    """Every capacity search's stages, over the configured searches."""
    return ["results/capacity/{model}/{corpus}/mem{n_mem}_{variant}_{init}_{optimizer}.parquet".format(**search)
            for search in capacity_jobs(config)]
