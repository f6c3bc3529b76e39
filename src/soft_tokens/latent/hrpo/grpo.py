"""GRPO's pieces: the answer reward, group-normalised advantages and the per-token loss.

Reward 1 iff the answer is right by the shared answer rule and the completion writes the answer
marker exactly once. Advantages (r - mean) / (std + 1e-4) within each prompt's group (sample std, as
TRL). Per token, -ratio * A + beta * KL, KL the k3 estimate exp(ref - logp) - (ref - logp) - 1 against
the start model, averaged over each completion's tokens, then over completions. With one update per
rollout batch the ratio is exp(logp - logp.detach()) (value 1, gradient of logp); with several, the
PPO-clipped ratio against the rollout's log-probs.
"""

import torch

from soft_tokens.data.answers import is_correct


def reward(text: str, gold: str, marker: str) -> float:
    return float(text.count(marker) == 1 and is_correct(text, gold))


def advantages(rewards: torch.Tensor, group: int) -> torch.Tensor:
    """[P*G] rewards (row p*G + g) -> advantages, normalised within each prompt's group."""
    if group < 2:
        raise ValueError(f"hrpo.group_size: {group}; GRPO compares completions of one prompt, so it needs >= 2")
    grouped = rewards.view(-1, group)
    return ((grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)).flatten()


def k3(logp: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The k3 estimate of KL(policy || reference) per token: nonnegative, zero when they agree."""
    return torch.exp(ref - logp) - (ref - logp) - 1


def loss(logp: torch.Tensor, old: torch.Tensor | None, ref: torch.Tensor | None, adv: torch.Tensor,
         mask: torch.Tensor, beta: float, clip: float) -> torch.Tensor:
    """The GRPO loss of log-probs [N, T] over `mask`; `old=None` is the single-update form (ratio
    exp(logp - logp.detach())), otherwise the clipped ratio against `old`; `ref=None` drops the KL."""
    a = adv[:, None]
    if old is None:
        surrogate = torch.exp(logp - logp.detach()) * a
    else:
        ratio = torch.exp(logp - old)
        surrogate = torch.minimum(ratio * a, ratio.clamp(1 - clip, 1 + clip) * a)
    per_token = -surrogate
    if ref is not None:
        per_token = per_token + beta * k3(logp, ref)
    mask = mask.to(logp.dtype)
    return ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
