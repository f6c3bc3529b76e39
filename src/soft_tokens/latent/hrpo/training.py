"""Training and evaluating one HRPO / GRPO policy (model x dataset x method x seed).

The policy starts from the start checkpoint (by default the Coconut track's CoT model, which already
writes `### answer`), with a fresh LoRA and, for HRPO, a gate (and projection) of its own. Each step
samples `group_size` completions for each of `prompts_per_step` problems, scores them, and takes one
AdamW step on the GRPO loss (or `updates_per_batch` clipped ones). Prompts are the dataset's training
problems, or `fresh_problems` newly generated ones of the same kind: a model fine-tuned on the
training split answers those almost always right, which leaves GRPO groups without a difference.
"""

import logging
import math
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.phases import phase
from soft_tokens.core.seeding import generator, seed_for
from soft_tokens.core.training import (
    autocast,
    check_finite,
    check_finite_weights,
    eager_attention_on_cpu,
    epoch_order,
    load_trainable,
    load_trained,
    read_meta,
    resume,
    save_epoch,
    save_trained,
    with_lora,
)
from soft_tokens.data.answers import extract_answer, is_correct, scored
from soft_tokens.data.reasoning import build_reasoning
from soft_tokens.latent.hrpo import grpo
from soft_tokens.latent.hrpo.method import HybridPolicy
from soft_tokens.latent.hrpo.rollout import left_pad, rollout, sequence_logps
from soft_tokens.latent.hrpo.spec import METHODS, BuildPolicy, EvalHrpo, TrainHrpo

log = logging.getLogger(__name__)
FIX = "lower hrpo.lr_lora / lr_gate, or set dtype: float32"
FRESH_KEY = 7  # folded into the seed of freshly generated prompt problems


def start_dir(path: Path, start: str) -> Path:
    """The start checkpoint: a Coconut CoT run's stage 0 (`start: cot`) or the prepared model."""
    folder = path / "stage0" if start == "cot" else path
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"hrpo.start: no model at {folder} (start: {start}); run the Coconut track's "
                                "cot method first (start: cot) or prepare the model (start: base)")
    return folder


def check_answers(df: pd.DataFrame, dataset: str) -> None:
    """Every gold answer must give a non-empty answer under the shared rule (text after the last `#`)."""
    empty = df[df.answer.map(lambda a: extract_answer(str(a)) == "")]
    if len(empty):
        raise ValueError(f"hrpo.datasets: '{dataset}' has {len(empty)} answers with nothing after the answer "
                         f"marker (e.g. {empty.answer.iloc[0]!r}); answers must be `#### <answer>` or the bare "
                         "answer, which the reward compares after the marker")


def prompt_problems(dataset: str, spec: dict, splits: dict[str, pd.DataFrame], settings: TrainHrpo) -> pd.DataFrame:
    """The problems GRPO samples prompts from: the training split, or `fresh_problems` new ones of the
    dataset's kind (seeded apart from its own), none of whose questions is in any of its splits."""
    check_answers(splits["test"], dataset)
    if settings.fresh_problems == 0:
        check_answers(splits["train"], dataset)
        return splits["train"]
    if spec["kind"] == "hub":
        raise ValueError(f"hrpo.fresh_problems: '{dataset}' is read from the hub, so no new problems can be made; "
                         "set fresh_problems: 0 to use its training split")
    seen = set(pd.concat(splits.values()).question)
    fresh = build_reasoning(dataset, {**spec, "n_problems": settings.fresh_problems},
                            seed_for(settings.seed, FRESH_KEY))
    fresh = fresh[~fresh.question.isin(seen)].drop_duplicates("question").reset_index(drop=True)
    log.info("%d fresh %s problems for the prompts (%d dropped as already in a split)", len(fresh), dataset,
             settings.fresh_problems - len(fresh))
    check_answers(fresh, dataset)
    return fresh


def build_policy(start: Path, method: str, settings: BuildPolicy):
    """The start model with a fresh LoRA (peft) and, unless `method` is grpo, the gate of `method`'s
    thinking state; only LoRA, gate and projection weights are trainable."""
    if method not in METHODS:
        raise ValueError(f"hrpo.methods: unknown method '{method}'; use one of {METHODS}")
    torch.manual_seed(settings.seed)
    lm, tokenizer = load_trainable(start, settings.device)
    lm = with_lora(lm.eval(), settings)
    policy = HybridPolicy(lm, None if method == "grpo" else method, settings, generator(settings.seed, FRESH_KEY + 1))
    return policy, tokenizer


def optimizer(policy: HybridPolicy, settings: TrainHrpo) -> torch.optim.AdamW:
    """AdamW with the public learning rates per part (LoRA, the gate's two linears, Lambda, projection),
    betas (0.9, 0.99) and weight decay on every trained weight, the gate's biases too with
    `decay_biases` (the public optimizer groups, patch.py): on Lambda it pulls a0 down (softplus(-Lambda)
    up), so decay alone slowly opens the gate. Each group keeps its base rate as `base_lr`."""
    groups = {}
    for name, p in policy.named_parameters():
        if not p.requires_grad:
            continue
        key = ("lr_lambda" if name.endswith("Lambda") else "lr_gate" if name.startswith("gate.") else
               "lr_projection" if name.startswith("projection.") else "lr_lora")
        groups.setdefault((key, settings.decay_biases or not name.endswith("bias")), []).append(p)
    return torch.optim.AdamW([{"params": ps, "lr": getattr(settings, key), "base_lr": getattr(settings, key),
                               "weight_decay": settings.weight_decay if decay else 0.0}
                              for (key, decay), ps in groups.items()], betas=(0.9, 0.99))


def lr_factor(step: int, steps: int, schedule: str, warmup_ratio: float) -> float:
    """The schedule's multiplier at optimiser step `step` (0-based): 1, or a linear warm-up over
    ceil(warmup_ratio x steps) steps then a cosine to 0, as transformers' get_cosine_schedule_with_warmup
    gives it (with the HF Trainer's warm-up count)."""
    if schedule == "constant":
        return 1.0
    warmup = math.ceil(warmup_ratio * steps)
    if step < warmup:
        return step / max(1, warmup)
    return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@phase("save")
def save_policy(policy: HybridPolicy, folder: Path) -> None:
    """The LM's LoRA as a PEFT adapter (folder/adapter), the gate and projection beside it
    (core.training.save_trained)."""
    save_trained(policy, policy.lm, folder, {"state": policy.state or "grpo"})


def load_policy(folder: Path, policy: HybridPolicy) -> HybridPolicy:
    """Trained weights into a freshly built policy of the same method."""
    fix = f"delete {folder} so train_hrpo retrains it"
    if read_meta(folder)["state"] != (policy.state or "grpo"):
        raise ValueError(f"{folder} holds a '{read_meta(folder)['state']}' policy, not the "
                         f"'{policy.state or 'grpo'}' policy this job builds; {fix}")
    return load_trained(folder, policy, policy.lm, fix)


def prompt_order(n: int, per_step: int, steps: int, seed: int) -> list[list[int]]:
    """The problems of each step: epoch after epoch of seeded permutations, cut into steps."""
    flat, epoch = [], 0
    while len(flat) < per_step * steps:
        flat += epoch_order(n, seed, epoch).tolist()
        epoch += 1
    return [flat[i * per_step:(i + 1) * per_step] for i in range(steps)]


def prompt_ids(tokenizer, questions, settings: BuildPolicy) -> list[list[int]]:
    """A problem's prompt: `prompt_prefix`, the question and a newline, as the start model was trained;
    with `chat_template`, `prompt_prefix` and the question as the user turn after the system prompt,
    through the tokenizer's chat template with the assistant's turn opened (as the public run)."""
    system = [{"role": "system", "content": settings.system_prompt}] if settings.system_prompt else []
    if not settings.chat_template:
        return [tokenizer(settings.prompt_prefix + q + "\n", add_special_tokens=False).input_ids for q in questions]
    if tokenizer.chat_template is None:
        raise ValueError("hrpo.chat_template: the start model's tokenizer has no chat template; set chat_template: "
                         "false (the raw question) or start from an instruct model")
    return [tokenizer.apply_chat_template(system + [{"role": "user", "content": settings.prompt_prefix + q}],
                                          add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]
            for q in questions]


def completions(tokenizer, ro) -> list[str]:
    return [tokenizer.decode(row[:n], skip_special_tokens=True) for row, n in zip(ro.tokens.tolist(),
                                                                                   ro.lengths.tolist())]


def grpo_step(policy, tokenizer, opt, prompts, golds: list[str], settings: TrainHrpo, step: int) -> dict:
    """One rollout batch and its update(s); returns the step's row of the training history."""
    group, device = settings.group_size, policy.embedding_rms.device
    with autocast(device, settings.dtype):
        ro = rollout(policy, tokenizer, prompts, group, settings.max_new_tokens, settings.temperature, settings.marker,
                     seed_for(settings.seed, step))
    texts = completions(tokenizer, ro)
    gold = [g for g in golds for _ in range(group)]
    rewards = torch.tensor([grpo.reward(t, g, settings.marker) for t, g in zip(texts, gold)], device=device)
    adv = grpo.advantages(rewards, group)
    ref = None
    if settings.beta > 0:
        with torch.no_grad(), policy.lm.disable_adapter(), autocast(device, settings.dtype), \
                eager_attention_on_cpu(policy.lm):
            ref = sequence_logps(policy, prompts, ro, group, settings.score_temperature, plain=True)[0]
    mask = ro.mask
    for g in opt.param_groups:
        g["lr"] = g["base_lr"] * lr_factor(step, settings.steps, settings.lr_schedule, settings.warmup_ratio)
    for _ in range(settings.updates_per_batch):
        with autocast(device, settings.dtype), eager_attention_on_cpu(policy.lm):
            logp, _ = sequence_logps(policy, prompts, ro, group, settings.score_temperature)
            loss = grpo.loss(logp, None if settings.updates_per_batch == 1 else ro.logps, ref, adv, mask, settings.beta,
                             settings.clip)
        check_finite(loss, f"hrpo step {step + 1}", FIX)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], settings.max_grad_norm)
        opt.step()
    fed = mask & ro.thinking
    kl = math.nan if ref is None else float((grpo.k3(logp.detach(), ref) * mask).sum() / mask.sum())
    return {"step": step + 1, "reward": rewards.mean().item(),
            "accuracy": sum(is_correct(t, g) for t, g in zip(texts, gold)) / len(texts),
            "length": ro.lengths.float().mean().item(),
            "hidden_ratio": ro.hidden_ratio[fed].mean().item() if fed.any() else math.nan,
            "mixed_groups": (rewards.view(-1, group).std(1) > 0).float().mean().item(),
            "loss": loss.item(), "kl": kl}


@phase("train")
def train(policy, tokenizer, problems: pd.DataFrame, settings: TrainHrpo, checkpoint: Path,
          fingerprint: dict, curve: TrainingCurve | None = None) -> pd.DataFrame:
    """`steps` GRPO steps; a checkpoint every `checkpoint_every` steps (trainable weights, optimiser,
    history), so a killed run resumes after the last one saved. The history so far goes to `curve`
    after every step. Returns the training history."""
    opt = optimizer(policy, settings)
    first, saved = resume(checkpoint, policy, opt, fingerprint)
    history = saved.get("history", [])
    prompts_of = prompt_order(len(problems), settings.prompts_per_step, settings.steps, settings.seed)
    questions = prompt_ids(tokenizer, problems.question, settings)
    for step in tqdm(range(first, settings.steps), desc=f"{settings.policy} seed {settings.seed}", mininterval=10):
        chosen = prompts_of[step]
        prompts = left_pad([questions[i] for i in chosen], policy.embedding_rms.device)
        row = grpo_step(policy, tokenizer, opt, prompts, [problems.answer.iloc[i] for i in chosen], settings,
                        step)
        history.append(row)
        if curve is not None:
            curve.write(history)
        log.info("step %d: %s", step + 1, {k: round(v, 4) for k, v in row.items()})
        if (step + 1) % settings.checkpoint_every == 0 or step + 1 == settings.steps:
            check_finite_weights(policy, f"hrpo step {step + 1}", FIX)
            save_epoch(checkpoint, policy, opt, step, fingerprint, {"history": history})
    return pd.DataFrame(history)


@phase("decode")
@torch.no_grad()
def evaluate(policy, tokenizer, test: pd.DataFrame, settings: EvalHrpo, name: str) -> pd.DataFrame:
    """Greedy completions of every test problem (the gate on for HRPO): the answer columns, the
    completion's length in tokens and the mean sqrt(1 - a^2) where it blended."""
    rows, bs, device = [], settings.eval_batch_size, policy.embedding_rms.device
    for start in tqdm(range(0, len(test), bs), desc=f"eval {name}", mininterval=10):
        chunk = test.iloc[start:start + bs]
        prompts = left_pad(prompt_ids(tokenizer, chunk.question, settings), device)
        with autocast(device, settings.dtype):
            ro = rollout(policy, tokenizer, prompts, 1, settings.max_new_tokens, settings.temperature, settings.marker)
        fed = ro.mask & ro.thinking
        for i, text in enumerate(completions(tokenizer, ro)):
            frame = chunk.iloc[i]
            rows.append({"policy": name, "seed": settings.seed, "id": int(frame.id), **scored(text, frame.answer),
                         "markers": text.count(settings.marker), "length": int(ro.lengths[i]),
                         "hidden_ratio": ro.hidden_ratio[i][fed[i]].mean().item() if fed[i].any() else math.nan})
    return pd.DataFrame(rows)
