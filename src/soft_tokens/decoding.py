"""Greedy decoding from input embeddings alone, with a KV cache and no stopping at EOS."""

import torch


@torch.no_grad()
def greedy_from_embeds(model, prefix: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Argmax-decode exactly `n_tokens` tokens after `prefix` [B, P, d]; returns [B, n_tokens].

    Every prefix in the batch has the same length, so no padding is involved and batched output
    equals unbatched output. EOS is an ordinary token here: decoding never stops early.
    """
    embed = model.get_input_embeddings()
    out = model(inputs_embeds=prefix.to(embed.weight.dtype), use_cache=True)
    tokens = [out.logits[:, -1].argmax(-1)]
    for _ in range(n_tokens - 1):
        out = model(input_ids=tokens[-1][:, None], past_key_values=out.past_key_values, use_cache=True)
        tokens.append(out.logits[:, -1].argmax(-1))
    return torch.stack(tokens, dim=1)
