"""Training and evaluating the Coconut methods stage by stage, each stage saved as a checkpoint.

A run works in `<out>.partial/`: every finished stage is a full model folder `stage<k>/`, so a
killed run resumes after its last finished stage; the folder is renamed to `<out>` at the end.
The optimiser is reset at every stage. With `finetune: lora`, each stage trains a fresh LoRA
(plus the latent-token embeddings) that is merged into the weights before the stage is saved.
"""

import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd
import torch
from tqdm import tqdm

from soft_tokens.core.io import atomic_dir, fingerprint, partial_path, resumable_dir
from soft_tokens.core.models import load_model
from soft_tokens.core.seeding import seed_for
from soft_tokens.core.training import (
    autocast,
    check_finite,
    check_finite_weights,
    epoch_order,
    load_trainable,
    with_adapters,
)
from soft_tokens.data.answers import scored
from soft_tokens.latent.coconut.method import (
    FEEDBACK,
    add_latent_tokens,
    collate,
    curriculum,
    generate,
    latent_forward,
    latent_ids,
    layout,
    lm_loss,
    to_device,
    tokenize_frame,
)
from soft_tokens.latent.coconut.spec import STARTS_FROM_COT, EvalCoconut, TrainCoconut

log = logging.getLogger(__name__)


def stage_epochs(method: str, epochs_per_stage: int, max_latent_stage: int, longest_chain: int) -> int:
    """Epochs of each stage; the no-curriculum ablation gets all the epochs Coconut's stages get."""
    if method == "coconut_nocurriculum":
        return epochs_per_stage * len(curriculum("coconut", max_latent_stage, longest_chain))
    return epochs_per_stage


def train_stage(model, tokenizer, train: list, val: list, stage: int, epochs: int, settings: TrainCoconut):
    """Train one stage from a fresh optimiser; return the (merged) model and per-epoch losses."""
    method, ids = settings.method, latent_ids(tokenizer)
    lay = lambda problems: [layout(p, method, stage, settings.c_thought, settings.max_latent_stage, ids)  # noqa: E731
                            for p in problems]
    train_layouts, val_layouts = lay(train), lay(val)
    net = with_adapters(model, settings.finetune, settings, [ids.start, ids.end, ids.latent])
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    device, feedback, bs = model.device, method in FEEDBACK, settings.batch_size
    history, fix = [], "lower coconut.lr, or set dtype: float32 (finished stages are kept)"
    for epoch in range(epochs):
        start, losses = time.time(), []
        order = epoch_order(len(train_layouts), seed_for(settings.seed, stage), epoch).tolist()
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        for rows in tqdm(batches, desc=f"{method} stage {stage} epoch {epoch + 1}/{epochs}", mininterval=10):
            batch = to_device(collate([train_layouts[i] for i in rows]), device)
            with autocast(device, settings.dtype):
                loss = lm_loss(latent_forward(net, batch, feedback)[0], batch.labels)
            check_finite(loss, f"{method} stage {stage} epoch {epoch + 1}", fix)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss.item())
        history.append({"epoch": epoch, "train_loss": sum(losses) / len(losses),
                        "val_loss": mean_loss(net, val_layouts, feedback, settings.eval_batch_size, settings.dtype),
                        "seconds": time.time() - start})
        log.info("%s stage %d epoch %d: %s", method, stage, epoch + 1, history[-1])
        check_finite(history[-1]["val_loss"], f"{method} stage {stage} epoch {epoch + 1} validation", fix)
    model = net.merge_and_unload() if settings.finetune == "lora" else net
    check_finite_weights(model, f"{method} stage {stage}", fix)
    return model, {"stage": stage, "n_latent": train_layouts[0].n_latent, "trainable_parameters":
                   sum(p.numel() for p in params), "epochs": history}


@torch.no_grad()
def mean_loss(model, layouts: list, feedback: bool, batch_size: int, dtype: str) -> float:
    """Token-weighted validation loss, in eval mode (no dropout); the model is left in the mode it was in."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(layouts), batch_size):
        batch = to_device(collate(layouts[i:i + batch_size]), model.device)
        with autocast(model.device, dtype):
            loss = lm_loss(latent_forward(model, batch, feedback)[0], batch.labels)
        n = int((batch.labels[:, 1:] != -100).sum())
        total, count = total + loss.item() * n, count + n
    model.train(was_training)
    return total / count


def finished_stages(run_dir: Path) -> list[int]:
    return sorted(int(p.name.removeprefix("stage")) for p in run_dir.glob("stage*") if (p / "history.json").exists())


def train_method(base_dir: Path, cot_dir: Path | None, train_df: pd.DataFrame, val_df: pd.DataFrame,
                 settings: TrainCoconut, out_dir: Path) -> None:
    """Every stage of the job's method into out_dir/stage<k>/, resuming after the last finished stage."""
    method = settings.method
    torch.manual_seed(settings.seed)
    partial = partial_path(out_dir)
    inputs = {"model": base_dir, "train": train_df, "val": val_df}
    if method in STARTS_FROM_COT:
        inputs["cot"] = cot_dir
    resumable_dir(partial, fingerprint(settings.params(), inputs))
    longest = int(train_df["steps"].map(len).max())
    stages, done = curriculum(method, settings.max_latent_stage, longest), finished_stages(partial)
    if done:
        log.info("resuming %s after finished stage %d (%s)", method, done[-1], partial)
        model, tokenizer = load_trainable(partial / f"stage{done[-1]}", settings.device)
    elif method in STARTS_FROM_COT:
        model, tokenizer = load_trainable(cot_dir / "stage0", settings.device)
    else:
        model, tokenizer = load_trainable(base_dir, settings.device)
        add_latent_tokens(model, tokenizer, settings.init_token)
    train, val = tokenize_frame(tokenizer, train_df), tokenize_frame(tokenizer, val_df)
    for stage in [k for k in stages if k not in done]:
        epochs = stage_epochs(method, settings.epochs_per_stage, settings.max_latent_stage, longest)
        model, history = train_stage(model, tokenizer, train, val, stage, epochs, settings)
        with atomic_dir(partial / f"stage{stage}") as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "history.json").write_text(json.dumps(history))
    shutil.rmtree(out_dir, ignore_errors=True)
    partial.rename(out_dir)


def evaluate_method(run_dir: Path, test_df: pd.DataFrame, settings: EvalCoconut) -> pd.DataFrame:
    """Greedy answers of every stage's checkpoint on the test problems: one row per stage x problem."""
    method, rows = settings.method, []
    meta = {"model": settings.model, "dataset": settings.dataset, "seed": settings.seed}
    for stage in finished_stages(run_dir):
        model, tokenizer = load_model(run_dir / f"stage{stage}", settings.device, settings.dtype)
        ids = latent_ids(tokenizer)
        problems = tokenize_frame(tokenizer, test_df)
        prompts = [layout(p, method, stage, settings.c_thought, settings.max_latent_stage, ids, prompt_only=True)
                   for p in problems]
        outputs = []
        bs = settings.eval_batch_size
        for i in tqdm(range(0, len(prompts), bs), desc=f"eval {method} stage {stage}", mininterval=10):
            outputs += generate(model, prompts[i:i + bs], method in FEEDBACK, tokenizer.eos_token_id,
                                settings.max_new_tokens)
        history = json.loads((run_dir / f"stage{stage}" / "history.json").read_text())
        for problem, prompt, out in zip(test_df.itertuples(), prompts, outputs):
            text = tokenizer.decode(out, skip_special_tokens=True)
            rows.append({**meta, "method": method, "stage": stage, "id": int(problem.id),
                         **scored(text, problem.answer), "latent_tokens": prompt.n_latent,
                         "generated_tokens": len(out), "truncated": out[-1] != tokenizer.eos_token_id,
                         "final_train_loss": history["epochs"][-1]["train_loss"]})
        stage_rows = rows[-len(outputs):]
        log.info("%s stage %d: accuracy %.3f", method, stage, sum(r["correct"] for r in stage_rows) / len(outputs))
        truncated = sum(r["truncated"] for r in stage_rows)
        if truncated:
            log.warning("%s stage %d: %d of %d answers reached coconut.max_new_tokens (%d) without EOS and are "
                        "cut short; raise coconut.max_new_tokens if they are still reasoning", method, stage,
                        truncated, len(outputs), settings.max_new_tokens)
    return pd.DataFrame(rows)
