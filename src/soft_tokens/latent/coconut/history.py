"""A Coconut run's record of its training, read without torch (the report reads it): which stages a run
folder has finished, and its curve, every finished stage's epochs in order."""

from pathlib import Path

from soft_tokens.core.io import read_json


def finished_stages(run_dir: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("stage")) for p in run_dir.glob("stage*") if (p / "history.json").exists())


def stage_curve(run_dir: Path) -> list[dict]:
    """Every finished stage's epochs in order, as rows of the run's curve (`step`: the epoch's number
    over the whole run)."""
    rows = []
    for stage in finished_stages(run_dir):
        for record in read_json(run_dir / f"stage{stage}" / "history.json")["epochs"]:
            rows.append({"step": len(rows) + 1, "stage": stage, **record})
    return rows
