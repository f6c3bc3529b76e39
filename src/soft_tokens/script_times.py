"""Script modification times that mean what Snakemake takes them to mean: the script's content changed.

Snakemake reruns a `script:` rule whose script is newer than its outputs (its code trigger). A clone,
a checkout or a copy that does not keep times makes every script new, so a finished run copied or
moved beside another checkout of the same code would be redone whole. Each run folder therefore
records, when it runs, every script's content and time (RECORD). Before the DAG is built, a script
whose content equals the record gets the recorded time back when it is newer (its content is what
the folder's outputs were made with), and a script whose content differs from the record is made
newer than any output (another run folder may have set an older time on it): only a script whose
content changed reruns its jobs, and every such one does.

Standard library only (Snakemake runs it while building the DAG).
"""

import json
import os
import time
from pathlib import Path

from soft_tokens.core.checksums import atomic_write_text, sha256

RECORD = Path(".snakemake") / "soft-tokens-scripts.json"


def read_record(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def align_script_times(scripts: Path, run_dir: Path) -> list[str]:
    """Set each script's time by the run folder's record (see the module); return what was changed, in words."""
    record, changed = read_record(run_dir), []
    for script in sorted(Path(scripts).glob("*.py")):
        if script.name not in record:
            continue
        digest, recorded = record[script.name]
        mtime = script.stat().st_mtime
        if digest == sha256(script):
            if mtime > recorded:
                os.utime(script, (script.stat().st_atime, recorded))
                changed.append(f"{script.name}: content as this run folder last ran it, its time set back")
        elif mtime <= recorded:
            now = time.time()
            os.utime(script, (now, now))
            changed.append(f"{script.name}: content changed since this run folder last ran it, its time set to now")
    return changed


def record_script_times(scripts: Path, run_dir: Path) -> None:
    """Record every script's content and time in the run folder (when a run starts)."""
    path = Path(run_dir) / RECORD
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({s.name: [sha256(s), s.stat().st_mtime]
                                        for s in sorted(Path(scripts).glob("*.py"))}))
