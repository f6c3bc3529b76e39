"""Batched soft-prefix optimisation: many samples, each with its own vectors and AdamW state.

Each sample owns N trainable vectors placed before its target tokens in a frozen LM (optionally
after fixed lead tokens, e.g. BOS). The batch loss is the *sum* of per-sample losses, so each
sample's gradient is exactly its own; AdamW is applied row-wise with a step count per row (and the
learning-rate schedule follows each row's own step), so a sample that joins the batch late is
optimised exactly as if it ran alone. Finished samples leave the batch and queued ones take their
place.

A sample is done when its teacher-forced accuracy reaches `stop_accuracy` and, with `margin` > 0,
the right token beats the runner-up by at least `margin` logits at every scored position: a text
that is right only by a hair under teacher forcing can flip under a differently rounded (cached,
bf16) greedy decode.
"""

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from soft_tokens.core.phases import phase
from soft_tokens.core.prefix import prefix_forward
from soft_tokens.core.training import eager_attention_on_cpu
from soft_tokens.vocabulary import INITS

log = logging.getLogger(__name__)


@dataclass
class PrefixTask:
    key: int
    target_ids: torch.Tensor  # [L] long: the tokens the prefix must make the model produce
    weights: torch.Tensor  # [L] float: per-position loss weight, 0 = not scored
    init: torch.Tensor  # [N, d] float32: starting vectors
    target_hidden: torch.Tensor | None = None  # [L, d]: states to match at OptimSettings.hidden_layer
    lead_ids: torch.Tensor | None = None  # [P] long: fixed tokens given before the vectors (same for all tasks)


@dataclass
class PrefixResult:
    key: int
    vectors: torch.Tensor  # [N, d] the vectors that reached the best accuracy
    best_accuracy: float
    best_loss: float
    best_margin: float  # smallest (right - runner-up) logit over the scored positions of the best vectors
    steps: int
    status: str  # converged | patience | max_steps | failed
    reason: str
    seconds: float
    loss_curve: list[float] = field(default_factory=list)
    accuracy_curve: list[float] = field(default_factory=list)


@dataclass
class OptimSettings:
    lr: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.01
    eps: float = 1e-8
    schedule: str = "constant"  # constant | cosine (linear warm-up, then cosine decay to min_lr at max_steps)
    warmup_steps: int = 0
    min_lr: float = 0.0  # the cosine schedule's floor (transformers' cosine_with_min_lr)
    keep: str = "best"  # best: the vectors of the best step; last: those of the last step evaluated
    max_steps: int = 5000
    patience: int = 2000
    temperature: float = 1.0  # CE on logits / temperature: < 1 concentrates the loss on positions still wrong
    stop_accuracy: float = 1.0  # teacher-forced accuracy at which a sample counts as converged
    margin: float = 0.0  # and the logit margin every scored position must also reach
    batch_size: int = 1
    hidden_layer: int = -1  # hidden_states index matched against PrefixTask.target_hidden
    hidden_weight: float = 0.0  # 0 = no hidden-state matching term
    hidden_loss: str = "cosine"  # cosine | mse


def init_vectors(init: str, embedding: torch.Tensor, n_mem: int, generator: torch.Generator) -> torch.Tensor:
    """Starting mem vectors: Gaussian x embedding std (hidden_capacity's init), uniform on [0, 1) (compression
    horizon's `random` init, whose norm sqrt(d / 3) is far above a token embedding's), the mean embedding, or a
    random token's."""
    emb = embedding.detach().float().cpu()
    if init == "randn":
        return torch.randn(n_mem, emb.shape[1], generator=generator) * emb.std()
    if init == "uniform":
        return torch.rand(n_mem, emb.shape[1], generator=generator)
    if init == "mean":
        return emb.mean(0).expand(n_mem, -1).clone()
    if init == "token":
        return emb[torch.randint(emb.shape[0], (n_mem,), generator=generator)].clone()
    raise ValueError(f"cramming.inits: unknown init '{init}' (one of {', '.join(INITS)})")


def learning_rate(t: torch.Tensor, s: OptimSettings) -> torch.Tensor:
    """The learning rate of step `t` (1-based, per row) under the schedule: cosine is a linear warm-up,
    then lr * (r + (1 - r) * (1 + cos(pi * progress)) / 2) with r = min_lr / lr, as transformers'
    cosine_with_min_lr (r = 0: plain cosine to 0). The t-th update takes that schedule's lr after t
    steps, one step later than a transformers Trainer, whose t-th update takes the lr after t - 1."""
    t = t.double()
    if s.schedule == "constant":
        return torch.full_like(t, s.lr)
    if s.schedule != "cosine":
        raise ValueError(f"unknown learning-rate schedule '{s.schedule}' (constant or cosine)")
    warm = torch.clamp(t / max(s.warmup_steps, 1), max=1.0) if s.warmup_steps else torch.ones_like(t)
    progress = torch.clamp((t - s.warmup_steps) / max(s.max_steps - s.warmup_steps, 1), 0.0, 1.0)
    floor = s.min_lr / s.lr
    return s.lr * warm * (floor + (1 - floor) * 0.5 * (1 + torch.cos(math.pi * progress)))


def adamw_rows(p, g, m, v, t, s: OptimSettings) -> None:
    """torch.optim.AdamW's update, in place, with a separate step count `t[i]` (and so learning
    rate) for each row i."""
    b1, b2 = s.betas
    t += 1
    shape = (-1,) + (1,) * (p.dim() - 1)
    lr = learning_rate(t, s).float().view(shape)
    bc1 = (1 - b1 ** t.double()).float().view(shape)
    bc2 = (1 - b2 ** t.double()).float().view(shape)
    p.mul_(1 - lr * s.weight_decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / bc2.sqrt()).add_(s.eps)
    p.sub_((lr / bc1) * m / denom)


class _Batch:
    """The rows currently being optimised, stacked; rows are added and dropped between steps."""

    ROWS = ("vec", "best_vec", "m", "v", "ids", "w", "hidden", "lengths", "t", "since", "best_acc", "best_loss",
            "best_margin")

    def __init__(self, n_vectors: int, dim: int, max_len: int, hidden_dim: int, device):
        self.keys: list[int] = []
        self.curves: list[tuple[list, list]] = []
        self.started: list[float] = []
        self.max_len = max_len
        empty = torch.zeros(0, dtype=torch.long), torch.zeros(0), torch.zeros(0, hidden_dim)
        shapes = self._row(torch.zeros(n_vectors, dim), *empty)
        for name, value in shapes.items():
            setattr(self, name, value.to(device)[None][:0])  # zero rows of the right shape and dtype

    def _row(self, init: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor, hidden) -> dict:
        """One sample's optimiser state, its target padded to the longest target of the run."""
        pad = self.max_len - len(ids)
        # Without target states the row holds an empty [L, 0] block, not [L, d] zeros on every step.
        hidden = torch.zeros(len(ids), 0) if hidden is None else hidden.float()
        return {
            "vec": init, "best_vec": init, "m": torch.zeros_like(init), "v": torch.zeros_like(init),
            "ids": F.pad(ids, (0, pad)), "w": F.pad(weights, (0, pad)), "hidden": F.pad(hidden, (0, 0, 0, pad)),
            "lengths": torch.tensor(len(ids)),
            "t": torch.tensor(0), "since": torch.tensor(0),
            "best_acc": torch.tensor(-1.0), "best_loss": torch.tensor(math.inf), "best_margin": torch.tensor(-math.inf),
        }

    def __len__(self):
        return len(self.keys)

    def add(self, task: PrefixTask) -> None:
        self.keys.append(task.key)
        self.curves.append(([], []))
        self.started.append(time.perf_counter())
        row = self._row(task.init.float(), task.target_ids, task.weights.float(), task.target_hidden)
        for name, value in row.items():
            current = getattr(self, name)
            setattr(self, name, torch.cat([current, value.to(current.device)[None]]))

    def keep(self, mask: torch.Tensor) -> None:
        idx = mask.nonzero().flatten()
        for name in self.ROWS:
            setattr(self, name, getattr(self, name)[idx])
        keep = idx.tolist()
        self.keys = [self.keys[i] for i in keep]
        self.curves = [self.curves[i] for i in keep]
        self.started = [self.started[i] for i in keep]


def hidden_match(hidden: torch.Tensor, target: torch.Tensor, scored: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-sample mean over scored positions of (1 - cosine) or the MSE between hidden states."""
    if kind == "cosine":
        per_position = 1 - F.cosine_similarity(hidden, target, dim=-1)
    elif kind == "mse":
        per_position = (hidden - target).pow(2).mean(-1)
    else:
        raise ValueError(f"hidden loss '{kind}' is neither cosine nor mse")
    return (per_position * scored).sum(1) / scored.sum(1)


def weighted_loss_and_accuracy(logits, ids, weights, temperature: float = 1.0):
    """Per-sample weighted mean CE (of logits / temperature) and accuracy over the scored (weight > 0) positions."""
    ce = F.cross_entropy(logits.transpose(1, 2) / temperature, ids, reduction="none")
    loss = (ce * weights).sum(1) / weights.sum(1)
    scored = weights > 0
    correct = (logits.argmax(-1) == ids) & scored
    return loss, correct.sum(1) / scored.sum(1)


def logit_margins(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Right-token logit minus the best other logit, per position: > 0 exactly where argmax is right.
    From the top two logits, so no copy of the [B, L, vocab] logits is made."""
    right = logits.gather(-1, ids[..., None])[..., 0]
    top = logits.topk(2, dim=-1).values
    return right - torch.where(top[..., 0] == right, top[..., 1], top[..., 0])


def min_margin(logits: torch.Tensor, ids: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Per sample, the smallest logit margin over the scored positions."""
    return torch.where(weights > 0, logit_margins(logits, ids), math.inf).min(1).values


def reached(acc: torch.Tensor, margin: torch.Tensor, s: OptimSettings) -> torch.Tensor:
    return (acc >= s.stop_accuracy) & (margin >= s.margin if s.margin > 0 else torch.ones_like(acc, dtype=torch.bool))


@phase("train")
def optimise_prefixes(model, tasks: list[PrefixTask], s: OptimSettings, on_result, desc: str = "prefixes"):
    """Optimise every task's vectors; call `on_result(PrefixResult)` as each sample finishes.

    A sample stops when it reaches the stop criterion (`stop_accuracy`, `margin`), after `patience`
    steps without a better (accuracy, smallest margin), or at `max_steps`; a non-finite loss fails
    that sample alone. The best vectors (highest accuracy, then largest smallest margin) are kept, or
    with `keep="last"` those of the last step evaluated (whose accuracy the stop rule then reads).
    """
    if s.keep not in ("best", "last"):
        raise ValueError(f"keep must be 'best' or 'last', got '{s.keep}'")
    if not tasks:
        return
    if s.margin < 0:
        raise ValueError(f"the stop margin must be >= 0 logits, got {s.margin}")
    embed = model.get_input_embeddings()
    device = embed.weight.device
    lead_ids = tasks[0].lead_ids
    lead = None if lead_ids is None else embed(lead_ids.to(device)).detach().float()[None]
    n, d = tasks[0].init.shape
    queue = deque(tasks)
    hidden_dim = 0 if tasks[0].target_hidden is None else tasks[0].target_hidden.shape[1]
    batch = _Batch(n, d, max(len(t.target_ids) for t in tasks), hidden_dim, device)
    bar = tqdm(total=len(tasks), desc=desc, unit="sample", mininterval=5)
    shown = time.monotonic()
    while queue or len(batch):
        while queue and len(batch) < s.batch_size:
            batch.add(queue.popleft())
        L = int(batch.lengths.max())
        ids, w = batch.ids[:, :L], batch.w[:, :L]
        vec = batch.vec.detach().requires_grad_(True)
        prefix = vec if lead is None else torch.cat([lead.expand(len(batch), -1, -1), vec], dim=1)
        with eager_attention_on_cpu(model):
            out = prefix_forward(model, prefix, ids, batch.lengths, [s.hidden_layer] if s.hidden_weight else [])
        logits = out["logits"]
        loss, acc = weighted_loss_and_accuracy(logits, ids, w, s.temperature)
        if s.hidden_weight:
            hidden = out["hidden"][s.hidden_layer]
            loss = loss + s.hidden_weight * hidden_match(hidden, batch.hidden[:, :L], (w > 0).float(), s.hidden_loss)
        finite = torch.isfinite(loss)
        torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
        with torch.no_grad():
            margin = min_margin(logits, ids, w)
            better = finite & ((acc > batch.best_acc) | ((acc == batch.best_acc) & (margin > batch.best_margin))
                               | (s.keep == "last"))
            batch.best_vec[better] = batch.vec[better]
            batch.best_acc = torch.where(better, acc, batch.best_acc)
            batch.best_loss = torch.where(better, loss.detach(), batch.best_loss)
            batch.best_margin = torch.where(better, margin, batch.best_margin)
            batch.since = torch.where(better, 0, batch.since + 1)
            adamw_rows(batch.vec, torch.nan_to_num(vec.grad), batch.m, batch.v, batch.t, s)
        for (losses, accs), l_i, a_i in zip(batch.curves, loss.tolist(), acc.tolist()):
            losses.append(l_i)
            accs.append(a_i)
        converged = reached(batch.best_acc, batch.best_margin, s)
        done = ~finite | converged | (batch.since >= s.patience) | (batch.t >= s.max_steps)
        for i in done.nonzero().flatten().tolist():
            on_result(_result(batch, i, bool(finite[i]), s))
            bar.update(1)
        if bool(done.any()):
            batch.keep(~done)
        if len(batch):
            bar.set_postfix(active=len(batch), step=int(batch.t.max()), best_acc=f"{float(batch.best_acc.mean()):.3f}",
                            refresh=False)
            if time.monotonic() - shown >= bar.mininterval:  # redraw every few seconds, not every step (short logs)
                bar.refresh()
                shown = time.monotonic()
    bar.close()


def _result(batch: _Batch, i: int, finite: bool, s: OptimSettings) -> PrefixResult:
    steps = int(batch.t[i])
    if not finite:
        status, reason = "failed", f"non-finite loss at step {steps}"
    elif bool(reached(batch.best_acc[i], batch.best_margin[i], s)):
        status, reason = "converged", ""
    elif batch.since[i] >= s.patience:
        status, reason = "patience", f"no better accuracy for {s.patience} steps"
    else:
        status, reason = "max_steps", f"stopped at max_steps={s.max_steps}"
    return PrefixResult(
        key=batch.keys[i],
        vectors=batch.best_vec[i].detach().cpu().clone(),
        best_accuracy=float(batch.best_acc[i]),
        best_loss=float(batch.best_loss[i]),
        best_margin=float(batch.best_margin[i]),
        steps=steps,
        status=status,
        reason=reason,
        seconds=time.perf_counter() - batch.started[i],
        loss_curve=batch.curves[i][0],
        accuracy_curve=batch.curves[i][1],
    )


def merge_attempts(previous: PrefixResult | None, latest: PrefixResult) -> PrefixResult:
    """One result for a sample optimised more than once: the better attempt's vectors and scores,
    the latest attempt's status, every attempt's steps, time and curve points."""
    if previous is None:
        return latest
    better = latest if (latest.best_accuracy, latest.best_margin) > (previous.best_accuracy, previous.best_margin) \
        else previous
    return replace(
        latest, vectors=better.vectors, best_accuracy=better.best_accuracy, best_loss=better.best_loss,
        best_margin=better.best_margin, steps=previous.steps + latest.steps, seconds=previous.seconds + latest.seconds,
        loss_curve=previous.loss_curve + latest.loss_curve, accuracy_curve=previous.accuracy_curve + latest.accuracy_curve,
    )


def optimise_with_restarts(model, tasks: list[PrefixTask], s: OptimSettings, restarts: int, restart_from, on_result,
                           desc: str = "prefixes"):
    """optimise_prefixes, restarting each sample that ends without converging (and without failing)
    from the vectors `restart_from(key, attempt, best_so_far)` gives (a fresh draw, or the best
    vectors so far for a warm restart), at most `restarts` times, with the schedule started over: a
    text stuck on a plateau usually converges from another start within the same budget. Each
    sample's result merges its attempts (merge_attempts); batched equals unbatched, attempt by attempt."""
    earlier: dict[int, PrefixResult] = {}
    pending = list(tasks)
    for attempt in range(restarts + 1):
        stuck = []

        def collect(result: PrefixResult, attempt=attempt) -> None:
            merged = merge_attempts(earlier.pop(result.key, None), result)
            if result.status in ("converged", "failed") or attempt == restarts:
                on_result(merged)
            else:
                earlier[result.key] = merged
                stuck.append(result.key)

        optimise_prefixes(model, pending, s, collect, desc if attempt == 0 else f"{desc} (restart {attempt})")
        by_key = {t.key: t for t in pending}
        pending = [replace(by_key[key], init=restart_from(key, attempt + 1, earlier[key])) for key in stuck]
        if not pending:
            return
