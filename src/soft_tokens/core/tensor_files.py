"""Tensors read back from files the pipeline wrote, checked against their recorded checksums first
(soft_tokens.core.checksums.verified), so that changed weights are never loaded. Apart from core.io,
which the torch-free summary and report jobs import."""

import torch
from safetensors.torch import load_file

from soft_tokens.core.checksums import verified


def load_tensors(path, device: str = "cpu") -> dict:
    return load_file(verified(path), device=device)


def torch_load(path):
    """A torch checkpoint of our own (weights_only stays on)."""
    return torch.load(verified(path))
