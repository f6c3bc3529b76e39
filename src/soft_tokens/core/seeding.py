"""One seeding scheme for every random draw: a generator per (seed, key, key, ...), so what a draw
gives depends on what it is for, never on the order in which work happens to run."""

import torch


def seed_for(seed: int, *keys: int) -> int:
    """The seed of one draw: `seed`, then each key folded in (seed * 1_000_003 + key, ...)."""
    for key in keys:
        seed = seed * 1_000_003 + int(key)
    return seed % (1 << 63)


def generator(seed: int, *keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, *keys))
