"""Greedy decoding on a KV cache: from input embeddings alone (cramming), or after any prefilled
prefix (Coconut's latent passes), batched so that batched output equals unbatched output."""

import torch

from soft_tokens.core.phases import phase


@phase("decode")
@torch.no_grad()
def greedy_from_embeds(model, prefix: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Argmax-decode exactly `n_tokens` tokens after `prefix` [B, P, d]; returns [B, n_tokens].

    Every prefix in the batch has the same length, so no padding is involved and batched output
    equals unbatched output. EOS is an ordinary token here: decoding never stops early.
    """
    embed = model.get_input_embeddings()
    out = model(inputs_embeds=prefix.to(embed.weight.dtype), use_cache=True)
    return greedy_continue(model, out.logits[:, -1], out.past_key_values, n_tokens)[0]


@phase("decode")
@torch.no_grad()
def greedy_continue(model, logits: torch.Tensor, cache, max_new_tokens: int, eos_id: int | None = None,
                    attention_mask: torch.Tensor | None = None, last_position: torch.Tensor | None = None):
    """Greedy tokens after a prefix already in `cache`, whose last position gave `logits` [B, V].

    Returns tokens [B, n] and each row's length: up to and including its first `eos_id`, or all
    `max_new_tokens` (with no `eos_id`, every row gets exactly that many). Rows that are done keep
    decoding until all are, and their extra tokens fall outside their length. A left-padded batch
    passes its `attention_mask` and each row's `last_position`; both grow by one per token.
    """
    token = logits.argmax(-1)
    done = torch.zeros_like(token, dtype=torch.bool)
    lengths = torch.full_like(token, max_new_tokens)
    tokens = []
    for step in range(max_new_tokens):
        tokens.append(token)
        if eos_id is not None:
            ended = (token == eos_id) & ~done
            lengths[ended] = step + 1
            done |= ended
        if done.all() or step == max_new_tokens - 1:
            break
        padded = {}
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, torch.ones_like(attention_mask[:, :1])], 1)
            last_position = last_position + 1
            padded = {"attention_mask": attention_mask, "position_ids": last_position[:, None]}
        out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True, **padded)
        cache, token = out.past_key_values, out.logits[:, -1].argmax(-1)
    return torch.stack(tokens, 1), lengths
