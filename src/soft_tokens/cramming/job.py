"""Cramming: optimise N mem vectors per text so a frozen LM reconstructs the text from them alone.

One job = one model x corpus x length x n_mem x variant x init x optimiser. Each finished sample is
written to a `.partial` folder at once (atomically), so a killed job resumes without redoing
finished samples. An optimiser (`cramming.optimizer_settings.<name>`) is a whole protocol: AdamW
settings and schedule, its init, which span of each passage is the text, where the vectors sit
(`first`, or `after_bos`: BOS given as an ordinary input token before them), the stop rule (accuracy,
logit margin), which step's vectors it keeps and the model's dtype.
"""

import copy
import logging
import math
import shutil
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from soft_tokens.core.decoding import greedy_from_embeds
from soft_tokens.core.io import (atomic_path, atomic_write_json, fingerprint, partial_path, read_json, resumable_dir,
                                 write_parquet)
from soft_tokens.core.models import load_model
from soft_tokens.core.optimiser import OptimSettings, PrefixResult, PrefixTask, init_vectors, optimise_with_restarts
from soft_tokens.core.phases import phase
from soft_tokens.core.prefix import prefix_forward
from soft_tokens.core.seeding import generator
from soft_tokens.core.tensor_files import load_tensors
from soft_tokens.cramming.metrics import (
    accuracy,
    downsample,
    information_metrics,
    mismatches,
    text_only_scores,
)
from soft_tokens.cramming.spec import METRIC_KEYS, VARIANTS, Cram, CramSettings
from soft_tokens.data.corpora import cramming_samples, read_corpus

log = logging.getLogger(__name__)

CONVENTION = (
    "token 0 is BOS (prepended when the tokenizer adds none); position k of mismatch@k is token k; "
    "CE totals compare tokens 1..L-1"
)
PLACEMENT_CONVENTION = {
    "first": "the vectors come first and the last one's logits predict token 0 (BOS); variant 'bos' neither "
             "trains nor scores token 0 and gives BOS after the vectors to greedy decoding",
    "after_bos": "BOS is given as an ordinary input token before the vectors and is never predicted or scored; "
                 "the last vector's logits predict token 1",
}


def convention(settings: CramSettings) -> str:
    """Where the vectors sit and what they predict, stored with every result."""
    placement = settings.optimizer_settings["placement"]
    return f"{CONVENTION}; placement '{placement}': {PLACEMENT_CONVENTION[placement]}"


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


def model_dtype(settings: CramSettings) -> str:
    """The protocol's model dtype; `auto` defers to the run's top-level `dtype`."""
    dtype = settings.optimizer_settings["dtype"]
    return settings.dtype if dtype == "auto" else dtype


def optim_settings(settings: CramSettings, max_steps: int, patience: int) -> OptimSettings:
    """The job's optimiser protocol as OptimSettings, with its step budget (the schedule spans it)."""
    o = settings.optimizer_settings
    return OptimSettings(
        lr=o["lr"], betas=tuple(o["betas"]), weight_decay=o["weight_decay"], schedule=o["schedule"],
        warmup_steps=o["warmup_steps"], min_lr=o["min_lr"], keep=o["keep"], temperature=o["temperature"],
        stop_accuracy=o["stop_accuracy"],
        margin=o["margin"], batch_size=settings.batch_size,
        max_steps=max_steps, patience=patience,
    )


def initial_vectors(settings: CramSettings, embedding: torch.Tensor, sample_id: int, attempt: int = 0) -> torch.Tensor:
    """A sample's fresh starting vectors for its first attempt or a restart: the init, scaled by the
    optimiser's init_scale, each attempt from its own seeded draw."""
    keys = (sample_id,) if attempt == 0 else (sample_id, attempt)
    vectors = init_vectors(settings.init, embedding, settings.n_mem, generator(settings.seed, *keys))
    return vectors * settings.optimizer_settings["init_scale"]


def task_for(key: int, ids: torch.Tensor, init: torch.Tensor,
             settings: CramSettings) -> tuple[PrefixTask, torch.Tensor]:
    """The optimiser's task for one text, and the loss weight of each text position (0 = not scored).
    With BOS given as input, the vectors' first predictions are tokens 1, 2, ...: `2leading` weights
    those, and `bos` is `base` (BOS is never predicted)."""
    if settings.optimizer_settings["placement"] == "after_bos":
        variant = "base" if settings.variant == "bos" else settings.variant
        rest = position_weights(variant, len(ids) - 1, settings.leading_tokens, settings.leading_weight)
        return PrefixTask(key, ids[1:], rest, init, lead_ids=ids[:1]), torch.cat([torch.zeros(1), rest])
    weights = position_weights(settings.variant, len(ids), settings.leading_tokens, settings.leading_weight)
    return PrefixTask(key, ids, weights, init), weights


@torch.no_grad()
def greedy_decode(model, vectors: torch.Tensor, ids: torch.Tensor, variant: str, placement: str) -> torch.Tensor:
    """The text as `model` decodes it greedily from the vectors (KV cache, as a user would decode),
    BOS given where the placement or variant gives it: [L] ids, comparable position by position."""
    embed = model.get_input_embeddings()
    vec = vectors.to(embed.weight.device)[None]
    bos = embed(ids[None, :1].to(embed.weight.device)).to(vec.dtype)
    if placement == "after_bos":  # BOS, then the vectors, which predict tokens 1..L-1
        prefix, given = torch.cat([bos, vec], 1), ids[:1]
    elif variant == "bos":  # BOS is known, not reconstructed: decode the rest after it
        prefix, given = torch.cat([vec, bos], 1), ids[:1]
    else:
        prefix, given = vec, ids[:0]
    return torch.cat([given, greedy_from_embeds(model, prefix, len(ids) - len(given))[0].to(given.device)])


@phase("forward")
@torch.no_grad()
def evaluate(model, vectors: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, variant: str,
             placement: str = "first", bf16_model=None) -> dict:
    """Teacher-forced and greedy reconstruction from the vectors, and what they add over the text alone.

    Greedy decoding runs on the KV cache, as a user would decode, not on the training forward: where
    the two round differently a near-tie flips, which is what the stop margin guards against. With
    `bf16_model` (the same model in bfloat16) the greedy decode is repeated there, as a bf16 user
    would decode vectors crammed in fp32."""
    embed = model.get_input_embeddings()
    dev = embed.weight.device
    ids, vec = ids.to(dev), vectors.to(dev)[None]
    scored = (weights > 0).to(dev)
    if placement == "after_bos":
        rest = prefix_forward(model, torch.cat([embed(ids[None, :1]).float(), vec], 1), ids[None, 1:])["logits"][0]
        tf_pred = torch.cat([ids[:1], rest.argmax(-1)])
    else:
        logits = prefix_forward(model, vec, ids[None])["logits"][0]
        rest, tf_pred = logits[1:], logits.argmax(-1)
    greedy = greedy_decode(model, vectors, ids, variant, placement).to(dev)
    ce_text, pred_text = text_only_scores(model, ids)
    ce_with = torch.nn.functional.cross_entropy(rest.float(), ids[1:], reduction="none")
    bf16 = math.nan
    if bf16_model is not None:
        bf16 = accuracy(greedy_decode(bf16_model, vectors.to(torch.bfloat16), ids, variant, placement).to(dev), ids,
                        scored)
    return {
        "teacher_forcing_accuracy": accuracy(tf_pred, ids, scored),
        "greedy_convergence": accuracy(greedy, ids, scored),
        "greedy_convergence_bf16": bf16,
        **mismatches(tf_pred, ids, scored, "tf"),
        **mismatches(greedy, ids, scored, "greedy"),
        **information_metrics(
            ce_text, ce_with, int((pred_text == ids[1:]).sum()), int((tf_pred[1:] == ids[1:]).sum())
        ),
        "greedy_ids": greedy.tolist(),
    }


def bf16_copy(model):
    """The model in bfloat16 for a second greedy decode, or None when it already is bfloat16."""
    if model.dtype == torch.bfloat16:
        return None
    return copy.deepcopy(model).to(torch.bfloat16)


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
        "best_margin": math.nan if result.status == "failed" else result.best_margin,
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


def job_meta(settings: CramSettings, model) -> dict:
    """What identifies a job's results, stored in every row and in the parquet metadata."""
    embedding = model.get_input_embeddings().weight
    return {
        **{k: getattr(settings, k) for k in ("model", "corpus", "n_mem", "variant", "init", "optimizer", "seed")},
        **({"length": settings.length} if isinstance(settings, Cram) else {}),
        **{key: settings.optimizer_settings[key] for key in ("placement", "margin", "stop_accuracy", "keep", "text")},
        "protocol_init": settings.optimizer_settings["init"],
        "step_budget": settings.max_steps if isinstance(settings, Cram) else settings.capacity["stage_steps"],
        "restarts": settings.optimizer_settings["restarts"] if isinstance(settings, Cram)
        else settings.capacity["restarts"],
        "hidden_size": model.config.hidden_size, "vocab_size": model.config.vocab_size,
        "dtype": str(embedding.dtype).removeprefix("torch."), "device": str(embedding.device.type),
    }


def run_job(model_dir: Path, corpus_path: Path, out_parquet: Path, out_vectors: Path, settings: Cram) -> pd.DataFrame:
    """One cramming job end to end; `settings` are the job's (soft_tokens.cramming.spec.Cram)."""
    model, tokenizer = load_model(model_dir, settings.device, model_dtype(settings))
    embedding = model.get_input_embeddings().weight
    samples = cramming_samples(
        read_corpus(corpus_path), tokenizer, settings.n_samples, settings.length, settings.draw_length, settings.seed,
        settings.corpus, span=settings.optimizer_settings["text"],
    )
    partial = partial_path(out_parquet)
    resumable_dir(partial, fingerprint(settings.params(), {"model": model_dir, "corpus": corpus_path}))
    done = {int(f.stem.split("_")[1]) for f in partial.glob("sample_*.json")}
    if done:
        log.info("resuming: %d of %d samples already finished in %s", len(done), len(samples), partial)

    by_key = {}
    tasks = []
    for sample in samples:
        ids = torch.tensor(sample["input_ids"])
        task, weights = task_for(sample["sample_id"], ids, initial_vectors(settings, embedding, sample["sample_id"]),
                                 settings)
        by_key[sample["sample_id"]] = (ids, weights)
        if sample["sample_id"] not in done:
            tasks.append(task)

    def finish(result: PrefixResult) -> None:
        ids, weights = by_key[result.key]
        if result.status == "failed":
            log.warning("sample %d failed: %s", result.key, result.reason)
            metrics = failed_metrics()
        else:
            metrics = evaluate(model, result.vectors, ids, weights, settings.variant,
                               settings.optimizer_settings["placement"], decode_bf16)
        record = sample_record(result, ids, metrics, settings.curve_points)
        with atomic_path(partial / f"sample_{result.key}.safetensors") as tmp:
            save_file({"vectors": result.vectors.contiguous()}, tmp)
        atomic_write_json(partial / f"sample_{result.key}.json", record)
        log.info(
            "sample %d: %s after %d steps, tf %.3f greedy %s",
            result.key, result.status, result.steps, result.best_accuracy, metrics["greedy_convergence"],
        )

    decode_bf16 = bf16_copy(model)
    optimise_with_restarts(model, tasks, optim_settings(settings, settings.max_steps, settings.patience),
                           settings.optimizer_settings["restarts"],
                           lambda key, attempt, _: initial_vectors(settings, embedding, key, attempt),
                           finish, desc=f"cram {out_parquet.stem}")

    records = [read_json(partial / f"sample_{s['sample_id']}.json") for s in samples]
    meta = job_meta(settings, model)
    df = pd.DataFrame([{**meta, **r} for r in records])
    vectors = {f"sample_{s['sample_id']}": load_tensors(partial / f"sample_{s['sample_id']}.safetensors")["vectors"]
               for s in samples}
    with atomic_path(out_vectors) as tmp:
        save_file(vectors, tmp, metadata={"convention": convention(settings)})
    write_parquet(df, out_parquet, {"convention": convention(settings), **{k: str(v) for k, v in meta.items()}})
    shutil.rmtree(partial)
    return df
