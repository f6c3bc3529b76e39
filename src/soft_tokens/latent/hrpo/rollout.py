"""Batched hybrid rollouts on a KV cache, and the teacher-forced pass that scores them again.

A rollout samples G completions per prompt (or decodes greedily): the prompts are read once and
their cache repeated G times; each step feeds every row the hybrid input of the token it just drew
(plain once that row has written the answer marker). It records what the update needs to see the
exact same inputs: the tokens, where blending was on, and the thinking states (h for `probs`, the
last hidden states the projection reads for `projection`, so the update recomputes h with gradient).
"""

from dataclasses import dataclass

import torch

from soft_tokens.core.padding import pad, positions
from soft_tokens.core.phases import phase
from soft_tokens.core.training import casts_once, lora_merged


@dataclass
class Prompts:
    """Left-padded prompt ids [P, L] with their attention mask and positions."""

    ids: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor


@dataclass
class Rollout:
    """G completions per prompt (row p * G + g): tokens [N, T], each row's length (through its EOS),
    the log-probability of each drawn token at the sampling temperature [N, T], the thinking state fed
    with each token [N, T, d], whether that input was blended [N, T], and sqrt(1 - a^2) there [N, T]."""

    tokens: torch.Tensor
    lengths: torch.Tensor
    logps: torch.Tensor
    states: torch.Tensor
    thinking: torch.Tensor
    hidden_ratio: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """[N, T] True on each row's own tokens (through its EOS)."""
        return torch.arange(self.tokens.shape[1], device=self.tokens.device) < self.lengths[:, None]


def left_pad(prompts: list[list[int]], device) -> Prompts:
    ids, mask = pad(prompts, left=True)
    return Prompts(ids.to(device), mask.to(device), positions(mask).to(device))


def repeat_cache(cache, group: int):
    """Each prompt's cache entries repeated `group` times (row p -> rows p*G .. p*G+G-1)."""
    for layer in cache.layers:
        layer.keys = layer.keys.repeat_interleave(group, 0)
        layer.values = layer.values.repeat_interleave(group, 0)
    return cache


def read_prompts(lm, prompts: Prompts, group: int):
    """One forward over the prompts: last logits and last hidden states [P*G, ...], and the cache."""
    out = lm(input_ids=prompts.ids, attention_mask=prompts.mask, position_ids=prompts.positions, use_cache=True,
             output_hidden_states=True, logits_to_keep=1)
    return (out.logits[:, -1].repeat_interleave(group, 0), out.hidden_states[-1][:, -1].repeat_interleave(group, 0),
            repeat_cache(out.past_key_values, group))


class MarkerWatch:
    """Per row, whether the completion so far contains the answer marker (text, as the reward reads it).
    A marker of m characters spans at most m tokens, so only the last m tokens need decoding."""

    def __init__(self, tokenizer, marker: str, rows: int, device):
        self.tokenizer, self.marker = tokenizer, marker
        self.seen = torch.zeros(rows, dtype=torch.bool, device=device)

    def update(self, tokens: list[torch.Tensor]) -> torch.Tensor:
        recent = torch.stack(tokens[-len(self.marker):], 1).tolist()
        for row in (~self.seen).nonzero().flatten().tolist():
            if self.marker in self.tokenizer.decode(recent[row]):
                self.seen[row] = True
        return self.seen.clone()


def gumbel_max(logp: torch.Tensor, draw: torch.Generator) -> torch.Tensor:
    """A draw from each row's distribution: argmax of log-probs plus Gumbel noise (faster than
    torch.multinomial over a whole vocabulary on the CPU)."""
    uniform = torch.rand(logp.shape, generator=draw, device=logp.device).clamp_(min=1e-20)
    return (logp - torch.log(-torch.log(uniform))).argmax(-1)


@phase("decode")
@torch.no_grad()
def rollout(policy, tokenizer, prompts: Prompts, group: int, max_new_tokens: int, temperature: float,
            marker: str, seed: int | None = None) -> Rollout:
    """`group` completions per prompt, sampled at `temperature` (with a generator from `seed`), or
    greedy when `seed` is None (h of `probs` still from the distribution at `temperature`). Rows that
    are done keep decoding until all are; their extra tokens fall outside their length."""
    # LoRA merged for decoding, and (under the caller's autocast) each weight cast to bf16 once per rollout
    with lora_merged(policy.lm), casts_once(policy):
        return sample(policy, tokenizer, prompts, group, max_new_tokens, temperature, marker, seed)


def sample(policy, tokenizer, prompts: Prompts, group: int, max_new_tokens: int, temperature: float, marker: str,
           seed: int | None) -> Rollout:
    """rollout's decoding loop, on whatever weights the policy holds."""
    lm, eos = policy.lm, tokenizer.eos_token_id
    logits, hidden, cache = read_prompts(lm, prompts, group)
    mask = prompts.mask.repeat_interleave(group, 0)
    position = prompts.positions[:, -1].repeat_interleave(group, 0)
    draw = None if seed is None else torch.Generator(logits.device).manual_seed(seed)
    watch = MarkerWatch(tokenizer, marker, len(logits), logits.device)
    tokens, logps, states, thinking, ratios = [], [], [], [], []
    lengths = torch.full((len(logits),), max_new_tokens, device=logits.device)
    done = torch.zeros(len(logits), dtype=torch.bool, device=logits.device)
    for step in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() / temperature, -1)
        token = logp.argmax(-1) if draw is None else gumbel_max(logp, draw)
        tokens.append(token)
        logps.append(logp.gather(1, token[:, None])[:, 0])
        state = policy.probs_state(logp.exp()) if policy.state == "probs" else hidden
        states.append(state)
        blend = ~watch.update(tokens) if policy.state is not None else torch.zeros_like(done)
        thinking.append(blend)
        embeds, ratio = policy.inputs(token, state, blend)
        ratios.append(ratio)
        ended = (token == eos) & ~done
        lengths[ended] = step + 1
        done |= ended
        if done.all() or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
        position = position + 1
        out = lm(inputs_embeds=embeds[:, None], attention_mask=mask, position_ids=position[:, None],
                 past_key_values=cache, use_cache=True, output_hidden_states=True)
        cache, logits, hidden = out.past_key_values, out.logits[:, -1], out.hidden_states[-1][:, -1]
    return Rollout(torch.stack(tokens, 1), lengths, torch.stack(logps, 1), torch.stack(states, 1),
                   torch.stack(thinking, 1), torch.stack(ratios, 1))


def sequence_logps(policy, prompts: Prompts, rollout: Rollout, group: int, temperature: float,
                   plain: bool = False):
    """Teacher-forced log-probabilities [N, T] of the rollout's tokens (at `temperature`) and
    sqrt(1 - a^2) [N, T], with gradient: the prompts read once, then every completion fed the inputs
    its rollout saw (the gate recomputed from the stored states). `plain` feeds token ids alone (the
    reference model)."""
    lm = policy.lm
    first, _, cache = read_prompts(lm, prompts, group)
    fed = rollout.tokens[:, :-1]
    if plain:
        embeds, ratio = policy.embed(fed), torch.full(fed.shape, float("nan"), device=fed.device)
    else:
        embeds, ratio = policy.inputs(fed, rollout.states[:, :-1], rollout.thinking[:, :-1])
    mask = torch.cat([prompts.mask.repeat_interleave(group, 0), torch.ones_like(fed)], 1)
    positions = prompts.positions[:, -1:].repeat_interleave(group, 0) + torch.arange(1, fed.shape[1] + 1,
                                                                                     device=fed.device)
    out = lm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache)
    logits = torch.cat([first[:, None], out.logits], 1).float() / temperature
    # log-softmax at the drawn tokens only: one [N, T, V] tensor fewer than log_softmax would keep
    logp = logits.gather(2, rollout.tokens[..., None])[..., 0] - torch.logsumexp(logits, -1)
    return logp, torch.cat([ratio, torch.full_like(ratio[:, :1], float("nan"))], 1)
