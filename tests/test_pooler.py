"""Reasoning-window pooling: the layout and label mask by hand, where the vectors land, pooling by hand,
batched gradients = the sum of per-example ones, the question read once = one forward, memorising
three problems, online splicing = the compressed layout, batched = one at a time, clear errors, and
the report's intervals and findings."""

import copy
import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import AutoModel

from soft_tokens.latent.coconut.method import IGNORE, Problem
from soft_tokens.latent.pooler import online
from soft_tokens.latent.pooler.method import (
    PoolIds,
    WindowPooler,
    batch_loss,
    collate,
    compose,
    forward,
    full_windows,
    layout,
)
from soft_tokens.latent.pooler.report import findings, section, summarize
from soft_tokens.latent.pooler.training import (
    other_problems_windows,
    build_pooler,
    check_windows,
    init_windows,
    load_main,
    load_pooler,
    save_pooler,
    teacher_forced,
    train_pooler,
    training_examples,
)
from soft_tokens.latent.pooler.spec import EvalPooler, TrainPooler, check_pooler
from settings import ROTARY_LORA_TARGETS, lora_targets, settings

IDS = PoolIds(start=100, end=101, slot=102)
PROBLEM = Problem(question=[1, 2, 3], steps=[[10, 11, 12], [13, 14]], answer=[7, 8, 2])
M = IGNORE
SETTINGS = dict(model="tiny", dataset="copy", main="model", window="2", device="cpu", dtype="float32", seed=1,
                lora_r=8, lora_alpha=16, lora_dropout=0.0,
                lora_target_modules=ROTARY_LORA_TARGETS,
                pooling="mean", output_scale=True, context=False, init_token="<<", compress_fraction=1.0,
                max_prefixes=1, lr=1e-2, weight_decay=0.0, batch_size=3, grad_accumulation=1, epochs=10,
                eval_batch_size=3, max_new_tokens=8)
TRAIN = settings(TrainPooler, SETTINGS)
EVAL = settings(EvalPooler, SETTINGS)


def test_layout_replaces_the_first_windows_by_slots_between_markers_and_supervises_the_rest():
    # Reasoning 10 11 12 13 14; W = 2, n = 2: windows (10 11) (12 13) become two slots, 14 stays plain.
    e = layout(PROBLEM, 2, 2, IDS)
    assert e.question == [1, 2, 3]
    assert e.input_ids == [100, 102, 102, 101, 14, 7, 8, 2]
    assert e.labels == [M, M, M, M, 14, 7, 8, 2]
    assert e.windows == [[10, 11], [12, 13]]
    assert e.contexts == [[1, 2, 3], [1, 2, 3, 10, 11]]
    plain = layout(PROBLEM, 2, 0, IDS)  # n = 0: chain of thought, no markers
    assert plain.input_ids == [10, 11, 12, 13, 14, 7, 8, 2] and plain.windows == []
    dropped = layout(PROBLEM, 2, 2, IDS, vectors=False)  # markers kept, nothing between them
    assert dropped.input_ids == [100, 101, 14, 7, 8, 2] and dropped.labels == [M, M, 14, 7, 8, 2]
    assert dropped.windows == []
    # 5 tokens hold two windows of 2 (ragged 1 stays plain); compress_fraction 0.5 keeps the first step only.
    assert full_windows(PROBLEM, 2, 1.0) == 2 and full_windows(PROBLEM, 2, 0.5) == 1
    assert full_windows(PROBLEM, 4, 0.5) == 0


def test_the_latent_control_fills_each_slot_with_another_problems_windows():
    """Problem 0 has two windows, 1 has one, 2 has three: each takes the next problem's with as many or
    more (0 <- 2, 1 <- 2, 2 <- none has three: the next one's taken round); its own tokens stay."""
    a = layout(PROBLEM, 2, 2, IDS)
    b = layout(Problem([4], [[20, 21]], [9, 2]), 2, 1, IDS)
    c = layout(Problem([5], [[30, 31, 32, 33, 34, 35]], [9, 2]), 2, 3, IDS)
    swapped = other_problems_windows([a, b, c])
    assert swapped[0].windows == c.windows[:2] and swapped[0].contexts == c.contexts[:2]
    assert swapped[1].windows == c.windows[:1]
    assert swapped[2].windows == [a.windows[0], a.windows[1], a.windows[0]]
    assert all(s.input_ids == e.input_ids and s.labels == e.labels and s.question == e.question
               for s, e in zip(swapped, (a, b, c)))
    none = layout(PROBLEM, 2, 0, IDS)
    assert other_problems_windows([none, b])[0] is none  # nothing to swap without slots


class TableBackbone(nn.Module):
    """A stand-in backbone whose last hidden states are its embeddings: pooling is checked by hand."""

    def __init__(self, rows):
        super().__init__()
        self.table = nn.Embedding.from_pretrained(torch.tensor(rows, dtype=torch.float32))

    def get_input_embeddings(self):
        return self.table

    def forward(self, input_ids, **_):
        return SimpleNamespace(last_hidden_state=self.table(input_ids))


def test_mean_and_last_pooling_by_hand_and_the_scale():
    rows = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]
    windows = torch.tensor([[0, 1], [1, 2]])
    mean = WindowPooler(TableBackbone(rows), "mean", None, False)(windows)
    assert mean.shape == (2, 2) and torch.equal(mean, torch.tensor([[2.0, 3.0], [4.0, 5.0]]))
    last = WindowPooler(TableBackbone(rows), "last", math.log(2.0), False)(windows)
    assert torch.allclose(last, torch.tensor([[6.0, 8.0], [10.0, 12.0]]))
    # With `context`, the backbone reads the text before each window (left-padded to one width), and
    # pooling still covers the window alone: for this context-blind stand-in, the same vectors.
    seen = WindowPooler(TableBackbone(rows), "mean", None, True)(windows, [[2], [0, 1, 2]])
    assert torch.equal(seen, mean)
    with pytest.raises(ValueError, match="pooler.pooling: unknown pooling 'max'"):
        WindowPooler(TableBackbone(rows), "max", None, False)


def test_vectors_land_in_the_slots_in_order_and_markers_come_from_the_pooler_table(tiny):
    model, _ = tiny
    d = model.config.hidden_size
    markers = nn.Embedding(200, d)
    pooler = SimpleNamespace(embed=markers)
    batch = collate([layout(PROBLEM, 2, 2, IDS), layout(PROBLEM, 2, 1, IDS)])
    pooled = torch.arange(3 * d, dtype=torch.float32).reshape(3, d)
    x = compose(model, pooler, batch.input_ids, pooled, IDS)
    # Row 0: [start, v0, v1, end, 14, ...]; row 1: [start, v2, end, 12, ...].
    assert torch.equal(x[0, 1], pooled[0]) and torch.equal(x[0, 2], pooled[1]) and torch.equal(x[1, 1], pooled[2])
    assert torch.equal(x[0, 0], markers.weight[100]) and torch.equal(x[1, 2], markers.weight[101])
    assert torch.equal(x[1, 3], model.get_input_embeddings().weight[12])


def pooled(model_dir, train=TRAIN):
    main, tokenizer, ids = load_main(model_dir, train)
    problems = [Problem([1000 + i, 1100 + i, 1200], [[2000 + i, 2100 + i], [2200 + i, 2300 + i, 2400]],
                        [3000, 3100 + i, 2]) for i in range(3)]
    examples = [layout(p, 2, 2, ids) for p in problems]
    pooler = build_pooler(model_dir, main, tokenizer, ids, train, init_windows(examples))
    return main, tokenizer, ids, problems, examples, pooler


@pytest.fixture(scope="module")
def pooled_setup(tiny_dir):
    return pooled(tiny_dir)


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def arch_pooled_setup(request, tiny_arch):
    """The pooler on a tiny model of each paper architecture (it pools on DeepSeek-R1-Distill-Qwen there)."""
    return pooled(tiny_arch(request.param), settings(TrainPooler, SETTINGS,
                                                     lora_target_modules=lora_targets(request.param)))


def grads(pooler):
    return [p.grad.clone() for p in pooler.parameters() if p.requires_grad]


def test_a_batched_step_gives_the_mean_of_per_example_gradients(pooled_setup):
    main, _, ids, _, _, pooler = pooled_setup
    # Rows of different lengths (1 or 2 windows, questions of 3 or 4 tokens): padding must not matter.
    examples = [layout(PROBLEM, 2, 2, ids), layout(PROBLEM, 2, 1, ids),
                layout(Problem([5, 6, 7, 8], PROBLEM.steps, PROBLEM.answer), 2, 2, ids)]
    pooler.zero_grad()
    (batch_loss(main, pooler, collate(examples), ids) * len(examples)).backward()
    batched = grads(pooler)
    summed = None
    for e in examples:
        pooler.zero_grad()
        batch_loss(main, pooler, collate([e]), ids).backward()
        summed = grads(pooler) if summed is None else [a + b for a, b in zip(summed, grads(pooler))]
    pooler.zero_grad()
    assert len(batched) > 3  # LoRA, the embedding table, the scale
    for a, b in zip(batched, summed):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_reading_the_question_once_equals_one_forward_over_the_whole_sequence(arch_pooled_setup):
    main, _, ids, _, examples, pooler = arch_pooled_setup
    batch = collate(examples[:2])
    with torch.no_grad():
        logits = forward(main, pooler, batch, ids)[0]
        pooled = pooler(batch.windows)
        rest = compose(main, pooler, batch.input_ids, pooled, ids)
        whole = torch.cat([main.get_input_embeddings()(batch.question_ids), rest], 1)
        full = main(inputs_embeds=whole, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    width = batch.question_ids.shape[1]
    assert torch.allclose(logits, full[:, width - 1:-1], atol=1e-5)


def copy_task(tokenizer):
    """Three problems whose answer is the last reasoning token: without the reasoning, unknowable."""
    marker, eos = tokenizer("###", add_special_tokens=False).input_ids, tokenizer.eos_token_id
    g = torch.Generator().manual_seed(0)
    rand = lambda n: torch.randint(1000, 5000, (n,), generator=g).tolist()  # noqa: E731
    problems = []
    for _ in range(3):
        steps = [rand(2), rand(2)]
        problems.append(Problem(rand(3), steps, marker + [steps[-1][-1], eos]))
    answers = [tokenizer.decode(p.answer[len(marker):-1]) for p in problems]
    return problems, pd.DataFrame({"id": range(3), "answer": answers})


def test_the_pooler_memorises_three_problems_and_their_answers_come_from_the_vectors(tiny_dir, tmp_path):
    # The main LM first learns the three chains of thought (as `main: cot` is the CoT model), then stays frozen.
    main, tokenizer, ids = load_main(tiny_dir, TRAIN)
    problems, df = copy_task(tokenizer)
    main.requires_grad_(True)
    opt = torch.optim.AdamW(main.parameters(), lr=1e-2)
    sequences = [torch.tensor([p.question + [t for s in p.steps for t in s] + p.answer]) for p in problems]
    for _ in range(100):
        loss = sum(main(input_ids=q, labels=q).loss for q in sequences)
        opt.zero_grad()
        loss.backward()
        opt.step()
    main.requires_grad_(False)
    def accuracy(runs):
        rows = teacher_forced(main, tokenizer, ids, problems, df, runs, EVAL, "train")
        return {m: sum(r["correct"] for r in rows if r["method"] == m) for m in runs}

    assert accuracy({"full": (None, [layout(p, 1, 0, ids) for p in problems])}) == {"full": 3}
    examples = training_examples(problems, 2, TRAIN, ids)
    assert [len(e.windows) for e in examples] == [2, 2, 2]  # max_prefixes 1: the fully compressed layout
    pooler = build_pooler(tiny_dir, main, tokenizer, ids, TRAIN, init_windows(examples))
    train_pooler(main, pooler, examples * 10, ids, TRAIN, tmp_path / "checkpoint.pt", {"test": 1})
    compressed = [layout(p, 2, 2, ids) for p in problems]
    dropped = [layout(p, 2, 2, ids, vectors=False) for p in problems]
    assert accuracy({"pooler": (pooler, compressed), "dropped": (pooler, dropped)}) == {"pooler": 3, "dropped": 0}
    # Saved and loaded into a fresh pooler, the same answers; a pooler of another width is refused.
    save_pooler(pooler, tmp_path / "pooler", 2)
    fresh = build_pooler(tiny_dir, main, tokenizer, ids, TRAIN, init_windows(examples))
    loaded = load_pooler(tmp_path / "pooler", fresh, "tiny")
    assert accuracy({"pooler": (loaded, compressed)}) == {"pooler": 3}
    # The LoRA is a standard PEFT adapter: PeftModel.from_pretrained on the backbone it was made from.
    base = AutoModel.from_pretrained(tiny_dir)
    base.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    adapted = PeftModel.from_pretrained(base, tmp_path / "pooler" / "adapter")
    lora = {k: v for k, v in pooler.backbone.state_dict().items() if "lora_" in k}
    assert len(lora) > 0 and all(torch.equal(adapted.state_dict()[k].cpu(), v.cpu()) for k, v in lora.items())
    shutil.copytree(tmp_path / "pooler", tmp_path / "wide")
    meta = json.loads((tmp_path / "wide" / "meta.json").read_text())
    (tmp_path / "wide" / "meta.json").write_text(json.dumps({**meta, "hidden_size": 64}))
    with pytest.raises(ValueError, match="width 64, but the main model 'tiny' has width 32; delete .*wide so "
                                         "train_pooler retrains it"):
        load_pooler(tmp_path / "wide", fresh, "tiny")


def test_online_splicing_matches_the_compressed_layout_and_batched_equals_one_at_a_time(arch_pooled_setup):
    main, tokenizer, ids, problems, _, pooler = arch_pooled_setup
    questions = [p.question for p in problems] + [[1, 2]]
    batched = online.generate(main, pooler, questions, 2, ids, eos_id=-1, marker_ids=set(), max_new_tokens=7)
    for q, row in zip(questions, batched):
        alone = online.generate(main, pooler, [q], 2, ids, eos_id=-1, marker_ids=set(), max_new_tokens=7)[0]
        assert (alone.tokens, alone.vectors, alone.used) == (row.tokens, row.vectors, row.used)
    # 7 tokens at W = 2: three windows spliced (after tokens 2, 4 and 6), the 7th is plain.
    row = batched[0]
    assert row.vectors == 3 and row.used == 2 + 3 + 1
    # Teacher-forcing the compressed layout of what it wrote reproduces every token it wrote after a splice.
    written = Problem(questions[0], [row.tokens[:6]], [row.tokens[6]])
    e = layout(written, 2, 3, ids)
    with torch.no_grad():
        logits = forward(main, pooler, collate([e]), ids)[0]
    assert logits[0, -1].argmax().item() == row.tokens[6]
    plain = online.generate(main, None, questions[:1], 2, ids, eos_id=-1, marker_ids=set(), max_new_tokens=7,
                            compress=False)[0]
    assert plain.vectors == 0 and plain.used == 7 and plain.tokens[:2] == row.tokens[:2]


def test_reasoning_ends_at_the_answer_marker_and_the_answer_line_ends_the_row(pooled_setup):
    main, _, ids, _, _, pooler = pooled_setup
    # The random tiny LM repeats its last token; with its output table shifted by one row it counts
    # up instead (1201, 1202, ... after a question ending in 1200), so every token is distinct.
    counting = copy.deepcopy(main)
    counting.lm_head.weight = nn.Parameter(torch.roll(main.get_input_embeddings().weight.detach(), 1, 0),
                                           requires_grad=False)
    question = [[1000, 1100, 1200]]
    plain = online.generate(counting, None, question, 2, ids, eos_id=-1, marker_ids=set(), max_new_tokens=6,
                            compress=False)[0]
    assert plain.tokens == [1201, 1202, 1203, 1204, 1205, 1206]
    # 1202 is the answer marker: no window is complete before it and none is compressed after it.
    marked = online.generate(counting, pooler, question, 2, ids, eos_id=-1, marker_ids={1202}, max_new_tokens=6)[0]
    assert (marked.tokens, marked.vectors, marked.used) == (plain.tokens, 0, 6)
    # After the marker, a line end (1204) ends the row; the same token before the marker (1201) does not.
    ended = online.generate(counting, pooler, question, 2, ids, eos_id=-1, marker_ids={1202}, max_new_tokens=6,
                            line_end_ids={1204, 1201})[0]
    assert (ended.tokens, ended.used) == ([1201, 1202, 1203, 1204], 4)
    # With the marker at 1204, the first window (1201 1202) is spliced in and the model goes on from there.
    late = online.generate(counting, pooler, question, 2, ids, eos_id=-1, marker_ids={1204}, max_new_tokens=6)[0]
    assert late.tokens[:2] == [1201, 1202] and late.vectors >= 1


def test_bad_input_gets_one_clear_error():
    with pytest.raises(ValueError, match=r"pooler.windows: \[0\]: a window holds W >= 1"):
        check_pooler({"windows": [2, 0], "models": [], "datasets": []})
    with pytest.raises(ValueError, match="pooler.windows: a window holds at least 1 token"):
        full_windows(PROBLEM, 0, 1.0)
    with pytest.raises(ValueError, match="pooler.datasets is empty"):
        check_pooler({"windows": [2], "models": ["m"], "datasets": []})
    no_steps = [Problem([1], [], [2])]
    with pytest.raises(ValueError, match="'d' has no reasoning steps"):
        check_windows(no_steps, 2, 1.0, "d")
    with pytest.raises(ValueError, match=r"W = 8 is longer than every compressible trace of 'd' \(longest: 5 tokens"):
        check_windows([PROBLEM], 8, 1.0, "d")


def fake_evals(rng) -> pd.DataFrame:
    """Two W's on 60 test problems: the pooler right on 50, dropped windows on 10, the rest between."""
    rows = []
    for method, window, hits, positions in (("full", 1, 58, 17), ("none", 1, 5, 0), ("cot", 1, 45, 26),
                                            ("pooler", 2, 50, 9), ("dropped", 2, 10, 3), ("sum", 2, 30, 9),
                                            ("untrained", 2, 28, 9), ("online", 2, 40, 15)):
        for i in range(60):
            rows.append({"model": "m", "dataset": "d", "method": method, "window": window, "split": "test", "id": i,
                         "correct": i < hits, "answer_ce": np.nan if method in ("cot", "online") else
                         rng.normal(0.3 if i < hits else 2.0, 0.1),
                         "reasoning_tokens": 17 if method != "online" else 30,
                         "vectors": 8, "positions": positions})
    for i in range(20):
        rows.append({"model": "m", "dataset": "d", "method": "pooler", "window": 2, "split": "train", "id": i,
                     "correct": True, "answer_ce": 0.1, "reasoning_tokens": 17, "vectors": 8, "positions": 9})
    return pd.DataFrame(rows)


def test_the_report_gives_intervals_ratios_and_findings_from_them():
    summary = summarize(fake_evals(np.random.default_rng(0)))
    by = summary.set_index(["method", "window", "split"])
    pooler = by.loc[("pooler", 2, "test")]
    assert pooler["n"] == 60 and pooler["n_correct"] == 50
    assert pooler["accuracy_low"] < 50 / 60 < pooler["accuracy_high"]
    assert pooler["compression"] == pytest.approx(17 / 9) and pooler["positions_saved"] == pytest.approx(8)
    assert pooler["gap_kept"] == pytest.approx((50 - 5) / (58 - 5))  # of the none -> full accuracy gap
    assert pooler["gap_kept_low"] < pooler["gap_kept"] < pooler["gap_kept_high"]
    online_row = by.loc[("online", 2, "test")]
    assert online_row["context_ratio"] == pytest.approx(15 / 26)
    assert online_row["accuracy_ratio"] == pytest.approx(40 / 45)
    text = " ".join(findings(summary))
    assert "the trained pooler has higher accuracy (\\%) than dropped windows" in text
    assert "the trained pooler has lower answer CE (nats/token) than dropped windows" in text
    assert "answers 20 of its 20 training problems" in text
    assert "the trained pooler keeps 0.85 (95\\% CI" in text
    assert "is neither met nor missed at n = 60: the means miss it" in text  # 0.89 of the accuracy, 0.58 of the context
    tex = section(summary, {"main": "cot", "windows": [2], "compress_fraction": 1.0, "pooling": "mean",
                            "output_scale": True, "context": False, "lora_r": 16, "lr": 0.001, "epochs": 3,
                            "batch_size": 4, "grad_accumulation": 1, "max_prefixes": 2})
    assert "Trained pooler (train split) & 2 & 20 & " in tex and "Online compression & 2 & 60 & " in tex
    assert "Test problems per dataset: d: 60." in tex


def test_the_pooler_is_compared_with_each_method_over_the_same_problems():
    """Problems are nested in the fake evals (a method right on its first `hits`), so the pooler (50 of 60)
    against the untrained pooler (28) has 22 discordant problems, all the pooler's: McNemar's exact
    interval, 22 (2 pi - 1) / 60 with pi's Clopper-Pearson limits at 22 of 22, [0.025^(1/22), 1]."""
    summary = summarize(fake_evals(np.random.default_rng(0)))
    pooler = summary.set_index(["method", "window", "split"]).loc[("pooler", 2, "test")]
    assert (pooler["accuracy_minus_untrained"], pooler["accuracy_minus_untrained_low"],
            pooler["accuracy_minus_untrained_high"]) == pytest.approx((22 / 60, 22 * (2 * 0.025 ** (1 / 22) - 1) / 60,
                                                                       22 / 60))
    evals = fake_evals(np.random.default_rng(0))
    ce = evals[evals["method"] == "pooler"]["answer_ce"].to_numpy()[:60] - evals[evals["method"] == "sum"][
        "answer_ce"].to_numpy()
    assert pooler["answer_ce_minus_sum"] == pytest.approx(ce.mean())
    full = summary.set_index(["method", "window", "split"]).loc[("full", 1, "test")]
    assert full["accuracy_minus_none"] == pytest.approx(53 / 60)
    # At 12 of 20 against 18 of 20, nested, the marginal Wilson intervals overlap; the paired difference
    # (6 discordant problems, all one way: McNemar's p = 0.031) names it.
    few = evals[evals["id"] < 20].copy()
    few.loc[few["method"] == "sum", "correct"] = few.loc[few["method"] == "sum", "id"] < 12
    few.loc[few["method"] == "pooler", "correct"] = few.loc[few["method"] == "pooler", "id"] < 18
    text = " ".join(findings(summarize(few)))
    assert "the trained pooler has higher accuracy (\\%) than sum pooling: 90.0 (95\\% CI 69.9--97.2, n = 20)" in text
