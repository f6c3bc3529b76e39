"""Cramming: optimise N mem vectors per text so a frozen LM reconstructs the text from them alone.

One job = one model x corpus x length x n_mem x variant x init. Each finished sample is written to a
`.partial` folder at once (atomically), so a killed job resumes without redoing finished samples.
"""

import json
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import load_file, save_file

from soft_tokens.core.decoding import greedy_from_embeds
from soft_tokens.core.io import atomic_path, atomic_write_json, fingerprint, resumable_dir, write_parquet
from soft_tokens.core.models import load_model
from soft_tokens.core.optimiser import OptimSettings, PrefixResult, PrefixTask, init_vectors, optimise_prefixes
from soft_tokens.core.prefix import prefix_forward
from soft_tokens.core.seeding import generator
from soft_tokens.cramming.metrics import (
    METRIC_KEYS,
    accuracy,
    downsample,
    information_metrics,
    mismatches,
    text_only_scores,
)
from soft_tokens.data.corpora import cramming_samples, read_corpus
from soft_tokens.workflow import VARIANTS

log = logging.getLogger(__name__)

CONVENTION = (
    "token 0 is BOS (prepended when the tokenizer adds none); the last mem vector's logits predict "
    "token 0; position k of mismatch@k is token k; variant 'bos' neither trains nor scores token 0 "
    "and gives BOS to greedy decoding; CE totals compare tokens 1..L-1"
)


def position_weights(variant: str, length: int, leading_tokens: int, leading_weight: float) -> torch.Tensor:
    """Loss weight of each text position: `bos` ignores token 0, `2leading` up-weights the first ones."""
    w = torch.ones(length)
    if variant == "bos":
        w[0] = 0.0
    elif variant == "2leading":
        w[:leading_tokens] = leading_weight
    elif variant != "base":
        raise ValueError(f"cramming.variants: unknown variant '{variant}' (one of {', '.join(VARIANTS)})")
    return w


@torch.no_grad()
def evaluate(model, vectors: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, variant: str) -> dict:
    """Teacher-forced and greedy reconstruction from the vectors, and what they add over the text alone."""
    dev = model.get_input_embeddings().weight.device
    ids, vec = ids.to(dev), vectors.to(dev)[None]
    scored = (weights > 0).to(dev)
    logits = prefix_forward(model, vec, ids[None])["logits"][0]
    tf_pred = logits.argmax(-1)
    if variant == "bos":  # BOS is known, not reconstructed: decode the rest after it
        prefix = torch.cat([vec, model.get_input_embeddings()(ids[None, :1]).float()], dim=1)
        greedy = torch.cat([ids[:1], greedy_from_embeds(model, prefix, len(ids) - 1)[0]])
    else:
        greedy = greedy_from_embeds(model, vec, len(ids))[0]
    ce_text, pred_text = text_only_scores(model, ids)
    ce_with = torch.nn.functional.cross_entropy(logits[1:], ids[1:], reduction="none")
    return {
        "teacher_forcing_accuracy": accuracy(tf_pred, ids, scored),
        "greedy_convergence": accuracy(greedy, ids, scored),
        **mismatches(tf_pred, ids, scored, "tf"),
        **mismatches(greedy, ids, scored, "greedy"),
        **information_metrics(
            ce_text, ce_with, int((pred_text == ids[1:]).sum()), int((tf_pred[1:] == ids[1:]).sum())
        ),
        "greedy_ids": greedy.tolist(),
    }


def sample_record(result: PrefixResult, ids: torch.Tensor, metrics: dict, curve_points: int) -> dict:
    steps, losses = downsample(result.loss_curve, curve_points)
    _, accs = downsample(result.accuracy_curve, curve_points)
    return {
        "sample_id": result.key,
        "n_tokens": len(ids),
        "input_ids": ids.tolist(),
        # A failed sample is excluded from every mean, its best-so-far accuracy included.
        "teacher_forcing_convergence": math.nan if result.status == "failed" else result.best_accuracy,
        "best_loss": math.nan if result.status == "failed" else result.best_loss,
        **metrics,
        "steps": result.steps,
        "seconds": result.seconds,
        "converged": result.status == "converged",
        "status": result.status,
        "failure_reason": result.reason,
        "curve_steps": steps,
        "curve_loss": losses,
        "curve_accuracy": accs,
    }


def failed_metrics() -> dict:
    """Metric columns of a failed sample: all NaN, so means skip it and nothing is invented."""
    return {**{k: math.nan for k in METRIC_KEYS}, "greedy_ids": []}


def run_job(model_dir: Path, corpus_path: Path, out_parquet: Path, out_vectors: Path, p: dict) -> pd.DataFrame:
    """One cramming job end to end; `p` holds the job's parameters (soft_tokens.workflow.job_params)."""
    model, tokenizer = load_model(model_dir, p["device"], p["dtype"])
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(
        read_corpus(corpus_path), tokenizer, p["n_samples"], p["length"], p["draw_length"], p["seed"], p["corpus"]
    )
    partial = Path(str(out_parquet) + ".partial")
    resumable_dir(partial, fingerprint(p, {"model": model_dir, "corpus": corpus_path}))
    done = {int(f.stem.split("_")[1]) for f in partial.glob("sample_*.json")}
    if done:
        log.info("resuming: %d of %d samples already finished in %s", len(done), len(samples), partial)

    by_key = {}
    tasks = []
    for sample in samples:
        ids = torch.tensor(sample["input_ids"])
        weights = position_weights(p["variant"], len(ids), p["leading_tokens"], p["leading_weight"])
        by_key[sample["sample_id"]] = (ids, weights)
        if sample["sample_id"] not in done:
            init = init_vectors(p["init"], embedding, p["n_mem"], generator(p["seed"], sample["sample_id"]))
            tasks.append(PrefixTask(sample["sample_id"], ids, weights, init))

    def finish(result: PrefixResult) -> None:
        ids, weights = by_key[result.key]
        if result.status == "failed":
            log.warning("sample %d failed: %s", result.key, result.reason)
            metrics = failed_metrics()
        else:
            metrics = evaluate(model, result.vectors, ids, weights, p["variant"])
        record = sample_record(result, ids, metrics, p["curve_points"])
        with atomic_path(partial / f"sample_{result.key}.safetensors") as tmp:
            save_file({"vectors": result.vectors.contiguous()}, tmp)
        atomic_write_json(partial / f"sample_{result.key}.json", record)
        log.info(
            "sample %d: %s after %d steps, tf %.3f greedy %s",
            result.key, result.status, result.steps, result.best_accuracy, metrics["greedy_convergence"],
        )

    settings = OptimSettings(
        lr=p["lr"], betas=tuple(p["betas"]), weight_decay=p["weight_decay"],
        max_steps=p["max_steps"], patience=p["patience"], batch_size=p["batch_size"],
    )
    torch.manual_seed(p["seed"])
    optimise_prefixes(model, tasks, settings, finish, desc=f"cram {out_parquet.stem}")

    records = [json.loads((partial / f"sample_{s['sample_id']}.json").read_text()) for s in samples]
    meta = {
        "model": p["model"], "corpus": p["corpus"], "length": p["length"], "n_mem": p["n_mem"],
        "variant": p["variant"], "init": p["init"], "seed": p["seed"],
        "hidden_size": model.config.hidden_size, "vocab_size": model.config.vocab_size,
        "dtype": str(embedding.dtype).removeprefix("torch."), "device": str(embedding.device.type),
    }
    df = pd.DataFrame([{**meta, **r} for r in records])
    vectors = {f"sample_{s['sample_id']}": load_file(partial / f"sample_{s['sample_id']}.safetensors")["vectors"]
               for s in samples}
    with atomic_path(out_vectors) as tmp:
        save_file(vectors, tmp, metadata={"convention": CONVENTION})
    write_parquet(df, out_parquet, {"convention": CONVENTION, **{k: str(v) for k, v in meta.items()}})
    shutil.rmtree(partial)
    return df
