"""e*: per-context virtual tokens. k vectors optimised so that the frozen model, given only them,
predicts what follows the context; the targets a compressor learns to predict from the context.
"""

import logging

import torch

from soft_tokens.compression.converter import check_layer
from soft_tokens.core.optimiser import OptimSettings, PrefixTask, optimise_prefixes
from soft_tokens.data.corpora import with_bos

log = logging.getLogger(__name__)


def context_pairs(corpus, tokenizer, n: int, ctx_len: int, follow_len: int) -> list[dict]:
    """`n` (context ids with BOS first, the follow_text ids right after it) pairs, cut as consecutive
    non-overlapping windows from the passages in order."""
    pairs, window = [], ctx_len + follow_len - 1  # the context's BOS is not passage text
    for row in corpus.itertuples():
        ids = tokenizer(row.text, add_special_tokens=False).input_ids
        for start in range(0, len(ids) - window + 1, window):
            piece = with_bos(tokenizer, ids[start : start + window])
            pairs.append({"id": len(pairs), "passage": int(row.id), "context": piece[:ctx_len], "follow": piece[ctx_len:]})
            if len(pairs) == n:
                return pairs
    raise ValueError(f"the corpus yields only {len(pairs)} windows of {ctx_len} + {follow_len} tokens; lower "
                     "estar.n_contexts, estar.ctx_len or estar.follow_len")


@torch.no_grad()
def teacher_states(model, context: torch.Tensor, follow: torch.Tensor, layers: list[int]) -> dict:
    """Hidden states of the full context + follow_text at `layers`: every context position, and the
    positions that predict each follow token (the last context token, then follow[:-1])."""
    ids = torch.cat([context, follow[:-1]])[None].to(model.get_input_embeddings().weight.device)
    hidden = model(input_ids=ids, output_hidden_states=True).hidden_states
    n = len(context)
    return {layer: (hidden[layer][0, :n].float().cpu(), hidden[layer][0, n - 1 :].float().cpu()) for layer in layers}


def build_estar(model, pairs: list[dict], s: dict, inits: list[torch.Tensor]) -> list[dict]:
    """Optimise k vectors per context with the batched soft-prefix optimiser (optionally also matching
    the teacher's hidden states at `match_layer`); record the context's states at `context_layer`."""
    layers = sorted({check_layer(model, s["context_layer"], "estar.context_layer"),
                     check_layer(model, s["match_layer"], "estar.match_layer")})
    states = [teacher_states(model, torch.tensor(p["context"]), torch.tensor(p["follow"]), layers) for p in pairs]
    tasks = [
        PrefixTask(i, torch.tensor(p["follow"]), torch.ones(len(p["follow"])), inits[i],
                   states[i][s["match_layer"]][1] if s["match_weight"] else None)
        for i, p in enumerate(pairs)
    ]
    settings = OptimSettings(lr=s["lr"], max_steps=s["max_steps"], patience=s["max_steps"], batch_size=s["batch_size"],
                             hidden_layer=s["match_layer"], hidden_weight=s["match_weight"], hidden_loss=s["match_loss"])
    results = {}

    def record(result):
        if result.status == "failed":
            log.warning("e* of context %d failed: %s (its best vectors so far are kept)", result.key, result.reason)
        results[result.key] = result

    optimise_prefixes(model, tasks, settings, record, desc="e*")
    return [{"id": p["id"], "context": p["context"], "follow": p["follow"], "estar": results[i].vectors,
             "context_hidden": states[i][s["context_layer"]][0], "accuracy": results[i].best_accuracy,
             "loss": results[i].best_loss, "steps": results[i].steps, "status": results[i].status,
             "reason": results[i].reason} for i, p in enumerate(pairs)]
