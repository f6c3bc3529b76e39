"""A job's settings: one frozen dataclass per job kind, declared in its track's spec, whose fields
are exactly the parameters its rule gives it (soft_tokens.workflow.job_params). The fields are the one
list of what a job reads: the workflow derives the job's params (what it reruns and resumes on) from
them and builds the settings while it builds the DAG, so a missing, unknown or mistyped value fails a
dry run, naming the dataclass; the script builds them again from its params. Torch-free.

With SOFT_TOKENS_RECORD_READS set to a folder, each job also writes there which of its fields it read
(`<rule>.<pid>.json`, when the job ends): the test suite checks that every job kind reads every field
its spec declares, since a field no job reads would rerun jobs for nothing when edited.
"""

import atexit
import json
import os
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

RECORD = "SOFT_TOKENS_RECORD_READS"
SOURCE = "source"
# Where a field's value comes from; a field declared plainly is a key of the spec's config section.
IN_SECTION, TOP, WILDCARD, DERIVED = "section", "top", "wildcard", "derived"
# The fields read in this process, when SOFT_TOKENS_RECORD_READS asks for them.
_reads: set | None = None


def top():
    """A field holding a top-level config key (seed, device, dtype)."""
    return field(metadata={SOURCE: TOP})


def wildcard():
    """A field holding one of the job's wildcards (seed and the cram lengths as int, the others as text)."""
    return field(metadata={SOURCE: WILDCARD})


def derived():
    """A field the track's spec computes for the job (its `job_extras`)."""
    return field(metadata={SOURCE: DERIVED})


def section_dtype(config: dict, section: dict) -> str:
    """A track's own `dtype` key resolved: `auto` is the top-level one."""
    return config["dtype"] if section["dtype"] == "auto" else section["dtype"]


def conforms(value, hint) -> bool:
    """Whether `value` has the declared type (an int is a float, a bool is neither; containers are
    checked on the outside)."""
    if hint is typing.Any:
        return True
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return any(conforms(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint in (int, float) and isinstance(value, bool):
        return False
    if hint is float:
        return isinstance(value, (int, float))
    return isinstance(value, typing.get_origin(hint) or hint)


def type_name(hint) -> str:
    """`int`, `list[int]`, `int | None`: a type as the spec writes it."""
    return str(hint) if typing.get_args(hint) else getattr(hint, "__name__", str(hint))


@dataclass(frozen=True)
class JobSettings:
    """The base of every job kind's settings; a subclass names its config section in SECTION."""

    SECTION: typing.ClassVar[str] = ""

    @classmethod
    def keys(cls, source: str = IN_SECTION) -> tuple[str, ...]:
        """The names of the fields that come from `source` (IN_SECTION, TOP, WILDCARD or DERIVED)."""
        return tuple(f.name for f in fields(cls) if f.metadata.get(SOURCE, IN_SECTION) == source)

    @classmethod
    def build(cls, params: dict) -> "JobSettings":
        """The settings of a job whose rule gave it `params`; one error naming every field that does not fit."""
        declared = {f.name: f.type for f in fields(cls)}
        problems = [f"`{k}` is missing" for k in declared if k not in params]
        problems += [f"`{k}` is not a field" for k in params if k not in declared]
        problems += [f"`{k}` is {params[k]!r}, not {type_name(declared[k])}" for k in declared
                     if k in params and not conforms(params[k], declared[k])]
        if problems:
            raise TypeError(f"{cls.__module__}.{cls.__name__} does not fit the job's params: {'; '.join(problems)} "
                            "(the spec's fields are what soft_tokens.workflow.job_params gives the job: change both "
                            "through the spec)")
        return cls(**params)

    def params(self) -> dict:
        """The fields as the job's params (what its resumable work is fingerprinted with), not counted as read."""
        return {f.name: object.__getattribute__(self, f.name) for f in fields(self)}

    def __getattribute__(self, name):
        if _reads is not None and name in type(self).__dataclass_fields__:
            _reads.add(name)
        return object.__getattribute__(self, name)


def job_settings(smk, kind: type[JobSettings]) -> JobSettings:
    """The settings of the Snakemake job `smk` (a script's `snakemake` object), as its spec's `kind`."""
    global _reads
    if os.environ.get(RECORD) and _reads is None:
        _reads, folder = set(), Path(os.environ[RECORD])

        def record():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{smk.rule}.{os.getpid()}.json").write_text(json.dumps(sorted(_reads)))

        atexit.register(record)
    return kind.build(dict(smk.params.job))


@dataclass(frozen=True)
class OnDevice(JobSettings):
    """A job that runs a model: where, and in which precision (soft_tokens.core.models)."""

    device: str = top()
    dtype: str = top()


@dataclass(frozen=True)
class Lora(JobSettings):
    """A job that builds LoRA adapters (the schema's $defs/lora; soft_tokens.core.training.with_lora)."""

    lora_r: int
    lora_alpha: int
    lora_dropout: float
    lora_target_modules: list[str]
