"""Per-sample reconstruction metrics for crammed texts.

Positions: a text is ids[0..L-1] with ids[0] = BOS. With N vectors in front, the logits of the last
vector predict token 0, so all L tokens can be scored. Without vectors, token 0 has no prediction,
so cross-entropies that compare the two are taken over tokens 1..L-1 only.
"""

import math

import torch
import torch.nn.functional as F

from soft_tokens.core.phases import phase
from soft_tokens.cramming.spec import MISMATCH_POSITIONS

@phase("forward")
@torch.no_grad()
def text_only_scores(model, ids: torch.Tensor):
    """CE [L-1] and argmax [L-1] for tokens 1..L-1 of `ids` [L] given the text alone."""
    logits = model(input_ids=ids[None, :-1]).logits[0].float()
    return F.cross_entropy(logits, ids[1:], reduction="none"), logits.argmax(-1)


def accuracy(pred: torch.Tensor, ids: torch.Tensor, scored: torch.Tensor) -> float:
    return float(((pred == ids) & scored).sum() / scored.sum())


def mismatches(pred: torch.Tensor, ids: torch.Tensor, scored: torch.Tensor, prefix: str) -> dict:
    """1.0 where position k is predicted wrongly, 0.0 where right, NaN where k is not scored."""
    out = {}
    for k in MISMATCH_POSITIONS:
        ok = k < len(ids) and bool(scored[k])
        out[f"{prefix}_mismatch@{k}"] = float(pred[k] != ids[k]) if ok else math.nan
    return out


def information_metrics(ce_text: torch.Tensor, ce_with: torch.Tensor, correct_text: int, correct_with: int):
    """CE totals (nats, bits) over tokens 1..L-1 without and with vectors, and what the vectors add."""
    nats, nats_with = float(ce_text.sum()), float(ce_with.sum())
    return {
        "ce_text_nats": nats,
        "ce_text_bits": nats / math.log(2),
        "ce_with_mem_nats": nats_with,
        "ce_with_mem_bits": nats_with / math.log(2),
        "information_gain_bits": (nats - nats_with) / math.log(2),
        "gain_tokens": correct_with - correct_text,
    }


def downsample(curve: list[float], points: int) -> tuple[list[int], list[float]]:
    """At most `points` (step, value) pairs, evenly spaced, always keeping the last step."""
    if len(curve) <= points:
        return list(range(1, len(curve) + 1)), list(curve)
    steps = sorted({round(i * (len(curve) - 1) / (points - 1)) for i in range(points)})
    return [s + 1 for s in steps], [curve[s] for s in steps]
