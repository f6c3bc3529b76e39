"""Atomic, checksummed writes; the identities resumable jobs fingerprint their inputs with; storage
errors in words; one process per output."""

import errno
import hashlib
import os
import signal
import subprocess
import sys

import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

from soft_tokens.core.checksums import DamagedFile, checksum_damage
from soft_tokens.core.io import (CHECKSUMS, IDENTITY, StorageError, atomic_dir, atomic_path, fingerprint, identity,
                                 read_json, read_parquet, resumable_dir, write_parquet)
from soft_tokens.core.runlog import lock_path
from soft_tokens.core.tensor_files import load_tensors, torch_load


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


def flip_middle_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_file_written_atomically_records_its_sha256_as_sha256sum_writes_it(tmp_path):
    write_parquet(pd.DataFrame({"x": range(5)}), tmp_path / "t.parquet")
    digest = hashlib.sha256((tmp_path / "t.parquet").read_bytes()).hexdigest()
    assert (tmp_path / "t.parquet.sha256").read_text() == f"{digest}  t.parquet\n"
    check = subprocess.run(["sha256sum", "-c", "t.parquet.sha256"], cwd=tmp_path, capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout == "t.parquet: OK\n"


def test_a_file_changed_after_it_was_written_is_never_read_as_data(tmp_path):
    """Bytes flipped inside a parquet, safetensors or torch file (header and footer intact): pandas,
    safetensors and torch would read changed values; every loader stops, naming the file and the fix."""
    paths = {"parquet": tmp_path / "t.parquet", "safetensors": tmp_path / "v.safetensors", "pt": tmp_path / "c.pt"}
    write_parquet(pd.DataFrame({"x": range(1000)}), paths["parquet"])
    with atomic_path(paths["safetensors"]) as tmp:
        save_file({"w": torch.arange(1000.0)}, tmp)
    with atomic_path(paths["pt"]) as tmp:
        torch.save({"w": torch.arange(1000.0)}, tmp)
    loaders = {"parquet": read_parquet, "safetensors": load_tensors, "pt": torch_load}
    for kind, path in paths.items():
        loaders[kind](path)
        flip_middle_byte(path)
        with pytest.raises(DamagedFile, match=rf"^{path}: its bytes were changed after it was written .*; it cannot "
                                              rf"be trusted\. Remove it and rerun, which makes it again: rm -r {path}$"):
            loaders[kind](path)


def test_a_folder_written_atomically_records_every_files_checksum(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
        (tmp / "adapter").mkdir()
        (tmp / "adapter" / "weights.bin").write_bytes(b"abc")
    listed = (tmp_path / "model" / CHECKSUMS).read_text().splitlines()
    assert [line.split("  ")[1] for line in listed] == ["adapter/weights.bin", "config.json", IDENTITY]
    assert checksum_damage(tmp_path / "model") is None
    (tmp_path / "model" / "adapter" / "weights.bin").write_bytes(b"abd")
    assert checksum_damage(tmp_path / "model") == "adapter/weights.bin was changed after it was written"
    (tmp_path / "model" / "adapter" / "weights.bin").write_bytes(b"abc")
    (tmp_path / "model" / "config.json").unlink()
    assert checksum_damage(tmp_path / "model") == "config.json is missing"


def test_a_training_history_is_outside_a_folders_identity(tmp_path):
    """Timings differ between two identical trainings; a job reading the folder must not start over.
    A Coconut run folder: a stage written whole (its history inside) and the run's curve beside it."""
    for run, seconds in (("a", 1.5), ("b", 2.5)):
        with atomic_dir(tmp_path / run / "stage0") as tmp:
            (tmp / "model.safetensors").write_bytes(b"same weights")
            (tmp / "history.json").write_text(f'{{"seconds": {seconds}}}')
        write_parquet(pd.DataFrame({"loss": [0.5], "seconds": [seconds]}), tmp_path / run / "curve.parquet")
    assert identity(tmp_path / "a" / "stage0") == identity(tmp_path / "b" / "stage0")
    assert identity(tmp_path / "a") == identity(tmp_path / "b")
    with atomic_dir(tmp_path / "c") as tmp:
        (tmp / "model.safetensors").write_bytes(b"other weights")
    assert identity(tmp_path / "c") != identity(tmp_path / "a" / "stage0")


def test_outputs_are_readable_by_the_group_as_the_umask_allows(tmp_path):
    """safetensors writes 0600; a colleague in a shared group folder could not read the result."""
    old = os.umask(0o002)
    try:
        with atomic_path(tmp_path / "v.safetensors") as tmp:
            save_file({"w": torch.ones(2)}, tmp)
        with atomic_dir(tmp_path / "model") as tmp:
            save_file({"w": torch.ones(2)}, tmp / "model.safetensors")
    finally:
        os.umask(old)
    assert oct((tmp_path / "v.safetensors").stat().st_mode & 0o777) == "0o664"
    assert oct((tmp_path / "model" / "model.safetensors").stat().st_mode & 0o777) == "0o664"


def test_a_full_disk_and_a_read_only_folder_are_said_in_words(tmp_path, monkeypatch):
    """torch reports a full disk as `basic_ios::clear: iostream error`, never as "no space left"."""
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("usage", (), {"free": 4096})())
    with pytest.raises(StorageError, match=rf"^\[Errno {errno.ENOSPC}\] no space left on the device holding "
                                           rf"{tmp_path}/c.pt \(0 MiB free\): free some space"):
        with atomic_path(tmp_path / "c.pt"):
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: basic_ios::clear")
    monkeypatch.setattr("shutil.disk_usage", lambda path: type("usage", (), {"free": 1 << 40})())
    with pytest.raises(StorageError, match=rf"cannot write {tmp_path}/model \(Read-only file system\): make "
                                           rf"{tmp_path} writable"):
        with atomic_dir(tmp_path / "model"):
            raise OSError(errno.EROFS, "Read-only file system")
    with pytest.raises(RuntimeError, match="^a bug$"):  # anything else is left as it is
        with atomic_path(tmp_path / "c.pt"):
            raise RuntimeError("a bug")


def test_damaged_half_done_state_is_named_with_what_to_remove(tmp_path):
    partial = tmp_path / "len8.parquet.partial"
    resumable_dir(partial, fingerprint({"steps": 5}, {}))
    (partial / "fingerprint.json").write_text('{"params": {"ste')
    with pytest.raises(DamagedFile, match=rf"^{partial}/fingerprint.json: its bytes were changed .* Remove the folder, "
                                          rf"which starts the job over: rm -r {partial}$"):
        resumable_dir(partial, fingerprint({"steps": 5}, {}))
    (partial / "fingerprint.json.sha256").unlink()  # as written before checksums: the parser's error, named
    with pytest.raises(DamagedFile, match=rf"^{partial}/fingerprint.json: not readable JSON \(.*\); Remove the folder"):
        read_json(partial / "fingerprint.json", f"Remove the folder, which starts the job over: rm -r {partial}")


HOLDER = """
import sys, time
from soft_tokens.core.runlog import hold_output
hold_output(sys.argv[1])
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
"""


def holder(out, seconds):
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), str(seconds)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline() == "holding\n"
    return process


def test_a_second_process_on_one_output_stops_at_once_naming_the_first(tmp_path):
    out = tmp_path / "results" / "len8.parquet"
    first = holder(out, 60)
    try:
        second = subprocess.run([sys.executable, "-c", HOLDER, str(out), "0"], capture_output=True, text=True,
                                timeout=60)
        assert second.returncode != 0 and "holding" not in second.stdout
        assert f"JobRunning: PID {first.pid} on {os.uname().nodename} is already writing {out}; a second copy of " \
               "the job would overwrite its work, so this one stops." in second.stderr
        assert "pgrep -af .snakemake/scripts" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)  # a kill -9 leaves the lock file, but no lock
        first.wait()
    assert lock_path(out).exists()
    third = holder(out, 0)
    assert third.wait(timeout=60) == 0 and not lock_path(out).exists()  # a normal exit removes it
