"""Coconut (chain of continuous thought): reasoning steps replaced by the model's own last hidden
states, fed back as the input embeddings of `<|latent|>` positions, learned with a stage curriculum.

Stage k replaces the first k steps by k*c latents between `<|start-latent|>` and `<|end-latent|>`;
past `max_latent_stage` every step is removed. A batch is left-padded so that its first latent sits
in one column for every row: then n latents take n+1 forward passes, each reusing the KV cache of
everything before it, in training and in batched generation alike.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from soft_tokens.core.decoding import greedy_continue
from soft_tokens.core.padding import place, positions
from soft_tokens.data.answers import answer_suffix
from soft_tokens.latent.coconut.spec import METHODS

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


def curriculum(method: str, max_latent_stage: int, longest_chain: int) -> list[int]:
    """The stages a method trains, in order. Coconut and pause continue from CoT's stage 0 through
    1..max_latent_stage, then a final stage without any step if some chain is longer than that;
    the no-curriculum ablation trains the final stage alone."""
    final = max_latent_stage + 1 if longest_chain > max_latent_stage else max_latent_stage
    if method in ("nocot", "cot"):
        return [0]
    if method == "coconut_nocurriculum":
        return [final]
    return list(range(1, final + 1))


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


def latent_forward(model, batch: Batch, feedback: bool):
    """Logits [B, L, V] and the KV cache of the whole batch.

    With feedback, pass 0 runs up to the first latent; each latent then takes the previous
    position's last-layer hidden state as its input embedding, one pass per latent; the last pass
    runs from the last latent to the end. Each pass extends the cache of the ones before it.
    """
    embeds = model.get_input_embeddings()(batch.input_ids)
    if not feedback or batch.n_latent == 0:
        out = model(inputs_embeds=embeds, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    use_cache=True)
        return out.logits, out.past_key_values
    first, width = batch.first_latent, batch.input_ids.shape[1]
    cuts = [0, *range(first, first + batch.n_latent), width]
    logits, cache, thought = [], None, None
    for a, b in zip(cuts, cuts[1:]):
        chunk = embeds[:, a:b] if thought is None else torch.cat([thought[:, None], embeds[:, a + 1:b]], 1)
        out = model(inputs_embeds=chunk, attention_mask=batch.attention_mask[:, :b],
                    position_ids=batch.position_ids[:, a:b], past_key_values=cache, use_cache=True,
                    output_hidden_states=True)
        logits.append(out.logits)
        cache, thought = out.past_key_values, out.hidden_states[-1][:, -1]
    return torch.cat(logits, 1), cache


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the supervised (unmasked) positions."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE)


@torch.no_grad()
def generate(model, prompts: list[Layout], feedback: bool, eos_id: int, max_new_tokens: int) -> list[list[int]]:
    """Latent passes over the prompts, then batched greedy decoding on the KV cache until EOS.

    Returns each row's tokens up to and including its EOS (or `max_new_tokens` of them); batched
    output equals one-at-a-time output. Prompts of one method and stage end alike, so aligned they
    end together.
    """
    batch = to_device(collate(prompts), model.device)
    if not batch.attention_mask[:, -1].all():
        raise ValueError("prompts must end in the same column once aligned: pass prompts of one method and stage")
    logits, cache = latent_forward(model, batch, feedback)
    tokens, lengths = greedy_continue(model, logits[:, -1], cache, max_new_tokens, eos_id, batch.attention_mask,
                                      batch.position_ids[:, -1])
    return [row[:n] for row, n in zip(tokens.tolist(), lengths.tolist())]
