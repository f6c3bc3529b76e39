"""e*: per-context virtual tokens. k vectors optimised so that the frozen model, given only them,
predicts what follows the context; the targets a compressor learns to predict from the context.
"""

import logging

import numpy as np
import pandas as pd
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from soft_tokens.compression.converter import check_layer, hidden_states
from soft_tokens.compression.spec import BuildEstar
from soft_tokens.core.io import atomic_path, write_parquet
from soft_tokens.core.phases import phase
from soft_tokens.core.tensor_files import load_tensors
from soft_tokens.core.optimiser import OptimSettings, PrefixTask, optimise_prefixes
from soft_tokens.data.corpora import with_bos

log = logging.getLogger(__name__)


def context_pairs(corpus, tokenizer, n_train: int, n_held_out: int, ctx_len: int, follow_len: int) -> list[dict]:
    """(context ids with BOS first, the follow_text ids right after it) pairs cut from the corpus's
    passages read as one token stream: `n_held_out` non-overlapping windows at its end, held out,
    then `n_train` training windows whose starts are spread evenly over the text before them
    (overlapping where the text is short), so no held-out token is ever trained on."""
    stream = [t for text in corpus["text"] for t in tokenizer(text, add_special_tokens=False).input_ids]
    window = ctx_len + follow_len - 1  # the context's BOS is not passage text
    held_start = len(stream) - n_held_out * window
    if held_start < window or held_start - window + 1 < n_train:
        raise ValueError(
            f"the corpus has {len(stream)} tokens: {n_held_out} held-out windows of {ctx_len} + {follow_len} tokens "
            f"and {n_train} distinct training windows need more; lower estar.train_contexts, "
            "estar.held_out_contexts, estar.ctx_len or estar.follow_len")
    held = range(held_start, len(stream) - window + 1, window)
    train = np.linspace(0, held_start - window, n_train).round().astype(int)
    pieces = [("held_out", start) for start in held] + [("train", int(start)) for start in train]
    return [{"id": i, "split": split, "start": start,
             "context": with_bos(tokenizer, stream[start : start + window])[:ctx_len],
             "follow": stream[start + ctx_len - 1 : start + window]} for i, (split, start) in enumerate(pieces)]


def with_estar(pairs: list[dict], n_train: int) -> list[int]:
    """Which pairs get e*: every held-out one (the oracle of the evaluation) and `n_train` training
    ones spread evenly (regression targets; the others are trained on by distillation alone)."""
    held = [p["id"] for p in pairs if p["split"] == "held_out"]
    train = [p["id"] for p in pairs if p["split"] == "train"]
    if n_train > len(train):
        raise ValueError(f"estar.estar_train_contexts is {n_train} but there are {len(train)} training contexts; "
                         "lower it or raise estar.train_contexts")
    return held + [train[int(i)] for i in np.linspace(0, len(train) - 1, n_train).round()]


@phase("forward")
@torch.no_grad()
def teacher_states(model, context: torch.Tensor, follow: torch.Tensor, layers: list[int], batch_size: int) -> dict:
    """Hidden states of the full contexts [N, n] + follow_texts [N, F] at `layers`, in batches (every pair
    has the same lengths: no padding): {layer: (every context position [N, n, d], the positions that
    predict each follow token [N, F, d]: the last context token, then follow[:-1])}."""
    device = model.get_input_embeddings().weight.device
    n, parts = context.shape[1], {layer: ([], []) for layer in layers}
    for start in tqdm(range(0, len(context), batch_size), desc="teacher states", mininterval=5):
        ids = torch.cat([context[start:start + batch_size], follow[start:start + batch_size, :-1]], 1)
        hidden = hidden_states(model, input_ids=ids.to(device))
        for layer, (ctx, fol) in parts.items():
            ctx.append(hidden[layer][:, :n].float().cpu())
            fol.append(hidden[layer][:, n - 1:].float().cpu())
    return {layer: (torch.cat(ctx), torch.cat(fol)) for layer, (ctx, fol) in parts.items()}


@phase("train")
def build_estar(model, pairs: list[dict], settings: BuildEstar, inits: dict[int, torch.Tensor]) -> list[dict]:
    """Every pair's context states at `context_layer` and the teacher's last hidden states where it
    predicts the follow text (the compressors' distillation target, computed here once); for the pairs
    in `inits`, k vectors optimised with the batched soft-prefix optimiser (optionally also matching the
    teacher's hidden states at `match_layer`)."""
    layers = sorted({check_layer(model, settings.context_layer, "estar.context_layer"),
                     check_layer(model, settings.match_layer, "estar.match_layer"), -1})
    states = teacher_states(model, torch.tensor([p["context"] for p in pairs]),
                            torch.tensor([p["follow"] for p in pairs]), layers, settings.batch_size)
    tasks = [
        PrefixTask(i, torch.tensor(pairs[i]["follow"]), torch.ones(len(pairs[i]["follow"])), init,
                   states[settings.match_layer][1][i] if settings.match_weight else None)
        for i, init in inits.items()
    ]
    optim = OptimSettings(lr=settings.lr, max_steps=settings.max_steps, patience=settings.max_steps,
                          batch_size=settings.batch_size, hidden_layer=settings.match_layer,
                          hidden_weight=settings.match_weight, hidden_loss=settings.match_loss)
    results = {}

    def record(result):
        if result.status == "failed":
            log.warning("e* of context %d failed: %s (its best vectors so far are kept)", result.key, result.reason)
        results[result.key] = result

    optimise_prefixes(model, tasks, optim, record, desc="e*")
    built = []
    for i, p in enumerate(pairs):
        r = results.get(i)
        built.append({"id": p["id"], "split": p["split"], "start": p["start"], "context": p["context"],
                      "follow": p["follow"], "context_hidden": states[settings.context_layer][0][i],
                      "teacher_final": states[-1][1][i],
                      "has_estar": r is not None, "estar": r.vectors if r else None,
                      **({"accuracy": r.best_accuracy, "loss": r.best_loss, "steps": r.steps, "status": r.status,
                          "reason": r.reason, "loss_curve": r.loss_curve, "accuracy_curve": r.accuracy_curve}
                         if r else {})})
    return built


# The per-context columns of e*'s table (its tensors go to the safetensors file beside it), each optimised
# context's curve (loss and teacher-forced accuracy per step) among them.
TABLE_COLUMNS = ["id", "split", "start", "has_estar", "accuracy", "loss", "steps", "status", "reason", "loss_curve",
                 "accuracy_curve"]


def save_estar(built: list[dict], k: int, hidden_size: int, meta: dict, vectors_path, table_path) -> None:
    """e* of every context (zeros where none was optimised), with the flags and token ids the compressors
    read (`load_estar`), and the per-context table."""
    tensors = {
        "estar": torch.stack([b["estar"] if b["has_estar"] else torch.zeros(k, hidden_size) for b in built]),
        "has_estar": torch.tensor([b["has_estar"] for b in built]),
        "held_out": torch.tensor([b["split"] == "held_out" for b in built]),
        "context_hidden": torch.stack([b["context_hidden"] for b in built]),
        "teacher_final": torch.stack([b["teacher_final"] for b in built]),
        "context": torch.tensor([b["context"] for b in built]),
        "follow": torch.tensor([b["follow"] for b in built]),
    }
    with atomic_path(vectors_path) as tmp:
        save_file(tensors, tmp, metadata={key: str(v) for key, v in meta.items()})
    write_parquet(pd.DataFrame([{c: b.get(c) for c in TABLE_COLUMNS} for b in built]).assign(**meta), table_path)


def load_estar(path) -> dict:
    """What save_estar wrote: estar [n, k, d], has_estar and held_out [n], context_hidden, teacher_final
    [n, F, d], context and follow."""
    return load_tensors(path)
