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
