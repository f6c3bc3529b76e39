"""The one soft-prefix forward: a frozen LM reading trainable or predicted vectors, then text.

Every track that puts vectors before tokens (cramming, e*, the compressors, the recursive demo)
scores the text through this function, so they all agree on where each token is predicted.
"""

import torch


def prefix_forward(model, prefix: torch.Tensor, ids: torch.Tensor, lengths: torch.Tensor | None = None,
                   layers=(), attentions: bool = False) -> dict:
    """The model on [prefix [B, P, d], ids[:, :-1]]: at the L positions that predict ids [B, L] (the
    last prefix vector predicts ids[:, 0]), the logits, the hidden states at `layers` and, with
    `attentions`, the text->text attention maps. Rows shorter than L (`lengths`) are right-padded and
    masked, which leaves the real positions unchanged."""
    n = prefix.shape[1]
    embed = model.get_input_embeddings()
    inputs = torch.cat([prefix.to(embed.weight.dtype), embed(ids[:, :-1])], dim=1)
    mask = None
    if lengths is not None and bool((lengths < ids.shape[1]).any()):
        real = torch.arange(ids.shape[1] - 1, device=ids.device)[None] < lengths[:, None]
        mask = torch.cat([torch.ones_like(real[:, :1]).expand(-1, n), real], dim=1).long()
    out = model(inputs_embeds=inputs, attention_mask=mask, output_hidden_states=bool(layers),
                output_attentions=attentions)
    return text_view(out, n, ids.shape[1], layers, attentions)


def text_view(out, n_prefix: int, n_text: int, layers=(), attentions: bool = False) -> dict:
    """Logits, hidden states and (text -> text) attention maps at the positions predicting the text
    that follows `n_prefix` positions of anything (vectors or tokens)."""
    sl = slice(n_prefix - 1, n_prefix - 1 + n_text)
    view = {"logits": out.logits[:, sl].float(), "hidden": {l: out.hidden_states[l][:, sl].float() for l in layers}}
    if attentions:  # text queries onto text keys: the block every prefix shares
        view["attention"] = {l: out.attentions[l][:, :, sl, sl].float() for l in layers}
    return view
