"""Per-epoch checkpoints for the small trained networks (converters, compressors): a killed
training run resumes at the epoch after the last one saved."""

import logging
from pathlib import Path

import torch

from soft_tokens.io import atomic_path

log = logging.getLogger(__name__)


def resume(checkpoint: Path, net: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore net and optimiser from `checkpoint` if it exists; return the first epoch still to run."""
    if not checkpoint.exists():
        return 0
    state = torch.load(checkpoint)
    net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    log.info("resuming at epoch %d from %s", state["epoch"] + 1, checkpoint)
    return state["epoch"] + 1


def save_epoch(checkpoint: Path, net: torch.nn.Module, opt: torch.optim.Optimizer, epoch: int) -> None:
    with atomic_path(checkpoint) as tmp:
        torch.save({"net": net.state_dict(), "opt": opt.state_dict(), "epoch": epoch}, tmp)
