"""Coconut (chain of continuous thought): reasoning steps replaced by the model's own last hidden
states, fed back as the input embeddings of `<|latent|>` positions, learned with a stage curriculum.

Stage k replaces the first k steps by k*c latents between `<|start-latent|>` and `<|end-latent|>`;
past `max_latent_stage` every step is removed and the latents stay at max_latent_stage * c (the
reference's `pad_latent_to_max: True`, set in every one of its configs). A batch is left-padded so
that its first latent sits in one column for every row: then n latents take n+1 forward passes,
each reusing the KV cache of everything before it, in training and in batched generation alike.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from soft_tokens.core.decoding import greedy_continue
from soft_tokens.core.padding import place, positions
from soft_tokens.core.phases import phase
from soft_tokens.data.answers import answer_suffix
from soft_tokens.latent.coconut.spec import CONTROLS, METHODS

LATENT_TOKENS = ("<|start-latent|>", "<|end-latent|>", "<|latent|>")
# Methods whose latent positions take the previous hidden state; pause tokens keep their own embedding.
FEEDBACK = ("coconut", "coconut_nocurriculum")
IGNORE = -100


@dataclass(frozen=True)
class LatentIds:
    start: int
    end: int
    latent: int


@dataclass
class Problem:
    """A tokenised problem: question (ends in a newline), steps (each ends in one), answer (+ EOS)."""

    question: list[int]
    steps: list[list[int]]
    answer: list[int]


@dataclass
class Layout:
    """One training sequence or prompt; `first_latent` is the column the batch aligns on."""

    input_ids: list[int]
    labels: list[int]
    first_latent: int
    n_latent: int


@dataclass
class Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor
    first_latent: int
    n_latent: int


def add_latent_tokens(model, tokenizer, init_text: str) -> LatentIds:
    """Add the three special tokens; their embeddings start as copies of `init_text`'s first token."""
    init = tokenizer(init_text, add_special_tokens=False).input_ids[0]
    tokenizer.add_tokens(list(LATENT_TOKENS), special_tokens=True)
    ids = latent_ids(tokenizer)
    model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    with torch.no_grad():
        for table in {model.get_input_embeddings().weight, model.get_output_embeddings().weight}:
            table[[ids.start, ids.end, ids.latent]] = table[init].clone()
    return ids


def latent_ids(tokenizer) -> LatentIds:
    ids = tokenizer.convert_tokens_to_ids(list(LATENT_TOKENS))
    if tokenizer.unk_token_id in ids or None in ids:
        raise ValueError(f"tokenizer lacks the latent tokens {LATENT_TOKENS}: load a model made by train_coconut")
    return LatentIds(*ids)


def tokenize_problem(tokenizer, question: str, steps: list[str], answer: str) -> Problem:
    encode = lambda text: tokenizer(text, add_special_tokens=False).input_ids  # noqa: E731
    return Problem(encode(question + "\n"), [encode(step + "\n") for step in steps],
                   encode(answer_suffix(answer)) + [tokenizer.eos_token_id])


def tokenize_frame(tokenizer, df) -> list[Problem]:
    """Every problem of a reasoning data frame (soft_tokens.data.reasoning's schema), tokenised."""
    return [tokenize_problem(tokenizer, r.question, list(r.steps), r.answer) for r in df.itertuples()]


def n_latents(stage: int, c: int, max_latent_stage: int) -> int:
    """Latents at `stage`: c per removed step, and max_latent_stage * c once every step is gone."""
    if c < 1:
        raise ValueError(f"coconut c_thought must be >= 1, got {c}")
    return min(stage, max_latent_stage) * c


def layout(problem: Problem, method: str, stage: int, c: int, max_latent_stage: int, ids: LatentIds,
           prompt_only: bool = False) -> Layout:
    """The token sequence of `problem` for `method` at `stage`; labels mask question and latents.

    nocot: question, answer. cot (stage 0): question, steps, answer. Latent methods at stage k >= 1:
    question, start, latents, end, the steps not yet removed, answer. With `prompt_only`, everything
    the model is given before it generates: the question and, for latent methods, the latents.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method '{method}' (one of {METHODS})")
    n_latent = 0
    if method == "nocot":
        prefix, body = problem.question, []
    elif method == "cot" or stage == 0:
        prefix, body = problem.question, [t for step in problem.steps for t in step]
    else:
        n_latent = n_latents(stage, c, max_latent_stage)
        prefix = problem.question + [ids.start] + [ids.latent] * n_latent + [ids.end]
        kept = [] if stage > max_latent_stage else problem.steps[stage:]
        body = [t for step in kept for t in step]
    first_latent = len(problem.question) + (1 if n_latent else 0)
    if prompt_only:
        return Layout(prefix, [IGNORE] * len(prefix), first_latent, n_latent)
    target = body + problem.answer
    return Layout(prefix + target, [IGNORE] * len(prefix) + target, first_latent, n_latent)


def final_stage(max_latent_stage: int, longest_chain: int) -> int:
    """The stage from which every step is gone: max_latent_stage, or one more if a chain is longer."""
    return max_latent_stage + 1 if longest_chain > max_latent_stage else max_latent_stage


def schedule(method: str, from_cot: bool, num_epochs: int, epochs_per_stage: int, max_latent_stage: int,
             longest_chain: int) -> list[tuple[int, int]]:
    """(stage, epochs) in training order: the reference's schedule (facebookresearch/coconut run.py).

    Epoch e trains stage e // epochs_per_stage, capped at the final stage, so the final stage trains
    every remaining epoch; CoT and no-CoT train stage 0 throughout, the no-curriculum ablation the
    final stage throughout. A run that starts from the CoT model skips its first epochs_per_stage
    epochs (stage 0), as the reference's GSM8k run resumes at epoch 3 from the CoT checkpoint.
    """
    final = final_stage(max_latent_stage, longest_chain)
    first = epochs_per_stage if from_cot else 0
    stages = []
    for epoch in range(first, num_epochs):
        stage = {"nocot": 0, "cot": 0, "coconut_nocurriculum": final}.get(method, min(epoch // epochs_per_stage, final))
        if stages and stages[-1][0] == stage:
            stages[-1] = (stage, stages[-1][1] + 1)
        else:
            stages.append((stage, 1))
    if not stages or (method in ("coconut", "pause") and stages[-1][0] != final):
        raise ValueError(f"coconut.num_epochs = {num_epochs} does not reach {method}'s last stage ({final}: "
                         f"{epochs_per_stage} epochs per stage{', after the CoT start' if from_cot else ''}); raise "
                         "num_epochs or lower epochs_per_stage / max_latent_stage")
    return stages


def uniform_stage(rng, n_steps: int, stage: int, uniform_prob: float) -> int:
    """A sample's stage for one epoch: with probability uniform_prob one of 0..n_steps drawn uniformly
    (the reference's `uniform_prob`, drawn per sample per epoch), otherwise the scheduled stage."""
    return int(rng.integers(n_steps + 1)) if uniform_prob and rng.random() < uniform_prob else stage


def collate(layouts: list[Layout]) -> Batch:
    """Left-pad every row so the first latents share a column, then right-pad to one length.

    Padding is token 0 under a zero attention mask: no real position ever attends to it."""
    n_latent = {lay.n_latent for lay in layouts}
    if len(n_latent) != 1:
        raise ValueError(f"a batch mixes latent counts {sorted(n_latent)}; batch one stage at a time")
    align = max(lay.first_latent for lay in layouts)
    width = max(align - lay.first_latent + len(lay.input_ids) for lay in layouts)
    starts = [align - lay.first_latent for lay in layouts]
    ids, mask = place([lay.input_ids for lay in layouts], starts, width)
    labels, _ = place([lay.labels for lay in layouts], starts, width, fill=IGNORE)
    return Batch(ids, mask, positions(mask), labels, align, n_latent.pop())


def to_device(batch: Batch, device) -> Batch:
    return Batch(batch.input_ids.to(device), batch.attention_mask.to(device), batch.position_ids.to(device),
                 batch.labels.to(device), batch.first_latent, batch.n_latent)


def latent_forward(model, batch: Batch, feedback: bool, thoughts: torch.Tensor | None = None, logits_from: int = 0):
    """Logits of columns logits_from.. [B, L - logits_from, V], the KV cache of the whole batch and the
    vectors at the latent positions [B, n, H].

    With feedback, pass 0 runs up to the first latent; each latent then takes the previous
    position's last-layer hidden state as its input embedding, one pass per latent; the last pass
    runs from the last latent to the end. Each pass extends the cache of the ones before it. Given
    `thoughts`, the latent positions take them instead, in one pass (the latent controls). Logits
    are computed only from `logits_from` on (the vocabulary projection of a long question that no
    loss reads costs as much as the rest of a small model's step).
    """
    embeds = model.get_input_embeddings()(batch.input_ids)
    first, n, width = batch.first_latent, batch.n_latent, batch.input_ids.shape[1]
    if thoughts is not None:
        embeds = torch.cat([embeds[:, :first], thoughts.to(embeds.dtype), embeds[:, first + n:]], 1)
    if thoughts is not None or not feedback or n == 0:
        out = model(inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=True, logits_to_keep=width - logits_from)
        return out.logits, out.past_key_values, embeds[:, first:first + n]
    cuts = [0, *range(first, first + n), width]
    logits, cache, thought, fed = [], None, None, []
    for a, b in zip(cuts, cuts[1:]):
        chunk = embeds[:, a:b] if thought is None else torch.cat([thought[:, None], embeds[:, a + 1:b]], 1)
        if thought is not None:
            fed.append(thought)
        keep = b - max(a, logits_from)
        out = model(inputs_embeds=chunk, attention_mask=batch.attention_mask[:, :b],
                    position_ids=batch.position_ids[:, a:b], past_key_values=cache, use_cache=True,
                    output_hidden_states=True, logits_to_keep=max(keep, 1))
        if keep > 0:
            logits.append(out.logits)
        cache, thought = out.past_key_values, out.hidden_states[-1][:, -1]
    return torch.cat(logits, 1), cache, torch.stack(fed, 1)


def supervised_from(labels: torch.Tensor) -> int:
    """The first column whose logits a loss reads: one before the first supervised label of any row."""
    return max(int((labels != IGNORE).any(0).nonzero()[0]) - 1, 0)


def batch_loss(model, batch: Batch, feedback: bool) -> torch.Tensor:
    """The batch's mean next-token cross-entropy, logits computed where the labels are."""
    start = supervised_from(batch.labels)
    return lm_loss(latent_forward(model, batch, feedback, logits_from=start)[0], batch.labels[:, start:])


def controlled(thoughts: torch.Tensor, control: str, generator: torch.Generator) -> torch.Tensor:
    """What a latent control feeds in place of the thoughts [N, n, H] of N problems: `zeros`; `random`,
    Gaussian directions scaled to each thought's norm; `other`, the thoughts of the next problem."""
    if control == "zeros":
        return torch.zeros_like(thoughts)
    if control == "random":
        noise = torch.randn(thoughts.shape, generator=generator).to(thoughts)
        return noise * thoughts.norm(dim=-1, keepdim=True) / noise.norm(dim=-1, keepdim=True)
    if control == "other":
        if len(thoughts) < 2:
            raise ValueError("the `other` latent control needs at least two test problems")
        return thoughts.roll(1, dims=0)
    raise ValueError(f"coconut.controls: unknown control '{control}' (one of {', '.join(CONTROLS)})")


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised (unmasked) positions."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


@phase("decode")
@torch.no_grad()
def generate(model, prompts: list[Layout], feedback: bool, eos_id: int, max_new_tokens: int,
             thoughts: torch.Tensor | None = None) -> list[list[int]]:
    """Latent passes over the prompts, then batched greedy decoding on the KV cache until EOS.

    Returns each row's tokens up to and including its EOS (or `max_new_tokens` of them); batched
    output equals one-at-a-time output. Prompts of one method and stage end alike, so aligned they
    end together. Given `thoughts` [B, n, H], the latent positions take them (latent_forward).
    """
    batch = to_device(collate(prompts), model.device)
    if not batch.attention_mask[:, -1].all():
        raise ValueError("prompts must end in the same column once aligned: pass prompts of one method and stage")
    logits, cache, _ = latent_forward(model, batch, feedback, thoughts, logits_from=batch.input_ids.shape[1] - 1)
    tokens, lengths = greedy_continue(model, logits[:, -1], cache, max_new_tokens, eos_id, batch.attention_mask,
                                      batch.position_ids[:, -1])
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]


@phase("forward")
@torch.no_grad()
def thoughts_of(model, prompts: list[Layout], feedback: bool) -> torch.Tensor:
    """The vectors the latent positions of the prompts take [B, n, H]: the fed-back hidden states with
    feedback, the latent token's embedding without."""
    batch = to_device(collate(prompts), model.device)
    return latent_forward(model, batch, feedback, logits_from=batch.input_ids.shape[1] - 1)[2]
