"""Where a job's wall time goes: start-up (the interpreter, Snakemake's script preamble and the imports),
model loading, training, decoding, forward passes without generation (teacher-forced scoring, extracted
states), saving, and the rest (data, bookkeeping). Standard library only, so trivial jobs import nothing
more.

`phase(name)` (a context manager or a decorator) charges the wall time inside it to `name`, exclusively:
time in a phase nested in another counts for the inner one only (a rollout inside an HRPO training step
is decoding). `record_at_exit(path)`, called first thing in a job, charges every import from then on to
start-up (a job imports torch after taking its lock) and writes the totals as JSON when the job's
process ends, read by benchmarks/profile_default.py.
"""

import atexit
import builtins
import json
import os
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

PHASES = ("start-up", "load", "train", "decode", "forward", "save")
# The suffix of the record beside a job's log.
SUFFIX = ".phases.json"
# In a job forked from the warm-start server: when its launcher started (Unix time).
LAUNCHED = "SOFT_TOKENS_LAUNCHED"

_spent: dict[str, float] = defaultdict(float)
_stack: list[str] = []
_mark = time.perf_counter()


def _charge() -> None:
    """Charge the time since the last switch to the innermost open phase (none: the rest)."""
    global _mark
    now = time.perf_counter()
    if _stack:
        _spent[_stack[-1]] += now - _mark
    _mark = now


@contextmanager
def phase(name: str):
    if name not in PHASES:
        raise ValueError(f"unknown phase '{name}': one of {', '.join(PHASES)}")
    _charge()
    _stack.append(name)
    try:
        yield
    finally:
        _charge()
        _stack.pop()


def process_seconds() -> float:
    """Wall seconds since this job's process started, to 10 ms (Linux's /proc; 0 where there is none); for a
    job forked from the warm-start server, since its launcher started (soft_tokens.core.warm_start)."""
    if LAUNCHED in os.environ:
        return max(time.time() - float(os.environ[LAUNCHED]), 0.0)
    try:
        started = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
        return max(float(Path("/proc/uptime").read_text().split()[0]) - started, 0.0)
    except (OSError, IndexError, ValueError):
        return 0.0


def timed_imports(importer):
    """`builtins.__import__` charging each outermost import of the main thread (a module's, or a function's
    lazy one) to start-up; other threads' imports pass through, as the phases are the main thread's."""
    depth = 0

    def wrapped(*args, **kwargs):
        nonlocal depth
        if depth or threading.current_thread() is not threading.main_thread():
            return importer(*args, **kwargs)
        depth += 1
        try:
            with phase("start-up"):
                return importer(*args, **kwargs)
        finally:
            depth -= 1

    return wrapped


def record_at_exit(path: str | Path) -> None:
    """Take everything up to now as start-up, and the imports from now on too; write every phase's seconds
    (and the process's wall time) to `path` when the process ends."""
    global _mark
    _spent["start-up"] += process_seconds()
    _mark = time.perf_counter()
    begun = time.perf_counter() - _spent["start-up"]
    builtins.__import__ = timed_imports(builtins.__import__)
    atexit.register(lambda: Path(path).write_text(json.dumps(
        {"wall": time.perf_counter() - begun, **{name: round(_spent[name], 3) for name in PHASES}})))
