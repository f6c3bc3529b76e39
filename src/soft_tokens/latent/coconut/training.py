"""Training and evaluating the Coconut methods stage by stage, each stage saved as a checkpoint.

A run works in `<out>.partial/`: every finished stage is a full model folder `stage<k>/`, so a
killed run resumes after its last finished stage; the folder is renamed to `<out>` at the end.
Every method of a dataset trains `num_epochs` epochs on the reference's stage schedule
(method.schedule). With `finetune: lora`, each stage trains a fresh LoRA
(plus the latent-token embeddings) that is merged into the weights before the stage is saved.
"""

import itertools
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.io import atomic_dir, fingerprint, partial_path, read_json, resumable_dir
from soft_tokens.core.phases import phase
from soft_tokens.core.seeding import generator, seed_for
from soft_tokens.core.training import (
    autocast,
    check_finite,
    check_finite_weights,
    eager_attention_on_cpu,
    epoch_order,
    load_trainable,
    with_adapters,
)
from soft_tokens.data.answers import scored
from soft_tokens.latent.coconut.history import finished_stages, stage_curve
from soft_tokens.latent.coconut.method import (
    FEEDBACK,
    add_latent_tokens,
    batch_loss,
    collate,
    controlled,
    generate,
    latent_ids,
    layout,
    schedule,
    thoughts_of,
    to_device,
    tokenize_frame,
    uniform_stage,
)
from soft_tokens.latent.coconut.spec import (CONTROLLED, CONTROLS, LATENT_METHODS, EvalCoconut, TrainCoconut,
                                             from_cot)

log = logging.getLogger(__name__)


def epoch_batches(problems: list, method: str, stage: int, epoch: int, settings: TrainCoconut, ids) -> list[list]:
    """One epoch's batches of layouts: the problems in the epoch's order, each at its stage for the epoch
    (the scheduled one, or with `uniform_prob` one drawn per problem), batched by latent count (a batch
    aligns on its first latent, so it holds one count; the reference mixes counts in a batch) in the
    order each count first comes up."""
    key = seed_for(settings.seed, stage)
    order = epoch_order(len(problems), key, epoch).tolist()
    rng = np.random.default_rng(seed_for(key, epoch))
    mixing = settings.uniform_prob if method in ("coconut", "pause") else 0.0
    by_count: dict[int, list] = {}
    for i in order:
        k = uniform_stage(rng, len(problems[i].steps), stage, mixing)
        lay = layout(problems[i], method, k, settings.c_thought, settings.max_latent_stage, ids)
        by_count.setdefault(lay.n_latent, []).append(lay)
    bs = settings.batch_size
    return [group[i:i + bs] for group in by_count.values() for i in range(0, len(group), bs)]


@phase("train")
def train_stage(model, tokenizer, train: list, val: list, val_answers: list[str], stage: int, epochs: int,
                settings: TrainCoconut, select: bool):
    """Train one stage; return the (merged) model and its history (per-epoch losses, optimiser steps).

    The optimiser is fresh at the start of the stage and, with `reset_optimizer`, at every epoch of a
    latent method (the reference's Coconut configs; its CoT run keeps one). With `select`, the stage
    keeps the epoch of best validation accuracy (the first of equals; the reference's
    `save_only_improve`), else its last epoch.
    """
    method, ids = settings.method, latent_ids(tokenizer)
    val_layouts = [layout(p, method, stage, settings.c_thought, settings.max_latent_stage, ids) for p in val]
    net = with_adapters(model, settings.finetune, settings, [ids.start, ids.end, ids.latent])
    params = [p for p in net.parameters() if p.requires_grad]
    new_optimiser = lambda: torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)  # noqa: E731
    opt, reset = new_optimiser(), settings.reset_optimizer and method in LATENT_METHODS
    device, feedback = model.device, method in FEEDBACK
    history, fix = [], "lower coconut.lr, or set dtype: float32 (finished stages are kept)"
    best, steps = None, 0
    for epoch in range(epochs):
        start, losses = time.time(), []
        if reset and epoch:
            opt = new_optimiser()
        for rows in tqdm(epoch_batches(train, method, stage, epoch, settings, ids),
                         desc=f"{method} stage {stage} epoch {epoch + 1}/{epochs}", mininterval=10):
            batch = to_device(collate(rows), device)
            with autocast(device, settings.dtype), eager_attention_on_cpu(net):
                loss = batch_loss(net, batch, feedback)
            check_finite(loss, f"{method} stage {stage} epoch {epoch + 1}", fix)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        steps += len(losses)
        record = {"epoch": epoch, "train_loss": sum(losses) / len(losses),
                  "val_loss": mean_loss(net, val_layouts, feedback, settings.eval_batch_size, settings.dtype)}
        if select:
            record["val_accuracy"] = accuracy(net, tokenizer, val, val_answers, stage, settings)
            if best is None or record["val_accuracy"] > best[1]:
                best = (epoch, record["val_accuracy"], {k: v.detach().clone() for k, v in net.state_dict().items()})
        history.append({**record, "seconds": time.time() - start})
        log.info("%s stage %d epoch %d: %s", method, stage, epoch + 1, json.dumps(history[-1]))
        check_finite(history[-1]["val_loss"], f"{method} stage {stage} epoch {epoch + 1} validation", fix)
    if best is not None:
        net.load_state_dict(best[2])
        log.info("%s stage %d: keeping epoch %d (validation accuracy %.3f)", method, stage, best[0] + 1, best[1])
    model = net.merge_and_unload() if settings.finetune == "lora" else net
    check_finite_weights(model, f"{method} stage {stage}", fix)
    return model, {"stage": stage, "n_latent": val_layouts[0].n_latent, "trainable_parameters":
                   sum(p.numel() for p in params), "optimizer_steps": steps,
                   "selected_epoch": None if best is None else best[0], "epochs": history}


@torch.no_grad()
def accuracy(model, tokenizer, problems: list, answers: list[str], stage: int, settings) -> float:
    """Greedy answer accuracy on `problems` at `stage`, in the numerics training uses."""
    return sum(r["correct"] for r in answer_rows(model, tokenizer, problems, answers, stage, settings)) / len(problems)


def prompt_layouts(tokenizer, problems: list, stage: int, settings) -> list:
    """What the method is given of each problem at `stage` before it generates."""
    ids = latent_ids(tokenizer)
    return [layout(p, settings.method, stage, settings.c_thought, settings.max_latent_stage, ids, prompt_only=True)
            for p in problems]


def answer_rows(model, tokenizer, problems: list, answers: list[str], stage: int, settings,
                thoughts: torch.Tensor | None = None) -> list[dict]:
    """Greedy answers at `stage`, batched, under the training autocast: per problem its scored answer,
    latent and generated tokens and whether it ran out of tokens; `thoughts` [N, n, H] replace the latent
    positions' vectors (the controls)."""
    method, bs = settings.method, settings.eval_batch_size
    prompts = prompt_layouts(tokenizer, problems, stage, settings)
    was_training, outputs = model.training, []
    model.eval()
    for i in tqdm(range(0, len(prompts), bs), desc=f"answers {method} stage {stage}", mininterval=10):
        with autocast(model.device, settings.dtype):
            outputs += generate(model, prompts[i:i + bs], method in FEEDBACK, tokenizer.eos_token_id,
                                settings.max_new_tokens, None if thoughts is None else thoughts[i:i + bs])
    model.train(was_training)
    return [{**scored(tokenizer.decode(out, skip_special_tokens=True), answer), "latent_tokens": prompt.n_latent,
             "generated_tokens": len(out), "truncated": out[-1] != tokenizer.eos_token_id}
            for prompt, out, answer in zip(prompts, outputs, answers)]


@phase("forward")
@torch.no_grad()
def mean_loss(model, layouts: list, feedback: bool, batch_size: int, dtype: str) -> float:
    """Token-weighted validation loss, in eval mode (no dropout); the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(layouts), batch_size):
        batch = to_device(collate(layouts[i:i + batch_size]), model.device)
        with autocast(model.device, dtype):
            loss = batch_loss(model, batch, feedback)
        n = int((batch.labels[:, 1:] != -100).sum())
        total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / count


def resumable_stages(partial: Path, planned: list[int]) -> list[int]:
    """The finished stages a run resumes after: the planned ones up to the first that is missing (removed
    as damaged, say). Stages after it were trained from it, so they go and are trained again."""
    finished = finished_stages(partial)
    done = list(itertools.takewhile(finished.__contains__, planned))
    for stage in sorted(set(finished) & set(planned) - set(done)):
        log.warning("%s: stage %d follows a missing stage; training it again", partial, stage)
        shutil.rmtree(partial / f"stage{stage}")
    return done


def train_method(base_dir: Path, cot_dir: Path | None, train_df: pd.DataFrame, val_df: pd.DataFrame,
                 settings: TrainCoconut, out_dir: Path) -> None:
    """Every stage of the job's method into out_dir/stage<k>/, resuming after the last finished stage."""
    method = settings.method
    torch.manual_seed(settings.seed)
    partial = partial_path(out_dir)
    starts_from_cot = from_cot(method, settings.start)
    inputs = {"model": base_dir, "train": train_df, "val": val_df}
    if starts_from_cot:
        inputs["cot"] = cot_dir / "stage0"  # what is read of it: its weights, not its timings
    resumable_dir(partial, fingerprint(settings.params(), inputs))
    longest = int(train_df["steps"].map(len).max())
    plan = schedule(method, starts_from_cot, settings.num_epochs, settings.epochs_per_stage,
                    settings.max_latent_stage, longest)
    done = resumable_stages(partial, [stage for stage, _ in plan])
    curve = TrainingCurve(partial / "curve.parquet", {"model": settings.model, "dataset": settings.dataset,
                                                      "seed": settings.seed, "method": method})
    if done:
        log.info("resuming %s after finished stage %d (%s)", method, done[-1], partial)
        model, tokenizer = load_trainable(partial / f"stage{done[-1]}", settings.device)
    elif starts_from_cot:
        model, tokenizer = load_trainable(cot_dir / "stage0", settings.device)
    else:
        model, tokenizer = load_trainable(base_dir, settings.device)
        add_latent_tokens(model, tokenizer, settings.init_token)
    train, val = tokenize_frame(tokenizer, train_df), tokenize_frame(tokenizer, val_df)
    log.info("%s: (stage, epochs) %s, starting from %s", method, plan,
             "the CoT model" if starts_from_cot else "the base model")
    for i, (stage, epochs) in enumerate(plan):
        if stage in done:
            continue
        model, history = train_stage(model, tokenizer, train, val, list(val_df["answer"]), stage, epochs, settings,
                                     select=settings.select_best and i == len(plan) - 1)
        with atomic_dir(partial / f"stage{stage}") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "history.json").write_text(json.dumps(history))
        curve.write(stage_curve(partial))
    curve.write(stage_curve(partial))  # a run resumed after its last stage trains nothing more
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)


def budget(run_dir: Path, stage: int) -> dict:
    """The run's training up to and including `stage`: epochs and optimiser steps (its stages' sums)."""
    histories = [read_json(run_dir / f"stage{k}" / "history.json")
                 for k in finished_stages(run_dir) if k <= stage]
    return {"train_epochs": sum(len(h["epochs"]) for h in histories),
            "train_steps": sum(h["optimizer_steps"] for h in histories),
            "final_train_loss": histories[-1]["epochs"][-1]["train_loss"]}


def evaluate_method(run_dir: Path, test_df: pd.DataFrame, settings: EvalCoconut) -> pd.DataFrame:
    """Greedy answers of every stage's checkpoint (methods of `stage_curves`; the others' last stage) on
    the test problems, in the numerics of training (float32 weights under the run's autocast), and at
    the last stage the latent controls of the method: one row per stage x control x problem (control
    `none`: the method as trained)."""
    method, rows = settings.method, []
    meta = {"model": settings.model, "dataset": settings.dataset, "seed": settings.seed, "method": method}
    answers, stages = list(test_df["answer"]), finished_stages(run_dir)
    for stage in stages if method in settings.stage_curves else stages[-1:]:
        model, tokenizer = load_trainable(run_dir / f"stage{stage}", settings.device)
        # Weights keep requires_grad (no graph is built under no_grad): autocast caches its bf16 copy of
        # such weights for a whole batch, and recasts frozen ones at every decoded token (1.3x slower).
        model.eval()
        problems = tokenize_frame(tokenizer, test_df)
        extra = {**meta, "stage": stage, **budget(run_dir, stage)}
        controls = ["none"] + (list(c for c in CONTROLLED.get(method, ()) if c in settings.controls)
                               if stage == stages[-1] else [])
        own = all_thoughts(model, tokenizer, problems, stage, settings) if len(controls) > 1 else None
        for control in controls:
            thoughts = None if control == "none" else controlled(
                own, control, generator(settings.seed, stage, CONTROLS.index(control)))
            found = answer_rows(model, tokenizer, problems, answers, stage, settings, thoughts)
            rows += [{**extra, "control": control, "id": int(i), **r} for i, r in zip(test_df["id"], found)]
            log.info("%s stage %d (control %s): accuracy %.3f", method, stage, control,
                     sum(r["correct"] for r in found) / len(found))
            truncated = sum(r["truncated"] for r in found)
            if truncated and control == "none":
                log.warning("%s stage %d: %d of %d answers reached coconut.max_new_tokens (%d) without EOS and are "
                            "cut short; raise coconut.max_new_tokens if they are still reasoning", method, stage,
                            truncated, len(found), settings.max_new_tokens)
    return pd.DataFrame(rows)


def all_thoughts(model, tokenizer, problems: list, stage: int, settings) -> torch.Tensor:
    """The vectors at every test problem's latent positions [N, n, H], in batches, under the training autocast."""
    method, bs = settings.method, settings.eval_batch_size
    prompts = prompt_layouts(tokenizer, problems, stage, settings)
    out = []
    for i in range(0, len(prompts), bs):
        with autocast(model.device, settings.dtype):
            out.append(thoughts_of(model, prompts[i:i + bs], method in FEEDBACK).float())
    return torch.cat(out)
