"""Building, training and evaluating the window pooler for one model x dataset x window size W.

The main LM is frozen; the pooler (LoRA on a copy of its transformer, plus that copy's embedding
table and an output scale) is trained on next-token CE of what follows the compressed part. Training
examples follow the public recipe: from each trace, one example per prefix length n (the first n
windows compressed, the rest plain), subsampled to `max_prefixes` per trace, the full one always kept.
"""

import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm
from transformers import AutoModel

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.decoding import greedy_continue
from soft_tokens.core.models import load_model
from soft_tokens.core.phases import phase
from soft_tokens.core.seeding import seed_for
from soft_tokens.core.training import (autocast, casts_once, eager_attention_on_cpu, epoch_order, load_trained,
                                       read_meta, save_trained, train_epochs, with_lora)
from soft_tokens.data.answers import scored
from soft_tokens.data.reasoning import read_reasoning
from soft_tokens.latent.coconut.method import IGNORE, Problem, tokenize_frame
from soft_tokens.latent.pooler import online
from soft_tokens.latent.pooler.spec import BuildPooler, EvalPooler, EvalPoolerBaselines, PoolerJob, TrainPooler
from soft_tokens.latent.pooler.method import (
    Batch,
    Example,
    PoolIds,
    SumPooling,
    WindowPooler,
    add_pool_tokens,
    answer_split,
    batch_loss,
    collate,
    crop_to,
    example_losses,
    forward,
    full_windows,
    layout,
    read_questions,
    reasoning_tokens,
    to_device,
)

log = logging.getLogger(__name__)
ANSWER_MARKER = "###"


def load_main(path: Path, settings: PoolerJob):
    """The frozen main LM in float32 weights (`pooler.dtype` is an autocast, as the CoT model trained under
    one), its tokenizer with the pool tokens added (the LM's own table never sees them: their embeddings
    are the pooler's), and their ids."""
    main, tokenizer = load_model(path, settings.device, "float32")
    return main, tokenizer, add_pool_tokens(tokenizer)


def setup(main_run: Path, train_path: Path, settings: BuildPooler):
    """What every pooler job starts from: the frozen main LM (a Coconut CoT run's stage 0 with `main:
    cot`, else the prepared model), its tokenizer and pool-token ids, the training examples at W and
    a freshly built (untrained) pooler."""
    folder = main_dir(main_run, settings)
    main, tokenizer, ids = load_main(folder, settings)
    problems = tokenize_frame(tokenizer, read_reasoning(train_path))
    window = int(settings.window)
    check_windows(problems, window, settings.compress_fraction, settings.dataset)
    examples = training_examples(problems, window, settings, ids)
    pooler = build_pooler(folder, main, tokenizer, ids, settings, init_windows(examples))
    return main, tokenizer, ids, examples, pooler


def main_dir(main_run: Path, settings: PoolerJob) -> Path:
    """The main LM's folder: a Coconut CoT run's stage 0 (`main: cot`) or the prepared model."""
    return main_run / "stage0" if settings.main == "cot" else main_run


def check_windows(problems: list[Problem], window: int, fraction: float, dataset: str) -> None:
    """A dataset must have steps, and at least one trace a full window to compress."""
    if not any(p.steps for p in problems):
        raise ValueError(f"pooler.datasets: '{dataset}' has no reasoning steps; the pooler compresses steps, so "
                         f"point reasoning.{dataset} at data with worked solutions")
    longest = max(full_windows(p, 1, fraction) for p in problems)
    if longest < window:
        raise ValueError(f"pooler.windows: W = {window} is longer than every compressible trace of '{dataset}' "
                         f"(longest: {longest} tokens at compress_fraction {fraction}); use W <= {longest}")


def training_examples(problems: list[Problem], window: int, settings: BuildPooler, ids: PoolIds) -> list[Example]:
    """Every trace with a window to compress gives its fully compressed layout and up to
    max_prefixes - 1 shorter prefixes, drawn per trace."""
    examples = []
    for i, problem in enumerate(problems):
        n = full_windows(problem, window, settings.compress_fraction)
        if n == 0:
            continue
        shorter = np.arange(1, n)
        if len(shorter) >= settings.max_prefixes:
            rng = np.random.default_rng(seed_for(settings.seed, window, i))
            shorter = np.sort(rng.choice(shorter, size=settings.max_prefixes - 1, replace=False))
        examples += [layout(problem, window, int(k), ids) for k in [*shorter, n]]
    return examples


def build_pooler(main_dir: Path, main, tokenizer, ids: PoolIds, settings: BuildPooler,
                 init_windows: torch.Tensor) -> WindowPooler:
    """A copy of the main LM's transformer with a fresh LoRA, its embedding table trainable (the
    pool tokens start as copies of `init_token`'s row), and, with `output_scale`, a learned scale
    that starts where pooled windows of the training data match the token embeddings' RMS."""
    torch.manual_seed(settings.seed)
    backbone = AutoModel.from_pretrained(main_dir, dtype=torch.float32).to(main.device)
    backbone.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    init = tokenizer(settings.init_token, add_special_tokens=False).input_ids[0]
    table = backbone.get_input_embeddings().weight
    with torch.no_grad():
        table[[ids.start, ids.end, ids.slot]] = table[init].clone()
    backbone = with_lora(backbone, settings)
    backbone.get_input_embeddings().weight.requires_grad_(True)
    pooler = WindowPooler(backbone, settings.pooling, None, settings.context)
    if settings.output_scale:
        with torch.no_grad():
            rms = lambda x: x.float().pow(2).mean(-1).sqrt().mean()  # noqa: E731
            contexts = [[] for _ in init_windows]
            pooled = pooler(init_windows.to(main.device), contexts)
            pooler.log_scale = torch.nn.Parameter(
                torch.log(rms(main.get_input_embeddings().weight) / rms(pooled)).to(main.device))
    return pooler


def init_windows(examples: list[Example], limit: int = 64) -> torch.Tensor:
    """The first windows of the training examples, which set the output scale's starting value."""
    return torch.tensor([w for e in examples for w in e.windows][:limit], dtype=torch.long)


@phase("train")
def train_pooler(main, pooler: WindowPooler, examples: list[Example], ids: PoolIds, settings: TrainPooler,
                 checkpoint: Path, fingerprint: dict, curve: TrainingCurve | None = None) -> WindowPooler:
    """AdamW over the pooler's trained weights, `batch_size` examples a batch and `grad_accumulation`
    batches a step; each epoch checkpointed, so a killed run resumes."""
    params = [p for p in pooler.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    pooler.train()

    def batches(epoch):
        order = epoch_order(len(examples), settings.seed, epoch).tolist()
        for start in range(0, len(order), settings.batch_size):
            yield to_device(collate([examples[i] for i in order[start:start + settings.batch_size]]), main.device)

    def loss_of(batch):
        with autocast(main.device, settings.dtype), eager_attention_on_cpu(main, pooler.backbone):
            return batch_loss(main, pooler, batch, ids), len(batch.input_ids)

    train_epochs(pooler, opt, loss_of, batches, settings.epochs, checkpoint, fingerprint, "pooler",
                 "lower pooler.lr, or set dtype: float32", accumulation=settings.grad_accumulation, curve=curve)
    return pooler.eval()


@phase("save")
def save_pooler(pooler: WindowPooler, folder: Path, window: int) -> None:
    """The backbone's LoRA as a PEFT adapter (folder/adapter), the trained embedding table and scale
    beside it (core.training.save_trained)."""
    save_trained(pooler, pooler.backbone, folder, {"hidden_size": pooler.hidden_size, "window": window})


def load_pooler(folder: Path, pooler: WindowPooler, main_name: str) -> WindowPooler:
    """Trained weights into a freshly built pooler; a pooler of another model width is refused."""
    fix = f"delete {folder} so train_pooler retrains it"
    saved = read_meta(folder)
    if saved["hidden_size"] != pooler.hidden_size:
        raise ValueError(f"{folder}: pooler trained for a model of width {saved['hidden_size']}, but the main model "
                         f"'{main_name}' has width {pooler.hidden_size}; {fix}")
    return load_trained(folder, pooler, pooler.backbone, fix).eval()


def answer_line(text: str) -> str:
    """The text up to the end of the first line holding the answer marker: the answer is that line,
    whatever the model writes after it (it may start reasoning again, or answer twice)."""
    at = text.find("#")
    if at < 0:
        return text
    end = text.find("\n", at)
    return text if end < 0 else text[:end]


def answer_marker(tokenizer) -> list[int]:
    return tokenizer(ANSWER_MARKER, add_special_tokens=False).input_ids


@phase("forward")
@torch.no_grad()
def teacher_forced(main, tokenizer, ids: PoolIds, problems: list[Problem], df: pd.DataFrame, runs: dict,
                   settings: EvalPooler | EvalPoolerBaselines, split: str) -> list[dict]:
    """Per method of `runs` (method -> (pooler or None, one layout per problem)): the greedy answer and
    the answer's CE after the layout, the model made to answer at its marker. Each batch of questions
    is read once and its cache shared by every method."""
    marker, rows, bs = answer_marker(tokenizer), [], settings.eval_batch_size
    for start in tqdm(range(0, len(problems), bs), desc=f"teacher-forced {split}", mininterval=10):
        chunk, questions = problems[start:start + bs], None
        for method, (pooler, examples) in runs.items():
            split_up = [answer_split(e, p.answer, marker) for e, p in zip(examples[start:start + bs], chunk)]
            prompts = to_device(collate([prompt for prompt, _ in split_up], pad_left=True), main.device)
            with autocast(main.device, settings.dtype), casts_once(main, pooler):
                if questions is None:
                    questions, width = read_questions(main, prompts), prompts.question_ids.shape[1]
                _, cache, last = forward(main, pooler, prompts, ids, questions)
                ce = answer_ce(main, cache, last, prompts, [answer for _, answer in split_up])
                crop_to(cache, prompts.attention_mask.shape[1])
                # An answer longer than the gold one by more than a few tokens is wrong: stop there.
                longest = max(len(answer) for _, answer in split_up) + 4
                tokens, lengths = greedy_continue(main, last, cache, longest, tokenizer.eos_token_id,
                                                  prompts.attention_mask, prompts.position_ids[:, -1])
                crop_to(cache, width)
            for i, (row, n) in enumerate(zip(tokens.tolist(), lengths.tolist())):
                problem, example, frame = chunk[i], examples[start + i], df.iloc[start + i]
                text = answer_line(tokenizer.decode(marker + row[:n], skip_special_tokens=True))
                rows.append({"method": method, "split": split, "id": int(frame.id), **scored(text, frame.answer),
                             "answer_ce": float(ce[i]),
                             "reasoning_tokens": len(reasoning_tokens(problem)), "vectors": len(example.windows),
                             "positions": len(example.input_ids) - len(problem.answer)})
    return rows


def answer_ce(main, cache, last: torch.Tensor, prompts: Batch, answers: list[list[int]]) -> torch.Tensor:
    """[B] mean CE of each answer, teacher-forced after its prompt (already in `cache`, giving `last`)."""
    width = max(len(a) for a in answers)
    ids = torch.zeros((len(answers), width), dtype=torch.long, device=last.device)
    labels = torch.full_like(ids, IGNORE)
    for i, a in enumerate(answers):
        ids[i, :len(a)] = labels[i, :len(a)] = torch.tensor(a, device=last.device)
    mask = torch.cat([prompts.attention_mask, (labels != IGNORE).long()], 1)
    positions = prompts.position_ids[:, -1:] + torch.arange(1, width + 1, device=last.device)
    out = main(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return example_losses(torch.cat([last[:, None].to(out.logits.dtype), out.logits[:, :-1]], 1), labels)


@torch.no_grad()
def generated(main, pooler, tokenizer, ids: PoolIds, problems: list[Problem], df: pd.DataFrame, window: int,
              settings: EvalPooler | EvalPoolerBaselines, method: str) -> list[dict]:
    """The model's own reasoning and answer; with a pooler, each completed window spliced in as a vector.
    Generation ends at EOS or at the end of the answer line; `reasoning_tokens` counts what it wrote
    (reasoning and answer), `positions` what the context holds."""
    pieces = [tokenizer.decode([i]) for i in range(len(tokenizer))]
    markers = {i for i, piece in enumerate(pieces) if "#" in piece}
    line_ends = {i for i, piece in enumerate(pieces) if "\n" in piece}
    rows, bs = [], settings.eval_batch_size
    for start in tqdm(range(0, len(problems), bs), desc=f"online W={window}", mininterval=10):
        chunk = problems[start:start + bs]
        with autocast(main.device, settings.dtype), casts_once(main, pooler):
            states = online.generate(main, pooler, [p.question for p in chunk], window, ids, tokenizer.eos_token_id,
                                     markers, settings.max_new_tokens, compress=pooler is not None,
                                     line_end_ids=line_ends)
        for i, state in enumerate(states):
            frame = df.iloc[start + i]
            text = answer_line(tokenizer.decode(state.tokens, skip_special_tokens=True))
            rows.append({"method": method, "split": "test", "id": int(frame.id), **scored(text, frame.answer),
                         "answer_ce": math.nan, "reasoning_tokens": len(state.tokens), "vectors": state.vectors,
                         "positions": state.used})
    return rows


def other_problems_windows(examples: list[Example]) -> list[Example]:
    """The latent control: each layout with the windows (and their contexts) of the next problem that has
    as many or more, its first ones, so that every slot holds a vector pooled from another problem's
    reasoning (where no other problem has enough, the next one's windows taken round)."""
    out = []
    for i, e in enumerate(examples):
        k, order = len(e.windows), [examples[(i + j) % len(examples)] for j in range(1, len(examples))]
        donor = next((d for d in order if len(d.windows) >= k), next((d for d in order if d.windows), None))
        if not k or donor is None:
            out.append(e)
            continue
        picks = [m % len(donor.windows) for m in range(k)]
        out.append(Example(e.question, e.input_ids, e.labels, [donor.windows[m] for m in picks],
                           [donor.contexts[m] for m in picks]))
    return out


def evaluate_window(main, tokenizer, ids: PoolIds, trained: WindowPooler, untrained: WindowPooler,
                    splits: dict[str, pd.DataFrame], settings: EvalPooler) -> pd.DataFrame:
    """Every method at one W: the trained pooler (test and train), the untrained one, sum pooling,
    windows dropped (markers kept) and the trained pooler fed another problem's windows (the latent
    control), all on the gold reasoning; and online compression (test)."""
    rows, window = [], int(settings.window)
    summed = SumPooling(main.get_input_embeddings(), untrained)
    for split, df in splits.items():
        problems = tokenize_frame(tokenizer, df)
        n = [full_windows(p, window, settings.compress_fraction) for p in problems]
        compressed = [layout(p, window, k, ids) for p, k in zip(problems, n)]
        runs = {"pooler": (trained, compressed)}
        if split == "test":
            runs.update({"untrained": (untrained, compressed), "sum": (summed, compressed),
                         "dropped": (trained, [layout(p, window, k, ids, vectors=False) for p, k in zip(problems, n)]),
                         "other": (trained, other_problems_windows(compressed))})
        rows += teacher_forced(main, tokenizer, ids, problems, df, runs, settings, split)
        if split == "test":
            rows += generated(main, trained, tokenizer, ids, problems, df, window, settings, "online")
    return pd.DataFrame(rows).assign(window=window)


def evaluate_baselines(main, tokenizer, ids: PoolIds, test: pd.DataFrame,
                       settings: EvalPoolerBaselines) -> pd.DataFrame:
    """The methods without a pooler: full gold reasoning, no reasoning (question, then the answer
    marker), and plain chain of thought the model writes itself (the online baseline)."""
    problems = tokenize_frame(tokenizer, test)
    runs = {"full": (None, [layout(p, 1, 0, ids) for p in problems]),
            "none": (None, [layout(Problem(p.question, [], p.answer), 1, 0, ids) for p in problems])}
    rows = teacher_forced(main, tokenizer, ids, problems, test, runs, settings, "test")
    rows += generated(main, None, tokenizer, ids, problems, test, 1, settings, "cot")
    return pd.DataFrame(rows).assign(window=1)
