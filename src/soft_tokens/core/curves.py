"""Training curves: every training job records its per-epoch (or per-step) metrics as a parquet table
beside its output, rewritten after each epoch so a running job can be followed and a killed one keeps
what it did; the report draws them. With the `tensorboard` config key on, the same numbers also go to
TensorBoard event files under the run's `tensorboard/` folder (tensorboard is not a requirement).
"""

import os
from dataclasses import dataclass, field
from pathlib import Path

# Set by rules/common.smk when the config's `tensorboard` key is on: the folder event files go to.
TENSORBOARD = "SOFT_TOKENS_TENSORBOARD"


@dataclass
class TrainingCurve:
    """Where a job's curve goes (`path`), and the columns that say which run it is (`keys`: model, arch...)."""

    path: Path
    keys: dict
    _writer: object = field(default=None, repr=False)
    _logged: int = field(default=0, repr=False)

    def write(self, rows: list[dict]) -> None:
        """The whole curve so far as the parquet table; to TensorBoard, where that is on, the rows it
        has not had yet (each at its `step`, else its row number)."""
        import pandas as pd  # here, not at the top: the workflow reads TENSORBOARD while building its DAG

        from soft_tokens.core.io import write_parquet

        write_parquet(pd.DataFrame(rows).assign(**self.keys), self.path)
        writer = self.tensorboard()
        if writer is not None:
            for i, row in enumerate(rows[self._logged:], start=self._logged + 1):
                for name, value in row.items():
                    number = isinstance(value, (int, float)) and not isinstance(value, bool)
                    if number and name not in ("epoch", "step"):
                        writer.add_scalar(name, value, row.get("step", i))
            writer.flush()
            self._logged = len(rows)

    def tensorboard(self):
        if self._writer is None and os.environ.get(TENSORBOARD):
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("tensorboard: true in the config, but the tensorboard package is not installed; "
                                  "pip install tensorboard, or set tensorboard: false") from None
            run = "_".join(f"{k}={v}" for k, v in self.keys.items())
            self._writer = SummaryWriter(str(Path(os.environ[TENSORBOARD]) / run))
        return self._writer
