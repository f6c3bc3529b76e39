"""Reasoning-window pooling: a frozen LM reads a reasoning trace in which every window of W reasoning
tokens has been replaced by ONE vector, made from that window's tokens by a trainable pooler.

The pooler is a second copy of the LM's transformer (no LM head) with LoRA on its projections and its
own trainable embedding table; it reads a window and pools its last hidden states into one vector.
A problem with its first n windows compressed is laid out as

    question, <|pool-start|>, v_1 .. v_n, <|pool-end|>, the plain rest of the reasoning, ### answer, EOS

The markers wrap the whole run of vectors (as Coconut's latent markers do), so a window costs one
position; their embeddings come from the pooler's table. A ragged last window stays plain.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from soft_tokens.core.padding import pad, positions
from soft_tokens.core.training import TrainedOnly
from soft_tokens.latent.coconut.method import IGNORE, Problem

POOL_TOKENS = ("<|pool-start|>", "<|pool-end|>", "<|pool|>")
POOLINGS = ("mean", "last")


@dataclass(frozen=True)
class PoolIds:
    start: int
    end: int
    slot: int  # the placeholder a pooled vector is scattered into


@dataclass
class Example:
    """One sequence for the main LM: the question (plain tokens, never trained through: the LM is
    frozen, so its keys and values are computed once without gradient), then the rest, whose slots
    (PoolIds.slot) the pooled vectors of `windows` fill in order; `labels` supervise the rest. Each
    window has the plain text before it in `contexts` (read only by a pooler with `context`)."""

    question: list[int]
    input_ids: list[int]
    labels: list[int]
    windows: list[list[int]]
    contexts: list[list[int]]


@dataclass
class Batch:
    question_ids: torch.Tensor  # [B, Q], left-padded
    input_ids: torch.Tensor  # [B, S], the rest: right-padded for training, left-padded for prompts
    attention_mask: torch.Tensor  # [B, Q + S]
    position_ids: torch.Tensor  # [B, Q + S]
    labels: torch.Tensor  # [B, S]
    windows: torch.Tensor  # [k, W], all windows of the batch, row by row
    contexts: list[list[int]]


def add_pool_tokens(tokenizer) -> PoolIds:
    tokenizer.add_tokens(list(POOL_TOKENS), special_tokens=True)
    return PoolIds(*tokenizer.convert_tokens_to_ids(list(POOL_TOKENS)))


def reasoning_tokens(problem: Problem) -> list[int]:
    return [t for step in problem.steps for t in step]


def compressible(problem: Problem, fraction: float) -> int:
    """How many reasoning tokens may be compressed: those of the first floor(fraction * steps) steps."""
    return sum(len(step) for step in problem.steps[: int(fraction * len(problem.steps) + 1e-9)])


def full_windows(problem: Problem, window: int, fraction: float) -> int:
    """Windows of `window` tokens in the compressible part; a ragged rest stays plain."""
    if window < 1:
        raise ValueError(f"pooler.windows: a window holds at least 1 token, got {window}")
    return compressible(problem, fraction) // window


def layout(problem: Problem, window: int, n: int, ids: PoolIds, vectors: bool = True) -> Example:
    """`problem` with its first n windows compressed; labels mask markers and slots.

    n = 0 is plain chain of thought (no markers). Without `vectors` the markers stay and the windows
    are dropped: what the LM does with nothing in place of the reasoning.
    """
    reasoning = reasoning_tokens(problem)
    if n * window > len(reasoning):
        raise ValueError(f"{n} windows of {window} tokens exceed the {len(reasoning)} reasoning tokens")
    windows = [reasoning[i * window:(i + 1) * window] for i in range(n)] if vectors else []
    contexts = [problem.question + reasoning[: i * window] for i in range(len(windows))]
    head = [ids.start] + [ids.slot] * len(windows) + [ids.end] if n else []
    target = reasoning[n * window:] + problem.answer
    return Example(problem.question, head + target, [IGNORE] * len(head) + target, windows, contexts)


def answer_split(example: Example, answer: list[int], marker: list[int]) -> tuple[Example, list[int]]:
    """The layout made to answer now, with whatever reasoning it holds: the prompt, up to and including
    the answer marker's tokens (the model generates the answer after it), and the answer tokens after
    the marker. `answer` is the problem's answer tokens, which the layout ends with."""
    if answer[: len(marker)] != marker or example.input_ids[len(example.input_ids) - len(answer):] != answer:
        raise ValueError("the layout does not end with an answer that starts with the answer marker's tokens")
    cut = len(example.input_ids) - len(answer) + len(marker)
    prompt = Example(example.question, example.input_ids[:cut], [IGNORE] * cut, example.windows, example.contexts)
    return prompt, example.input_ids[cut:]


def collate(examples: list[Example], pad_left: bool = False) -> Batch:
    """Questions left-padded so they end in one column; the rest padded right (training) or left
    (prompts that are continued, so they end together). Padding is token 0 under a zero mask, and
    positions count real tokens only, so padding between question and rest changes nothing."""
    question, question_mask = pad([e.question for e in examples], left=True)
    rest, rest_mask = pad([e.input_ids for e in examples], left=pad_left)
    labels, _ = pad([e.labels for e in examples], left=pad_left, fill=IGNORE, width=rest.shape[1])
    mask = torch.cat([question_mask, rest_mask], 1)
    windows = [w for e in examples for w in e.windows]
    if len({len(w) for w in windows}) > 1:
        raise ValueError(f"a batch mixes window sizes {sorted({len(w) for w in windows})}")
    windows = torch.tensor(windows, dtype=torch.long) if windows else torch.zeros((0, 1), dtype=torch.long)
    return Batch(question, rest, mask, positions(mask), labels, windows,
                 [c for e in examples for c in e.contexts])


def to_device(batch: Batch, device) -> Batch:
    return Batch(*(x.to(device) if isinstance(x, torch.Tensor) else x for x in vars(batch).values()))


class WindowPooler(TrainedOnly):
    """Pools windows of token ids into one input embedding each: the backbone's last hidden states,
    mean over the window or its last position, times a learned scale (pooled states sit at the final
    norm's scale, far from the token embeddings' norm). With `context`, the backbone first reads the
    plain text before the window; pooling still covers the window's positions only. Its state dict
    holds the trained weights alone (LoRA, embedding table, scale)."""

    def __init__(self, backbone: nn.Module, pooling: str, log_scale: float | None, context: bool):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooler.pooling: unknown pooling '{pooling}' (one of {POOLINGS})")
        self.backbone, self.pooling, self.context = backbone, pooling, context
        self.log_scale = None if log_scale is None else nn.Parameter(torch.tensor(float(log_scale)))

    @property
    def hidden_size(self) -> int:
        return self.backbone.get_input_embeddings().weight.shape[1]

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.backbone.get_input_embeddings()(ids)

    def forward(self, windows: torch.Tensor, contexts: list[list[int]] | None = None) -> torch.Tensor:
        """[k, W] window ids (and, with `context`, k token lists before them) -> [k, d]."""
        if len(windows) == 0:
            return torch.zeros((0, self.hidden_size), device=windows.device)
        if self.context:
            rows = [list(before) + window for before, window in zip(contexts, windows.tolist())]
            ids, mask = (t.to(windows.device) for t in pad(rows, left=True))
            hidden = self.backbone(input_ids=ids, attention_mask=mask,
                                   position_ids=positions(mask)).last_hidden_state[:, -windows.shape[1]:]
        else:
            hidden = self.backbone(input_ids=windows).last_hidden_state
        pooled = hidden.mean(1) if self.pooling == "mean" else hidden[:, -1]
        return pooled if self.log_scale is None else pooled * self.log_scale.exp()


class SumPooling(nn.Module):
    """The parameter-free baseline: a window's token embeddings (the main LM's) summed and divided by
    sqrt(W), as CoLaR does; the markers are the untrained pooler's."""

    def __init__(self, table: nn.Embedding, markers: WindowPooler):
        super().__init__()
        self.table, self.markers = table, markers

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.markers.embed(ids)

    def forward(self, windows: torch.Tensor, contexts=None) -> torch.Tensor:
        return self.table(windows).sum(1) / math.sqrt(windows.shape[1])


def compose(main, pooler, input_ids: torch.Tensor, pooled: torch.Tensor, ids: PoolIds) -> torch.Tensor:
    """The main LM's input embeddings: its own table for plain tokens, the pooler's for the markers,
    and the pooled vectors scattered into the slots in order (row by row, left to right)."""
    marker = (input_ids == ids.start) | (input_ids == ids.end)
    slot = input_ids == ids.slot
    table = main.get_input_embeddings()
    x = table(input_ids.masked_fill(marker | slot, 0))
    x = torch.where(marker[..., None], pooler.embed(input_ids.masked_fill(~marker, 0)).to(x.dtype), x)
    if int(slot.sum()) != len(pooled):
        raise ValueError(f"{int(slot.sum())} slots but {len(pooled)} pooled vectors")
    return x.masked_scatter(slot[..., None].expand_as(x), pooled.to(x.dtype))


@torch.no_grad()
def read_questions(main, batch: Batch):
    """The frozen LM over the questions alone: their KV cache and the logits after each question."""
    width = batch.question_ids.shape[1]
    out = main(input_ids=batch.question_ids, attention_mask=batch.attention_mask[:, :width],
               position_ids=batch.position_ids[:, :width], use_cache=True, logits_to_keep=1)
    return out.past_key_values, out.logits[:, -1]


def crop_to(cache, width: int) -> None:
    """Drop everything past the first `width` positions of a KV cache."""
    extra = cache.get_seq_length() - width
    if extra > 0:
        cache.crop(-extra)


def forward(main, pooler, batch: Batch, ids: PoolIds, questions=None):
    """Logits predicting each token of the rest [B, S, V] (the first from the question's last position),
    the cache after the rest, and the logits after it. `questions` is read_questions' output, which
    may be reused by several layouts of the same problems (crop the cache back to the questions'
    width between them). Without a pooler, the rest is plain tokens."""
    cache, first = questions if questions is not None else read_questions(main, batch)
    if pooler is None:
        embeds = main.get_input_embeddings()(batch.input_ids)
    else:
        embeds = compose(main, pooler, batch.input_ids, pooler(batch.windows, batch.contexts), ids)
    width = batch.question_ids.shape[1]
    out = main(inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids[:, width:],
               past_key_values=cache, use_cache=True)
    return torch.cat([first[:, None].to(out.logits.dtype), out.logits[:, :-1]], 1), out.past_key_values, \
        out.logits[:, -1]


def example_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B] mean cross-entropy of each row over its supervised tokens; logits[:, j] predicts labels[:, j]."""
    ce = F.cross_entropy(logits.transpose(1, 2).float(), labels, ignore_index=IGNORE, reduction="none")
    return ce.sum(1) / (labels != IGNORE).sum(1).clamp(min=1)


def batch_loss(main, pooler, batch: Batch, ids: PoolIds) -> torch.Tensor:
    """Mean over the batch of each example's mean token CE: every example weighs the same, so a batch's
    gradient is the mean of its examples' gradients, and accumulation over equal batches is exact."""
    return example_losses(forward(main, pooler, batch, ids)[0], batch.labels).mean()
