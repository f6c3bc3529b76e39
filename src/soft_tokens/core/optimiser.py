"""Batched soft-prefix optimisation: many samples, each with its own vectors and AdamW state.

Each sample owns N trainable vectors placed before its target tokens in a frozen LM. The batch loss
is the *sum* of per-sample losses, so each sample's gradient is exactly its own; AdamW is applied
row-wise with a step count per row, so a sample that joins the batch late is optimised exactly as if
it ran alone. Finished samples leave the batch and queued ones take their place.
"""

import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from soft_tokens.core.prefix import prefix_forward
from soft_tokens.workflow import INITS

log = logging.getLogger(__name__)


@dataclass
class PrefixTask:
    key: int
    target_ids: torch.Tensor  # [L] long: the tokens the prefix must make the model produce
    weights: torch.Tensor  # [L] float: per-position loss weight, 0 = not scored
    init: torch.Tensor  # [N, d] float32: starting vectors
    target_hidden: torch.Tensor | None = None  # [L, d]: states to match at OptimSettings.hidden_layer


@dataclass
class PrefixResult:
    key: int
    vectors: torch.Tensor  # [N, d] the vectors that reached the best accuracy
    best_accuracy: float
    best_loss: float
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
    max_steps: int = 5000
    patience: int = 2000
    batch_size: int = 1
    hidden_layer: int = -1  # hidden_states index matched against PrefixTask.target_hidden
    hidden_weight: float = 0.0  # 0 = no hidden-state matching term
    hidden_loss: str = "cosine"  # cosine | mse


def init_vectors(init: str, embedding: torch.Tensor, n_mem: int, generator: torch.Generator) -> torch.Tensor:
    """Starting mem vectors: scaled Gaussian (as the cramming paper), mean embedding, or a random token's."""
    emb = embedding.detach().float().cpu()
    if init == "randn":
        return torch.randn(n_mem, emb.shape[1], generator=generator) * emb.std()
    if init == "mean":
        return emb.mean(0).expand(n_mem, -1).clone()
    if init == "token":
        return emb[torch.randint(emb.shape[0], (n_mem,), generator=generator)].clone()
    raise ValueError(f"cramming.inits: unknown init '{init}' (one of {', '.join(INITS)})")


def adamw_rows(p, g, m, v, t, s: OptimSettings) -> None:
    """torch.optim.AdamW's update, in place, with a separate step count `t[i]` for each row i."""
    b1, b2 = s.betas
    t += 1
    shape = (-1,) + (1,) * (p.dim() - 1)
    bc1 = (1 - b1 ** t.double()).float().view(shape)
    bc2 = (1 - b2 ** t.double()).float().view(shape)
    p.mul_(1 - s.lr * s.weight_decay)
    m.mul_(b1).add_(g, alpha=1 - b1)
    v.mul_(b2).addcmul_(g, g, value=1 - b2)
    denom = (v.sqrt() / bc2.sqrt()).add_(s.eps)
    p.sub_((s.lr / bc1) * m / denom)


class _Batch:
    """The rows currently being optimised, stacked; rows are added and dropped between steps."""

    ROWS = ("vec", "best_vec", "m", "v", "ids", "w", "hidden", "lengths", "t", "since", "best_acc", "best_loss")

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
            "best_acc": torch.tensor(-1.0), "best_loss": torch.tensor(math.inf),
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


def weighted_loss_and_accuracy(logits, ids, weights):
    """Per-sample weighted mean CE and accuracy over the scored (weight > 0) positions."""
    ce = F.cross_entropy(logits.transpose(1, 2), ids, reduction="none")
    loss = (ce * weights).sum(1) / weights.sum(1)
    scored = weights > 0
    correct = (logits.argmax(-1) == ids) & scored
    return loss, correct.sum(1) / scored.sum(1)


def optimise_prefixes(model, tasks: list[PrefixTask], s: OptimSettings, on_result, desc: str = "prefixes"):
    """Optimise every task's vectors; call `on_result(PrefixResult)` as each sample finishes.

    A sample stops at teacher-forced accuracy 1.0, after `patience` steps without a better accuracy,
    or at `max_steps`; a non-finite loss fails that sample alone. The best-accuracy vectors are kept.
    """
    if not tasks:
        return
    device = model.get_input_embeddings().weight.device
    n, d = tasks[0].init.shape
    queue = deque(tasks)
    hidden_dim = 0 if tasks[0].target_hidden is None else tasks[0].target_hidden.shape[1]
    batch = _Batch(n, d, max(len(t.target_ids) for t in tasks), hidden_dim, device)
    bar = tqdm(total=len(tasks), desc=desc, unit="sample", mininterval=5)
    while queue or len(batch):
        while queue and len(batch) < s.batch_size:
            batch.add(queue.popleft())
        L = int(batch.lengths.max())
        ids, w = batch.ids[:, :L], batch.w[:, :L]
        vec = batch.vec.detach().requires_grad_(True)
        out = prefix_forward(model, vec, ids, batch.lengths, [s.hidden_layer] if s.hidden_weight else [])
        loss, acc = weighted_loss_and_accuracy(out["logits"], ids, w)
        if s.hidden_weight:
            hidden = out["hidden"][s.hidden_layer]
            loss = loss + s.hidden_weight * hidden_match(hidden, batch.hidden[:, :L], (w > 0).float(), s.hidden_loss)
        finite = torch.isfinite(loss)
        torch.where(finite, loss, torch.zeros_like(loss)).sum().backward()
        with torch.no_grad():
            better = finite & (acc > batch.best_acc)
            batch.best_vec[better] = batch.vec[better]
            batch.best_acc = torch.where(better, acc, batch.best_acc)
            batch.best_loss = torch.where(better, loss.detach(), batch.best_loss)
            batch.since = torch.where(better, 0, batch.since + 1)
            adamw_rows(batch.vec, torch.nan_to_num(vec.grad), batch.m, batch.v, batch.t, s)
        for (losses, accs), l_i, a_i in zip(batch.curves, loss.tolist(), acc.tolist()):
            losses.append(l_i)
            accs.append(a_i)
        done = ~finite | (batch.best_acc >= 1.0) | (batch.since >= s.patience) | (batch.t >= s.max_steps)
        for i in done.nonzero().flatten().tolist():
            on_result(_result(batch, i, bool(finite[i]), s))
            bar.update(1)
        if bool(done.any()):
            batch.keep(~done)
        if len(batch):
            bar.set_postfix(active=len(batch), step=int(batch.t.max()), best_acc=f"{float(batch.best_acc.mean()):.3f}")
    bar.close()


def _result(batch: _Batch, i: int, finite: bool, s: OptimSettings) -> PrefixResult:
    steps = int(batch.t[i])
    if not finite:
        status, reason = "failed", f"non-finite loss at step {steps}"
    elif batch.best_acc[i] >= 1.0:
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
        steps=steps,
        status=status,
        reason=reason,
        seconds=time.perf_counter() - batch.started[i],
        loss_curve=batch.curves[i][0],
        accuracy_curve=batch.curves[i][1],
    )
