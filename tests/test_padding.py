"""Rows of different lengths in one batch (core.padding), by hand."""

import torch

from soft_tokens.core.padding import pad, place, positions


def test_left_and_right_padding_and_positions_by_hand():
    ids, mask = pad([[5, 6, 7], [8]], left=True)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions(mask).tolist() == [[0, 1, 2], [0, 0, 0]]
    ids, mask = pad([[5, 6, 7], [8]], left=False, fill=-100, width=4)
    assert ids.tolist() == [[5, 6, 7, -100], [8, -100, -100, -100]] and mask.tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]


def test_rows_placed_from_their_start_columns():
    ids, mask = place([[1, 2], [3]], starts=[0, 2], width=4)
    assert ids.tolist() == [[1, 2, 0, 0], [0, 0, 3, 0]] and mask.dtype == torch.long
    assert positions(mask).tolist() == [[0, 1, 1, 1], [0, 0, 0, 0]]
