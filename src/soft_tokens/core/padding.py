"""Rows of token ids of different lengths in one batch: each row placed from a start column, the rest
token 0 (or a fill such as the ignore label) under a zero attention mask, and position ids that count
real tokens only, so a padded row computes what it computes alone."""

import torch


def place(rows: list[list[int]], starts: list[int], width: int, fill: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, width] ids with row b written from column starts[b], and the mask of the written columns."""
    ids = torch.full((len(rows), width), fill, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for b, (row, start) in enumerate(zip(rows, starts)):
        ids[b, start:start + len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, start:start + len(row)] = 1
    return ids, mask


def pad(rows: list[list[int]], left: bool, fill: int = 0, width: int | None = None):
    """Rows padded on the left (so they end in one column) or on the right, to `width` (the longest row)."""
    width = max(len(r) for r in rows) if width is None else width
    return place(rows, [width - len(r) if left else 0 for r in rows], width, fill)


def positions(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count only the real tokens before each column (padding repeats position 0)."""
    return (mask.cumsum(1) - 1).clamp(min=0)
