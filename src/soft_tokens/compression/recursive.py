"""Recursive demo as a measured experiment: an earlier passage folded into one soft token.

The earlier passage's hidden states at the converter's layer are mean-pooled and mapped by the
converter into the input-embedding space. That single vector is put before a follow-up prompt, and
the cross-entropy of the passage's true continuation is compared with no prefix and with the full
earlier text in its place.
"""

import torch
import torch.nn.functional as F

from soft_tokens.compression.converter import hidden_states
from soft_tokens.core.phases import phase
from soft_tokens.core.prefix import prefix_forward
from soft_tokens.data.corpora import split_sentences, with_bos

CONDITIONS = ("none", "converter", "full_text")


def demo_items(corpus, tokenizer, n: int, context_tokens: int, continuation_tokens: int) -> list[dict]:
    """(earlier text ids, continuation ids) from the first `n` passages long enough for both."""
    items = []
    for row in corpus.itertuples():
        sentences = split_sentences(row.text)
        half = len(sentences) // 2
        earlier = tokenizer(" ".join(sentences[:half]), add_special_tokens=False).input_ids[-context_tokens:]
        later = tokenizer(" " + " ".join(sentences[half:]), add_special_tokens=False).input_ids
        if len(earlier) == context_tokens and len(later) >= continuation_tokens:
            items.append({"id": int(row.id), "earlier": earlier, "continuation": later[:continuation_tokens]})
        if len(items) == n:
            return items
    raise ValueError(f"only {len(items)} passages have {context_tokens} + {continuation_tokens} tokens; lower "
                     "recursive_demo.n_passages, context_tokens or continuation_tokens")


@phase("forward")
@torch.no_grad()
def pooled_vector(model, tokenizer, converter, ids: list[int], layer: int) -> torch.Tensor:
    """The converter applied to the mean of the text's hidden states at `layer` (BOS excluded)."""
    dev = model.get_input_embeddings().weight.device
    hidden = hidden_states(model, input_ids=torch.tensor([with_bos(tokenizer, ids)], device=dev))
    pooled = hidden[layer][0, 1:].float().mean(0).cpu()
    return converter(pooled[None])[0]


def prefix_embeds(model, tokenizer, condition: str, item: dict, vector: torch.Tensor, prompt: str) -> torch.Tensor:
    """[P, d] input embeddings before the continuation: BOS, then the condition's prefix, then the prompt."""
    embed = model.get_input_embeddings()
    dev = embed.weight.device
    prompt_ids = tokenizer(prompt, add_special_tokens=False).input_ids
    head = with_bos(tokenizer, item["earlier"] if condition == "full_text" else [])
    parts = [embed(torch.tensor(head, device=dev))]
    if condition == "converter":
        parts.append(vector.to(dev, embed.weight.dtype)[None])
    parts.append(embed(torch.tensor(prompt_ids, device=dev)))
    return torch.cat(parts)


@phase("forward")
@torch.no_grad()
def continuation_ce(model, prefix: torch.Tensor, continuation: list[int]) -> float:
    """Mean cross-entropy (nats/token) of `continuation` after the embeddings `prefix` [P, d]."""
    ids = torch.tensor([continuation], device=prefix.device)
    return float(F.cross_entropy(prefix_forward(model, prefix[None], ids)["logits"][0], ids[0]))


@phase("decode")
@torch.no_grad()
def generate_batch(model, tokenizer, prefixes: list[torch.Tensor], max_new_tokens: int) -> list[str]:
    """Greedy generations from left-padded prefixes, with the attention mask and pad token set."""
    dev = prefixes[0].device
    longest = max(len(p) for p in prefixes)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    pad = model.get_input_embeddings()(torch.tensor([pad_id], device=dev))
    inputs = torch.stack([torch.cat([pad.expand(longest - len(p), -1), p]) for p in prefixes])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prefixes], device=dev)
    out = model.generate(inputs_embeds=inputs, attention_mask=mask, max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=pad_id)
    return tokenizer.batch_decode(out, skip_special_tokens=True)
