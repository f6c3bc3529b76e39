"""Atomic folders and the identities resumable jobs fingerprint their inputs with."""

import hashlib
import json

import pytest

from soft_tokens.core.io import IDENTITY, atomic_dir, identity


def test_a_folder_written_atomically_records_its_identity_and_is_not_hashed_again(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights.bin").write_bytes(b"abc")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "config.json").write_text("{}")
    recorded = (tmp_path / "model" / IDENTITY).read_text()
    # By hand: the sha256 of each entry's name and identity, in name order (a folder's entries recursively).
    sub = hashlib.sha256(b"config.json\0" + hashlib.sha256(b"{}").hexdigest().encode()).hexdigest()
    by_hand = hashlib.sha256(b"sub\0" + sub.encode() + b"weights.bin\0" + hashlib.sha256(b"abc").hexdigest().encode())
    assert recorded == by_hand.hexdigest() == identity(tmp_path / "model")
    (tmp_path / "model" / IDENTITY).write_text("recorded")  # read, not recomputed
    assert identity(tmp_path / "model") == "recorded"


def test_an_unrecorded_folder_changes_identity_with_any_file(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x").write_text("1")
    before = identity(tmp_path / "a")
    (tmp_path / "a" / "x").write_text("2")
    assert identity(tmp_path / "a") != before


def test_a_failed_block_leaves_no_folder(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed")
    assert not (tmp_path / "model").exists() and not list(tmp_path.iterdir())


def test_job_settings_are_read_only_record_their_reads_and_name_the_spec_for_an_undeclared_key(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from soft_tokens.core.job_settings import RECORD, JobSettings, job_settings

    s = JobSettings("train_pooler", {"lr": 0.1, "epochs": 2, "seed": 1})
    assert s["lr"] == 0.1 and s.get("epochs") == 2 and s.get("missing", 3) == 3 and s.read == {"lr", "epochs"}
    assert json.loads(json.dumps(s)) == {"lr": 0.1, "epochs": 2, "seed": 1} and s.read == {"lr", "epochs"}
    with pytest.raises(KeyError, match="train_pooler reads `batch_size`, which its track's spec does not declare"):
        s["batch_size"]
    with pytest.raises(TypeError, match="read-only"):
        s["lr"] = 1.0
    with pytest.raises(TypeError, match="read-only"):
        s.update(lr=1.0)
    monkeypatch.setenv(RECORD, str(tmp_path / "reads"))
    registered = []
    monkeypatch.setattr("atexit.register", registered.append)
    settings = job_settings(SimpleNamespace(rule="eval_hrpo", params=SimpleNamespace(job={"a": 1, "b": 2})))
    settings["b"]
    registered[0]()  # what runs when the job's process ends
    [record] = (tmp_path / "reads").glob("eval_hrpo.*.json")
    assert json.loads(record.read_text()) == ["b"]
