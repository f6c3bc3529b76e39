"""A Coconut run's record of its training, read without torch (the report reads it): which stages a run
folder has finished, and its curve, every finished stage's epochs in order."""

import json
from pathlib import Path


def finished_stages(run_dir: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("stage")) for p in run_dir.glob("stage*") if (p / "history.json").exists())


def stage_curve(run_dir: Path) -> list[dict]:
    """Every finished stage's epochs in order, as rows of the run's curve (`step`: the epoch's number
    over the whole run)."""
    rows = []
    for stage in finished_stages(run_dir):
        for record in json.loads((run_dir / f"stage{stage}" / "history.json").read_text())["epochs"]:
            rows.append({"step": len(rows) + 1, "stage": stage, **record})
    return rows
