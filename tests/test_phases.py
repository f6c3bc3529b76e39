import json
import subprocess
import sys
from collections import defaultdict

import pytest

from soft_tokens.core import phases
from soft_tokens.core.phases import PHASES, phase


@pytest.fixture
def clock(monkeypatch):
    """A fresh tally on a clock the test sets."""
    now = [0.0]
    monkeypatch.setattr(phases.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(phases, "_spent", defaultdict(float))
    monkeypatch.setattr(phases, "_stack", [])
    monkeypatch.setattr(phases, "_mark", 0.0)
    return now


def test_a_nested_phase_is_charged_to_itself_alone(clock):
    """train 0-6 s holding decode 1-3 s: 4 s of training and 2 of decoding; 10-11 s outside any phase: nothing."""
    with phase("train"):
        clock[0] = 1.0
        with phase("decode"):
            clock[0] = 3.0
        clock[0] = 6.0
    clock[0] = 10.0

    @phase("save")
    def save():
        clock[0] = 11.5

    save()
    assert dict(phases._spent) == {"train": 4.0, "decode": 2.0, "save": 1.5}


def test_an_unknown_phase_is_named():
    with pytest.raises(ValueError, match="unknown phase 'io': one of start-up, load, train, decode, forward, save"):
        with phase("io"):
            pass


def test_a_job_writes_its_phases_when_it_ends(tmp_path):
    record = tmp_path / "job.log.phases.json"
    slow = tmp_path / "slow_module.py"
    slow.write_text("import time\ntime.sleep(0.5)\n")
    code = ("import sys, time; from soft_tokens.core.phases import phase, record_at_exit\n"
            f"record_at_exit({str(record)!r}); sys.path.insert(0, {str(tmp_path)!r})\n"
            "with phase('decode'):\n    time.sleep(0.3)\n    import slow_module\ntime.sleep(0.1)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
    spent = json.loads(record.read_text())
    assert set(spent) == {"wall", *PHASES}
    assert 0.3 <= spent["decode"] < 0.4 and spent["start-up"] >= 0.5  # the import inside decoding is start-up
    assert spent["wall"] >= spent["start-up"] + spent["decode"] + 0.1
    assert spent["train"] == spent["load"] == spent["save"] == spent["forward"] == 0
