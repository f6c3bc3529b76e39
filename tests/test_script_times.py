"""Script times set by content, so that Snakemake's code trigger (a script newer than its outputs)
fires when a script changed and not when a clone or a copy merely made it new."""

import os

from soft_tokens.script_times import align_script_times, read_record, record_script_times


def test_a_script_is_dated_by_its_content_as_the_run_folder_last_ran_it(tmp_path):
    scripts, run = tmp_path / "scripts", tmp_path / "run"
    scripts.mkdir()
    for name in ("cram.py", "train.py", "new.py"):
        (scripts / name).write_text(f"# {name}\n")
        os.utime(scripts / name, (1000, 1000))
    record_script_times(scripts, run)
    (scripts / "new.py").unlink()
    assert read_record(run)["cram.py"][1] == 1000
    # A clone: every script new, one of them edited too; and a script the record does not know.
    (scripts / "train.py").write_text("# train.py, edited\n")
    for name in ("cram.py", "train.py"):
        os.utime(scripts / name, (5000, 5000))
    (scripts / "other.py").write_text("# other\n")
    os.utime(scripts / "other.py", (7000, 7000))
    changes = align_script_times(scripts, run)
    assert changes == ["cram.py: content as this run folder last ran it, its time set back"]
    assert (scripts / "cram.py").stat().st_mtime == 1000  # older than the outputs: nothing reruns
    assert (scripts / "train.py").stat().st_mtime == 5000  # newer: its jobs rerun
    assert (scripts / "other.py").stat().st_mtime == 7000
    # Another run folder set an edited script's time back below this folder's outputs: made new again.
    os.utime(scripts / "train.py", (500, 500))
    assert align_script_times(scripts, run) == [
        "train.py: content changed since this run folder last ran it, its time set to now"]
    assert (scripts / "train.py").stat().st_mtime > 5000
