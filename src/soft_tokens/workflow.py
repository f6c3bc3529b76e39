"""The registry of tracks: what the workflow needs to know before any job runs, free of torch, pandas
and numpy (Snakemake imports it while building the DAG). Each track's `spec` module owns its names,
the settings of each of its rules (a dataclass per job kind, soft_tokens.core.job_settings), its grids,
its report sections and its config checks; this module finds them and loops over them.

A job's parameters are exactly the config keys it reads, no more: Snakemake reruns a job when they
change, and the resumable jobs fingerprint them (with their inputs) to decide whether a half-done
run may be resumed. Scheduler resources (mem_mb, runtime) and the grid lists are never parameters.
"""

import importlib
import pkgutil

import soft_tokens
from soft_tokens.core.job_settings import TOP, section_dtype
from soft_tokens.vocabulary import canonical


def find_tracks() -> tuple:
    """Every track: each package of soft_tokens that holds a `spec` module, in report order (its ORDER).
    A new track's package is found here; nothing else names it."""
    names = [m.name for m in pkgutil.walk_packages(soft_tokens.__path__, "soft_tokens.") if m.name.endswith(".spec")]
    return tuple(sorted((importlib.import_module(name) for name in names), key=lambda spec: spec.ORDER))


TRACKS = find_tracks()
# rule -> the track that owns it.
OWNER = {rule: track for track in TRACKS for rule in track.JOBS}


def check_config(config: dict) -> None:
    """Every track's checks (names defined, grids that leave jobs, cross-key rules); one error naming the key."""
    for track in TRACKS:
        track.check(config)


def sections(config: dict) -> dict:
    """The report sections of the tracks the config turns on, in report order, each with its figures."""
    return {name: figures for track in TRACKS for name, figures in track.sections(config).items()}


def job_params(config: dict, rule: str, wildcards: dict) -> dict:
    """The fields of the job's settings (its spec's dataclass for `rule`): exactly the config keys it
    reads, plus its wildcards, what it is re-run and fingerprinted on. Editing anything else (a grid
    list, mem_mb, runtime, an eval-only key of a training job) leaves the job and its half-done work
    alone. The settings are built here too, so a value that does not fit them fails while the DAG is
    built (a dry run of a config checks every job), not in the job."""
    track = OWNER[rule]
    kind = track.JOBS[rule]
    s = track.settings(config, wildcards) if hasattr(track, "settings") else config[kind.SECTION]
    params = {**{k: config[k] for k in kind.keys(TOP)}, **{k: s[k] for k in kind.keys()}, **dict(wildcards)}
    if "seed" in wildcards:  # the seed a Coconut or HRPO job trains (and is evaluated) with
        params["seed"] = int(wildcards["seed"])
    if "dtype" in params and "dtype" in s:  # a section's own `dtype` (auto: the top-level one) runs its jobs
        params["dtype"] = section_dtype(config, s)
    if hasattr(track, "job_extras"):
        params.update(track.job_extras(config, rule, wildcards, s))
    return kind.build(canonical(params)).params()
