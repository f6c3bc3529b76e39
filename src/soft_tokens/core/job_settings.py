"""A job's settings as its script receives them: exactly the config keys its rule reads
(soft_tokens.workflow.job_params), read-only. Torch-free.

With SOFT_TOKENS_RECORD_READS set to a folder, each job also writes there which of its keys it read
(`<rule>.<pid>.json`, when the job ends): the test suite compares them with the keys its track's spec
declares, so a declared key that no job reads (an edit to it would rerun jobs for nothing) is found;
an undeclared key is never there to read, and reading it fails at once naming the spec.
"""

import atexit
import json
import os
from pathlib import Path

RECORD = "SOFT_TOKENS_RECORD_READS"


class JobSettings(dict):
    """A read-only dict of one job's parameters that remembers which keys were read."""

    def __init__(self, rule: str, params):
        super().__init__(params)
        self.rule, self.read = rule, set()

    def __getitem__(self, key):
        if key not in self:
            raise KeyError(f"{self.rule} reads `{key}`, which its track's spec does not declare (its READS entry): "
                           "add it there, so that an edit to it reruns the job")
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key, default=None):
        return self[key] if key in self else default

    def _frozen(self, *args, **kwargs):
        raise TypeError(f"{self.rule}'s settings are read-only: derive a new dict instead")

    __setitem__ = __delitem__ = update = pop = popitem = setdefault = clear = _frozen


def job_settings(smk) -> JobSettings:
    """The settings of the Snakemake job `smk` (a script's `snakemake` object)."""
    settings = JobSettings(smk.rule, smk.params.job)
    if os.environ.get(RECORD):
        folder = Path(os.environ[RECORD])

        def record():
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{smk.rule}.{os.getpid()}.json").write_text(json.dumps(sorted(settings.read)))

        atexit.register(record)
    return settings
