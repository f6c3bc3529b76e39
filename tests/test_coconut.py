"""Coconut: curriculum layouts by hand, cached multi-pass forward = full recomputation, batched
generation = one at a time, stage checkpoints that a rerun resumes from, and the report: intervals
on every number, findings that name only separated differences, the mean and sd across seeds."""

import copy
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer

from soft_tokens.core.models import load_model
from soft_tokens.data.reasoning import prosqa_problem
from soft_tokens.latent.coconut.method import (
    IGNORE,
    LatentIds,
    Layout,
    Problem,
    add_latent_tokens,
    batch_loss,
    collate,
    controlled,
    generate,
    latent_forward,
    latent_ids,
    layout,
    lm_loss,
    n_latents,
    schedule,
    supervised_from,
    thoughts_of,
    tokenize_problem,
    uniform_stage,
)
from soft_tokens.latent.coconut.history import finished_stages, stage_curve
from soft_tokens.latent.coconut.report import figures, findings, section, summarize
from soft_tokens.latent.coconut.spec import EvalCoconut, TrainCoconut
from soft_tokens.latent.coconut.training import (
    all_thoughts,
    epoch_batches,
    evaluate_method,
    mean_loss,
    resumable_stages,
    train_method,
)
from soft_tokens.report.stats import bootstrap_crossed, rate_crossed
from settings import settings

IDS = LatentIds(start=100, end=101, latent=102)
PROBLEM = Problem(question=[10, 11], steps=[[20, 21], [30], [40, 41]], answer=[50, 2])
M = IGNORE
# The summary rule's parameters: `coconut` as it applies to each dataset.
PROTOCOL = {"prosqa": {"c_thought": 1, "max_latent_stage": 2, "num_epochs": 9, "epochs_per_stage": 3, "start": "base",
                       "select_best": False, "reset_optimizer": True, "uniform_prob": 0.0, "lr": 1e-4, "batch_size": 8,
                       "finetune": "full", "dtype": "float32"}}


def test_layouts_by_hand_at_each_stage():
    at = lambda method, stage: layout(PROBLEM, method, stage, c=2, max_latent_stage=2, ids=IDS)  # noqa: E731
    assert at("nocot", 0) == Layout([10, 11, 50, 2], [M, M, 50, 2], 2, 0)
    assert at("cot", 0) == Layout([10, 11, 20, 21, 30, 40, 41, 50, 2], [M, M, 20, 21, 30, 40, 41, 50, 2], 2, 0)
    assert at("coconut", 1) == Layout([10, 11, 100, 102, 102, 101, 30, 40, 41, 50, 2],
                                      [M] * 6 + [30, 40, 41, 50, 2], 3, 2)
    assert at("coconut", 2) == Layout([10, 11, 100] + [102] * 4 + [101, 40, 41, 50, 2], [M] * 8 + [40, 41, 50, 2], 3, 4)
    # Past max_latent_stage every step is gone and the latents stay at max_latent_stage * c.
    assert at("coconut", 3) == Layout([10, 11, 100] + [102] * 4 + [101, 50, 2], [M] * 8 + [50, 2], 3, 4)
    assert at("pause", 1) == at("coconut", 1)
    assert layout(PROBLEM, "coconut", 1, 2, 2, IDS, prompt_only=True) == Layout([10, 11, 100, 102, 102, 101], [M] * 6, 3, 2)
    assert layout(PROBLEM, "cot", 0, 2, 2, IDS, prompt_only=True).input_ids == [10, 11]


def reference_stages(method: str, first_epoch: int, num_epochs: int, per_stage: int, max_stage: int, longest: int):
    """The reference's loop (facebookresearch/coconut run.py) epoch by epoch: `scheduled_stage = 0 if
    cot or no_cot else epoch // epochs_per_stage`; past max_latent_stage every step is gone, which our
    stages call the final one (max_latent_stage, or one more where a chain is longer)."""
    final = max_stage + 1 if longest > max_stage else max_stage
    return [0 if method in ("cot", "nocot") else final if method == "coconut_nocurriculum" else min(e // per_stage, final)
            for e in range(first_epoch, num_epochs)]


@pytest.mark.parametrize("method", ["nocot", "cot", "coconut", "pause", "coconut_nocurriculum"])
@pytest.mark.parametrize("num_epochs,per_stage,max_stage,longest,from_cot",
                         [(50, 5, 6, 6, False), (25, 3, 3, 8, True), (7, 2, 2, 3, False), (4, 1, 2, 2, False)])
def test_schedule_follows_the_reference_epoch_by_epoch(method, num_epochs, per_stage, max_stage, longest, from_cot):
    from_cot = from_cot and method not in ("cot", "nocot")
    plan = schedule(method, from_cot, num_epochs, per_stage, max_stage, longest)
    assert [stage for stage, epochs in plan for _ in range(epochs)] == reference_stages(
        method, per_stage if from_cot else 0, num_epochs, per_stage, max_stage, longest)


def test_schedule_by_hand_and_its_errors():
    # ProsQA in the reference: 5 epochs per stage, stage 6 from epoch 30, so the last stage trains 20 epochs.
    assert schedule("coconut", False, 50, 5, 6, 6) == [(k, 5) for k in range(6)] + [(6, 20)]
    assert schedule("cot", False, 50, 5, 6, 6) == [(0, 50)] and schedule("coconut_nocurriculum", False, 50, 5, 6, 6) == [(6, 50)]
    # GSM8k: Coconut resumes at epoch 3 from the CoT checkpoint; chains longer than stage 3 get stage 4.
    assert schedule("coconut", True, 25, 3, 3, 8) == [(1, 3), (2, 3), (3, 3), (4, 13)]
    with pytest.raises(ValueError, match=r"num_epochs = 6 does not reach coconut's last stage \(3: 2 epochs per stage"):
        schedule("coconut", False, 6, 2, 2, 3)
    assert n_latents(1, 3, 2) == 3 and n_latents(5, 2, 2) == 4
    with pytest.raises(ValueError, match="c_thought must be >= 1"):
        n_latents(1, 0, 2)
    with pytest.raises(ValueError, match="unknown method 'cocnut'"):
        layout(PROBLEM, "cocnut", 1, 1, 1, IDS)


def test_uniform_prob_draws_a_stage_per_problem_and_batches_hold_one_latent_count(tiny_dir):
    rng = np.random.default_rng(0)
    assert {uniform_stage(rng, 3, 2, 0.0) for _ in range(50)} == {2}
    drawn = [uniform_stage(rng, 3, 2, 1.0) for _ in range(400)]
    assert set(drawn) == {0, 1, 2, 3} and abs(drawn.count(0) / 400 - 0.25) < 0.07
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    probs = [tokenize_problem(tokenizer, **p) for p in frame(12, 0).drop(columns=["id", "source"]).to_dict("records")]
    ids = IDS
    mixed = epoch_batches(probs, "coconut", 1, 0, train_settings("coconut", uniform_prob=1.0, batch_size=4), ids)
    assert sorted(len(r.input_ids) for b in mixed for r in b) != sorted(
        len(r.input_ids) for b in epoch_batches(probs, "coconut", 1, 0, train_settings("coconut", batch_size=4), ids)
        for r in b)  # stages really vary
    assert all(len({r.n_latent for r in b}) == 1 for b in mixed) and sum(map(len, mixed)) == 12
    assert len({r.n_latent for b in mixed for r in b}) > 1
    plain = epoch_batches(probs, "coconut", 1, 0, train_settings("coconut", batch_size=4), ids)
    assert [len(b) for b in plain] == [4, 4, 4] and {r.n_latent for b in plain for r in b} == {1}


def test_collate_aligns_the_first_latent():
    short = layout(PROBLEM, "coconut", 1, 1, 2, IDS)
    long = layout(Problem([7, 8, 9, 10], [[20], [30]], [50, 2]), "coconut", 1, 1, 2, IDS)
    batch = collate([short, long])
    assert batch.first_latent == 5 and batch.n_latent == 1
    assert batch.input_ids[0].tolist() == [0, 0, 10, 11, 100, 102, 101, 30, 40, 41, 50, 2]
    assert batch.input_ids[1].tolist() == [7, 8, 9, 10, 100, 102, 101, 30, 50, 2, 0, 0]
    assert batch.attention_mask[0].tolist() == [0, 0] + [1] * 10
    assert batch.position_ids[0].tolist()[2:] == list(range(10))
    assert batch.labels[1].tolist() == [M] * 7 + [30, 50, 2, M, M]
    with pytest.raises(ValueError, match="mixes latent counts"):
        collate([short, layout(PROBLEM, "coconut", 2, 1, 2, IDS)])


def with_latent_tokens(tiny, tiny_dir):
    model = copy.deepcopy(tiny[0])
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    return model, tokenizer, add_latent_tokens(model, tokenizer, "<<")


def nudged(model, tokenizer, ids):
    """The latent rows nudged apart from "<<" (exact ties in argmax would make greedy outputs depend on
    float noise; training separates them anyway)."""
    with torch.no_grad():
        model.get_input_embeddings().weight[[ids.start, ids.end, ids.latent]] += 0.01 * torch.randn(3, 32)
    return model, tokenizer, ids


@pytest.fixture(scope="module")
def latent_model(tiny, tiny_dir):
    """The tiny Llama with latent tokens."""
    return nudged(*with_latent_tokens(tiny, tiny_dir))


@pytest.fixture(scope="module", params=["llama", "gpt2", "qwen2"])
def arch_latent_model(request, tiny_arch):
    """A tiny model of each architecture the paper configs run Coconut on or near (GPT-2 is the
    reference's), with latent tokens."""
    folder = tiny_arch(request.param)
    return nudged(*with_latent_tokens(load_model(folder, "cpu", "float32"), folder))


def test_latent_tokens_start_as_the_init_token(tiny, tiny_dir):
    model, tokenizer, ids = with_latent_tokens(tiny, tiny_dir)
    table = model.get_input_embeddings().weight
    init = tokenizer("<<", add_special_tokens=False).input_ids[0]
    assert latent_ids(tokenizer) == ids and len(tokenizer) == table.shape[0]
    for new in (ids.start, ids.end, ids.latent):
        assert torch.equal(table[new], table[init])


def naive_forward(model, batch):
    """The reference: recompute the whole prefix for every latent, then the whole sequence."""
    embeds = model.get_input_embeddings()(batch.input_ids).clone()
    mask, pos = batch.attention_mask, batch.position_ids
    for j in range(batch.n_latent):
        col = batch.first_latent + j
        out = model(inputs_embeds=embeds[:, :col], attention_mask=mask[:, :col], position_ids=pos[:, :col],
                    output_hidden_states=True)
        embeds[:, col] = out.hidden_states[-1][:, -1]
    return model(inputs_embeds=embeds, attention_mask=mask, position_ids=pos).logits


def problems(tokenizer, n, seed=0):
    rng = np.random.default_rng(seed)
    return [tokenize_problem(tokenizer, **prosqa_problem(rng, 6, 2, {3: 1}, 1)) for _ in range(n)]


def test_cached_multipass_equals_full_recomputation(arch_latent_model):
    model, tokenizer, ids = arch_latent_model
    batch = collate([layout(p, "coconut", 2, 2, 2, ids) for p in problems(tokenizer, 3)])
    assert batch.n_latent == 4 and len(set(batch.attention_mask[:, 0].tolist())) == 2  # padded rows exist
    with torch.no_grad():
        cached, _, thoughts = latent_forward(model, batch, feedback=True)
        reference = naive_forward(model, batch)
        no_feedback, _, _ = latent_forward(model, batch, feedback=False)
        given, _, _ = latent_forward(model, batch, feedback=False, thoughts=thoughts)
        late, _, _ = latent_forward(model, batch, feedback=True, logits_from=7)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(cached[real], reference[real], atol=1e-5, rtol=1e-4)
    # The thoughts fed back, given as fixed vectors in one pass, give the same logits; logits_from keeps the tail.
    torch.testing.assert_close(given[real], cached[real], atol=1e-5, rtol=1e-4)
    assert late.shape[1] == batch.input_ids.shape[1] - 7
    torch.testing.assert_close(late, cached[:, 7:], atol=1e-5, rtol=1e-4)
    # Feeding hidden states back changes what comes after the first latent (the test is not vacuous).
    assert not torch.allclose(no_feedback[:, batch.first_latent + 1:], cached[:, batch.first_latent + 1:], atol=1e-3)


def test_thoughts_replace_the_latent_embedding_but_pause_tokens_use_it(latent_model):
    model, tokenizer, ids = latent_model
    batch = collate([layout(p, "coconut", 1, 1, 2, ids) for p in problems(tokenizer, 2)])
    table = model.get_input_embeddings().weight
    logits = {}
    with torch.no_grad():
        for shift in (0.0, 1.0):
            table[ids.latent] += shift
            # Logits of ordinary tokens only: the tied output row of the latent token moves too.
            logits[shift] = {fb: latent_forward(model, batch, fb)[0][..., :ids.start] for fb in (True, False)}
            table[ids.latent] -= shift
    # With feedback a hidden state stands where the latent token is, so its input row is never read;
    # as a pause token the row is an ordinary input.
    assert torch.equal(logits[0.0][True], logits[1.0][True])
    assert not torch.allclose(logits[0.0][False], logits[1.0][False])


def test_the_loss_reads_logits_only_where_labels_are(latent_model):
    model, tokenizer, ids = latent_model
    for method, stage in (("cot", 0), ("coconut", 2), ("pause", 1)):
        batch = collate([layout(p, method, stage, 1, 2, ids) for p in problems(tokenizer, 3)])
        start = supervised_from(batch.labels)
        assert (batch.labels[:, :start + 1] == IGNORE).all() and (batch.labels[:, start + 1] != IGNORE).any()
        with torch.no_grad():
            full = lm_loss(latent_forward(model, batch, method == "coconut")[0], batch.labels)
            assert batch_loss(model, batch, method == "coconut").item() == pytest.approx(full.item(), rel=1e-5)


def test_each_latent_control_changes_exactly_the_thoughts(latent_model):
    model, tokenizer, ids = latent_model
    prompts = [layout(p, "coconut", 2, 1, 2, ids, prompt_only=True) for p in problems(tokenizer, 3, seed=5)]
    thoughts = thoughts_of(model, prompts, feedback=True)
    assert thoughts.shape == (3, 2, 32)
    gen = torch.Generator().manual_seed(0)
    zeros, rand, other = (controlled(thoughts, c, gen) for c in ("zeros", "random", "other"))
    assert not zeros.any() and torch.equal(other, thoughts[[2, 0, 1]])
    torch.testing.assert_close(rand.norm(dim=-1), thoughts.norm(dim=-1))
    assert (torch.nn.functional.cosine_similarity(rand, thoughts, dim=-1).abs() < 0.9).all()
    eos = tokenizer.eos_token_id
    # Fed their own thoughts, the answers are the method's; a control changes only the latent inputs.
    assert generate(model, prompts, True, eos, 6, thoughts) == generate(model, prompts, True, eos, 6)
    batch = collate(prompts)
    with torch.no_grad():
        embeds = model.get_input_embeddings()(batch.input_ids)
        embeds[:, batch.first_latent:batch.first_latent + 2] = 0
        by_hand = model(inputs_embeds=embeds, attention_mask=batch.attention_mask,
                        position_ids=batch.position_ids).logits[:, -1].argmax(-1)
    assert [out[0] for out in generate(model, prompts, True, eos, 1, zeros)] == by_hand.tolist()
    with pytest.raises(ValueError, match="at least two test problems"):
        controlled(thoughts[:1], "other", gen)
    with pytest.raises(ValueError, match="unknown control 'noise'"):
        controlled(thoughts, "noise", gen)


def test_evaluation_runs_in_the_numerics_of_training(tiny_dir, tmp_path):
    """Trained under bf16 autocast: the thoughts of the model as trained (in memory, under the training
    autocast) equal those of the saved model as evaluation loads it."""
    import soft_tokens.latent.coconut.training as training

    kept = {}
    real = training.train_stage

    def keep_model(*args, **kwargs):
        model, history = real(*args, **kwargs)
        kept["model"] = copy.deepcopy(model)
        return model, history

    train, test = frame(4, 0), frame(3, 1)
    s = train_settings("coconut", start="base", dtype="bfloat16")
    try:
        training.train_stage = keep_model
        train_method(tiny_dir, None, train, frame(2, 2), s, tmp_path / "coconut")
    finally:
        training.train_stage = real
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "coconut" / "stage2")
    problems_ = training.tokenize_frame(tokenizer, test)
    as_trained = all_thoughts(kept["model"].eval(), tokenizer, problems_, 2, s)
    loaded, _ = training.load_trainable(tmp_path / "coconut" / "stage2", "cpu")
    assert torch.equal(all_thoughts(loaded.eval(), tokenizer, problems_, 2, s), as_trained)
    bf16_weights, _ = load_model(tmp_path / "coconut" / "stage2", "cpu", "bfloat16")
    assert not torch.equal(all_thoughts(bf16_weights, tokenizer, problems_, 2, s), as_trained)  # the old way differs


def test_select_best_keeps_the_epoch_of_best_validation_accuracy(tiny_dir, tmp_path, monkeypatch):
    import soft_tokens.latent.coconut.training as training

    curve, weights = iter([0.25, 0.75, 0.75, 0.5]), []

    def scripted(net, *args):
        weights.append(net.get_input_embeddings().weight.detach().clone())
        return next(curve)

    monkeypatch.setattr(training, "accuracy", scripted)
    train_method(tiny_dir, None, frame(4, 0), frame(2, 1), train_settings("cot", num_epochs=4, select_best=True),
                 tmp_path / "cot")
    history = json.loads((tmp_path / "cot" / "stage0" / "history.json").read_text())
    assert [e["val_accuracy"] for e in history["epochs"]] == [0.25, 0.75, 0.75, 0.5]
    assert history["selected_epoch"] == 1 and history["optimizer_steps"] == 4  # the first of two equal epochs
    saved, _ = load_model(tmp_path / "cot" / "stage0", "cpu", "float32")
    assert torch.equal(saved.get_input_embeddings().weight, weights[1]) and not torch.equal(weights[1], weights[3])


@pytest.mark.parametrize("method,stage,feedback", [("coconut", 2, True), ("pause", 1, False), ("cot", 0, False)])
def test_batched_generation_equals_one_at_a_time(arch_latent_model, method, stage, feedback):
    model, tokenizer, ids = arch_latent_model
    prompts = [layout(p, method, stage, 1, 2, ids, prompt_only=True) for p in problems(tokenizer, 4, seed=3)]
    eos = tokenizer.eos_token_id
    batched = generate(model, prompts, feedback, eos, max_new_tokens=12)
    single = [generate(model, [p], feedback, eos, max_new_tokens=12)[0] for p in prompts]
    assert batched == single and all(len(out) == 12 or out[-1] == eos for out in batched)


def test_generation_stops_each_row_at_its_eos(latent_model):
    model, tokenizer, ids = latent_model
    prompt = layout(problems(tokenizer, 1)[0], "cot", 0, 1, 2, ids, prompt_only=True)
    first = generate(model, [prompt], False, tokenizer.eos_token_id, 5)[0]
    # Declare the third generated token the EOS: decoding must stop there, keeping it.
    assert generate(model, [prompt], False, first[2], 5)[0] == first[:first.index(first[2]) + 1]


SETTINGS = {"c_thought": 1, "max_latent_stage": 1, "num_epochs": 3, "epochs_per_stage": 1, "start": "cot",
            "select_best": False, "reset_optimizer": True, "uniform_prob": 0.0, "controls": ["zeros", "random", "other"],
            "stage_curves": ["pause", "coconut"],
            "lr": 1e-3, "weight_decay": 0.0,
            "batch_size": 4, "eval_batch_size": 4, "finetune": "full", "lora_r": 4, "lora_alpha": 8,
            "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj"], "init_token": "<<",
            "max_new_tokens": 8, "seed": 0, "device": "cpu", "dtype": "float32", "model": "tiny",
            "dataset": "prosqa"}


def train_settings(method, **changes):
    return settings(TrainCoconut, SETTINGS, method=method, **changes)


def frame(n, seed):
    rng = np.random.default_rng(seed)
    rows = [prosqa_problem(rng, 6, 2, {2: 1}, 1) for _ in range(n)]
    return pd.DataFrame({"id": range(n), **{k: [r[k] for r in rows] for k in ("question", "steps", "answer")},
                         "source": "test"})


def test_stages_are_checkpointed_and_a_rerun_resumes(tiny_dir, tmp_path, caplog):
    train, val = frame(6, 0), frame(2, 1)
    cot = tmp_path / "cot"
    train_method(tiny_dir, None, train, val, train_settings("cot"), cot)
    assert finished_stages(cot) == [0]
    out = tmp_path / "coconut"
    # A run killed after its first stage: the .partial folder holds stage1 only.
    train_method(tiny_dir, cot, train, val, train_settings("coconut"), out)
    assert finished_stages(out) == [1, 2]  # chains of 2 steps > max_latent_stage 1: a final stage
    partial = out.with_name("coconut.partial")
    out.rename(partial)
    shutil.rmtree(partial / "stage2")
    with caplog.at_level("INFO"):
        train_method(tiny_dir, cot, train, val, train_settings("coconut"), out)
    assert "resuming coconut after finished stage 1" in caplog.text
    assert finished_stages(out) == [1, 2] and not partial.exists()
    history = json.loads((out / "stage2" / "history.json").read_text())
    assert history["n_latent"] == 1 and len(history["epochs"]) == 1
    # The run's curve: every finished stage's epochs in order, the resumed stage's included.
    curve = pd.read_parquet(out / "curve.parquet")
    assert list(curve["stage"]) == [1, 2] and list(curve["step"]) == [1, 2] and set(curve["method"]) == {"coconut"}
    assert curve["val_loss"].tolist() == [r["val_loss"] for r in stage_curve(out)]
    results = evaluate_method(out, val, settings(EvalCoconut, SETTINGS, method="coconut"))
    # Every stage as trained, and the latent controls at the last one; the budget up to each stage.
    assert results.groupby(["stage", "control"]).size().to_dict() == {
        (1, "none"): 2, (2, "none"): 2, (2, "zeros"): 2, (2, "random"): 2, (2, "other"): 2}
    assert results.groupby("stage")[["train_epochs", "train_steps"]].first().to_dict("index") == {
        1: {"train_epochs": 1, "train_steps": 2}, 2: {"train_epochs": 2, "train_steps": 4}}
    assert (results["latent_tokens"] == 1).all() and results["generated_tokens"].between(1, 8).all()
    # The random model never says EOS: every answer is cut at max_new_tokens, and flagged so.
    assert results["truncated"].all() and (results["generated_tokens"] == 8).all()


def test_lora_trains_the_latent_embeddings_and_merges(tiny_dir, tmp_path):
    train_method(tiny_dir, None, frame(4, 0), frame(2, 1), train_settings("cot", finetune="lora"), tmp_path / "cot")
    train_method(tiny_dir, tmp_path / "cot", frame(4, 0), frame(2, 1), train_settings("pause", finetune="lora"),
                 tmp_path / "pause")
    before, tok = load_model(tmp_path / "cot" / "stage0", "cpu", "float32")
    after, _ = load_model(tmp_path / "pause" / "stage1", "cpu", "float32")
    ids = latent_ids(tok)
    emb_before, emb_after = before.get_input_embeddings().weight, after.get_input_embeddings().weight
    assert not torch.equal(emb_before[ids.latent], emb_after[ids.latent])  # the pause token was trained
    assert torch.equal(emb_before[:ids.start], emb_after[:ids.start])  # ordinary token rows were not
    q_before = before.model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(q_before, after.model.layers[0].self_attn.q_proj.weight)  # LoRA merged in
    assert type(after).__name__ == "LlamaForCausalLM"


def test_a_non_finite_loss_stops_with_the_fix_and_keeps_finished_stages(tiny_dir, tmp_path, monkeypatch):
    import soft_tokens.latent.coconut.training as training

    train_method(tiny_dir, None, frame(4, 0), frame(2, 1), train_settings("cot"), tmp_path / "cot")
    real = training.batch_loss
    calls = []

    def nan_in_stage_two(*args):
        calls.append(1)
        loss = real(*args)
        return loss * float("nan") if len(calls) > 2 else loss  # stage 1: one batch + one val batch

    monkeypatch.setattr(training, "batch_loss", nan_in_stage_two)
    with pytest.raises(FloatingPointError, match="coconut stage 2 epoch 1: loss is nan; lower coconut.lr"):
        train_method(tiny_dir, tmp_path / "cot", frame(4, 0), frame(2, 1), train_settings("coconut"), tmp_path / "coconut")
    assert finished_stages(tmp_path / "coconut.partial") == [1]


def test_an_update_that_breaks_the_weights_never_counts_as_a_finished_stage(tiny_dir, tmp_path, monkeypatch):
    """The loss of the step that makes the weights NaN is still finite: the validation loss and the
    weights themselves are checked before a stage is saved (the last step of a stage included)."""
    import soft_tokens.latent.coconut.training as training

    step = torch.optim.AdamW.step

    def step_to_nan(self, *args, **kwargs):
        result = step(self, *args, **kwargs)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("nan"))
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", step_to_nan)
    with pytest.raises(FloatingPointError, match="nocot stage 0 epoch 1 validation: loss is nan; lower coconut.lr"):
        train_method(tiny_dir, None, frame(4, 0), frame(2, 1), train_settings("nocot", num_epochs=1), tmp_path / "nocot")
    assert finished_stages(tmp_path / "nocot.partial") == [] and not (tmp_path / "nocot").exists()
    monkeypatch.setattr(training, "mean_loss", lambda *args: 1.0)  # were the validation loss to miss it
    with pytest.raises(FloatingPointError, match=r"nocot stage 0: 1 weight tensors hold NaN/inf \(model.embed_tokens"):
        train_method(tiny_dir, None, frame(4, 0), frame(2, 1), train_settings("nocot", num_epochs=1), tmp_path / "nocot")
    assert finished_stages(tmp_path / "nocot.partial") == []


def test_validation_loss_is_taken_without_dropout(latent_model):
    """With dropout on, a loss in train mode is noisy; mean_loss must give the eval-mode loss every
    time and leave the model in the mode it found it."""
    model, tokenizer, ids = latent_model
    layouts = [layout(p, "cot", 0, 1, 2, ids) for p in problems(tokenizer, 3)]
    dropped = copy.deepcopy(model)
    dropped.config.attention_dropout = 0.5
    for layer in dropped.model.layers:
        layer.self_attn.attention_dropout = 0.5
    dropped.train()
    with torch.no_grad():
        batch = collate(layouts)
        noisy = [batch_loss(dropped, batch, False).item() for _ in range(2)]
    assert noisy[0] != noisy[1]  # dropout is really on in train mode
    first, second = (mean_loss(dropped, layouts, False, 2, "float32") for _ in range(2))
    assert first == second and dropped.training
    assert first == pytest.approx(mean_loss(model.eval(), layouts, False, 2, "float32"))


def evals_of(method, stage, correct, generated, latent, seed=1337, control="none"):
    """Evaluation rows as eval_coconut writes them: one per test problem."""
    return [dict(model="m", dataset="prosqa", seed=seed, method=method, stage=stage, control=control, id=i, answer="a",
                 generated="", predicted="", correct=c, latent_tokens=latent, generated_tokens=g, truncated=g == 12,
                 final_train_loss=0.5, train_epochs=3, train_steps=12)
            for i, (c, g) in enumerate(zip(correct, generated))]


def table_rows(tex):
    rows = tex[tex.index("Coconut: reasoning"):].splitlines()
    return [r for r in rows if " & " in r and not r.startswith((" &", "method"))]


def test_summary_and_table_carry_wilson_and_bootstrap_intervals():
    evals = pd.DataFrame(evals_of("cot", 0, [True] * 15 + [False] * 5, [10] * 10 + [12] * 10, 0)
                         + evals_of("coconut", 1, [False] * 20, [6] * 20, 1)
                         + evals_of("coconut", 2, [True] * 20, [4] * 20, 2)
                         + evals_of("nocot", 0, [False] * 20, [3] * 20, 0))
    s = summarize(evals).set_index(["method", "stage"])
    cot = s.loc[("cot", 0)]
    # 15 of 20: the Wilson interval by hand, (p + z^2/2n -+ z sqrt(p(1-p)/n + z^2/4n^2)) / (1 + z^2/n).
    assert (cot["accuracy"], cot["n_problems"], cot["n_seeds"], cot["n_correct"]) == (0.75, 20, 1, 15)
    assert cot["accuracy_low"] == pytest.approx(0.5313, abs=1e-4)
    assert cot["accuracy_high"] == pytest.approx(0.8881, abs=1e-4)
    assert cot["mean_tokens"] == 11 and 10 < cot["mean_tokens_low"] < 11 < cot["mean_tokens_high"] < 12
    assert np.isnan(cot["accuracy_sd"]) and cot["truncated_rate"] == 0.5
    # 0 of 20 and 20 of 20: Wilson stays sound at the edges; constant tokens have a zero-width interval.
    assert s.loc[("coconut", 1), "accuracy_low"] == 0 and s.loc[("coconut", 1), "accuracy_high"] == pytest.approx(
        0.1611, abs=1e-4)
    assert s.loc[("coconut", 2), "accuracy_low"] == pytest.approx(0.8389, abs=1e-4)
    assert (s.loc[("coconut", 2), ["mean_tokens", "mean_tokens_low", "mean_tokens_high"]] == 4 + 2).all()
    assert s["final"].to_dict() == {("coconut", 1): False, ("coconut", 2): True, ("cot", 0): True,
                                    ("nocot", 0): True}
    tex = section(summarize(evals), PROTOCOL)
    # Table 1's order; Coconut at its last stage; methods not run are left out; accuracy in %.
    low, high = cot["mean_tokens_low"], cot["mean_tokens_high"]
    # Each method's training budget beside its numbers.
    assert table_rows(tex) == [r"No-CoT & 0.0 [0.0, 16.1] & 3.0 [3.0, 3.0] & 3 / 12 \\",
                               rf"CoT & 75.0 [53.1, 88.8] & 11.0 [{low:.1f}, {high:.1f}] & 3 / 12 \\",
                               r"Coconut & 100.0 [83.9, 100.0] & 6.0 [6.0, 6.0] & 3 / 12 \\"]
    assert r"\multicolumn{3}{c}{prosqa ($n = 20$)}" in tex and "95\\% intervals (Wilson" in tex
    assert (r"\item On prosqa, of 20 test problems, m gets right 0 with No-CoT (3.0 tokens per answer), 15 with "
            r"CoT (11.0 tokens per answer) and 20 with Coconut (6.0 tokens per answer).") in tex


def final_rows(*rows, n=20):
    """A summary's final rows by hand: (method, accuracy, low, high, tokens, tokens low, tokens high)."""
    keys = ["method", "accuracy", "accuracy_low", "accuracy_high", "mean_tokens", "mean_tokens_low",
            "mean_tokens_high"]
    df = pd.DataFrame([dict(zip(keys, r)) for r in rows])
    return df.assign(model="m", dataset="prosqa", stage=0, n_problems=n, n_seeds=1,
                     n_correct=(df["accuracy"] * n).round().astype(int), final=True)


def test_findings_name_a_difference_only_where_the_intervals_separate():
    overlapping = final_rows(("cot", 0.60, 0.387, 0.781, 30.0, 29.0, 31.0),
                             ("coconut", 0.75, 0.531, 0.888, 6.0, 6.0, 6.0),
                             ("coconut_nocurriculum", 0.70, 0.481, 0.855, 6.0, 6.0, 6.0))
    found = findings(overlapping)
    assert found[0] == ("On prosqa, of 20 test problems, m gets right 12 with CoT (30.0 tokens per answer), 14 with "
                        "Coconut w/o curriculum (6.0 tokens per answer) and 15 with Coconut (6.0 tokens per answer).")
    assert found[1] == (r"Coconut and CoT are within noise at n = 20 on prosqa accuracy (\%): 75.0 (95\% CI "
                        r"53.1--88.8, n = 20) vs 60.0 (95\% CI 38.7--78.1, n = 20), the intervals overlap.")
    # Tokens: separated intervals, so the direction is named.
    assert found[2].startswith("Coconut has lower prosqa tokens per answer than CoT: 6.0 (95\\% CI 6.0--6.0")
    assert found[3].startswith("Coconut and Coconut w/o curriculum are within noise at n = 20")
    assert len(found) == 4  # no No-CoT or pause run: nothing said about them
    separated = final_rows(("nocot", 0.20, 0.081, 0.416, 3.0, 3.0, 3.0), ("coconut", 0.90, 0.699, 0.972, 6.0, 6.0, 6.0),
                           ("pause", 0.25, 0.112, 0.469, 6.0, 6.0, 6.0))
    found = findings(separated)
    assert found[1] == (r"Coconut has higher prosqa accuracy (\%) than No-CoT: 90.0 (95\% CI 69.9--97.2, n = 20) vs "
                        r"20.0 (95\% CI 8.1--41.6, n = 20).")
    assert found[2].startswith(r"Pause as thought has lower prosqa accuracy (\%) than Coconut: 25.0")


def test_findings_pair_methods_over_the_shared_test_problems():
    """Coconut right on 18 of 20 problems, CoT on 12, every CoT-right problem Coconut-right too: the
    marginal Wilson intervals overlap (69.9--97.2 vs 38.7--78.1), but the 6 discordant problems all go
    Coconut's way (McNemar's exact p = 2 / 2^6 = 0.031), so the difference is named, with McNemar's
    interval: 6 (2 pi - 1) / 20 for pi's Clopper-Pearson limits at 6 of 6, [0.025^(1/6), 1]."""
    evals = pd.DataFrame(evals_of("coconut", 1, [True] * 18 + [False] * 2, [4] * 20, 1)
                         + evals_of("cot", 0, [True] * 12 + [False] * 8, [10] * 20, 0))
    s = summarize(evals).set_index("method")
    low = 6 * (2 * 0.025 ** (1 / 6) - 1) / 20
    assert (s.loc["coconut", "accuracy_minus_cot"], s.loc["coconut", "accuracy_minus_cot_low"],
            s.loc["coconut", "accuracy_minus_cot_high"]) == pytest.approx((0.3, low, 0.3))
    assert np.isnan(s.loc["cot", "accuracy_minus_cot"])  # only a's final row carries the comparison
    found = " ".join(findings(summarize(evals)))
    assert (rf"Coconut has higher prosqa accuracy (\%) than CoT: 90.0 (95\% CI 69.9--97.2, n = 20) vs 60.0 (95\% CI "
            rf"38.7--78.1, n = 20); difference +30.0 (95\% CI +{100 * low:.1f} to +30.0).") in found
    assert "Coconut has lower prosqa tokens per answer than CoT" in found  # 5 against 10 on every problem


def test_seeds_give_the_mean_and_sd_across_seeds(tmp_path):
    # Seed 1337: 3 of 4 right with 1 + 4 tokens; seed 1338: 1 of 4 with 1 + 6; CoT 2 of 4 with 10 in both.
    evals = pd.DataFrame(evals_of("coconut", 1, [True, True, True, False], [4] * 4, 1, seed=1337)
                         + evals_of("coconut", 1, [False, True, False, False], [6] * 4, 1, seed=1338)
                         + evals_of("cot", 0, [True, True, False, False], [10] * 4, 0, seed=1337)
                         + evals_of("cot", 0, [False, False, True, True], [10] * 4, 0, seed=1338))
    s = summarize(evals).set_index("method")
    coconut = s.loc["coconut"]
    assert (coconut["n_problems"], coconut["n_seeds"], coconut["n_correct"]) == (4, 2, 4)
    assert coconut["accuracy"] == 0.5 and coconut["accuracy_sd"] == pytest.approx(np.std([0.75, 0.25], ddof=1))
    assert coconut["mean_tokens"] == 6 and coconut["mean_tokens_sd"] == pytest.approx(np.std([5, 7], ddof=1))
    # Never narrower than Wilson's over the 4 problems at their seed-averaged 2 right: [0.150, 0.850].
    assert coconut["accuracy_low"] <= 0.1501 and coconut["accuracy_high"] >= 0.8499
    assert coconut["mean_tokens_low"] == 5 and coconut["mean_tokens_high"] == 7  # all seed 1337, or all 1338
    assert s.loc["cot", "accuracy_sd"] == 0 and s.loc["cot", "mean_tokens_sd"] == 0
    tex = section(summarize(evals), PROTOCOL)
    assert table_rows(tex) == [r"CoT & 50.0 (sd 0.0) & 10.0 (sd 0.0) & 3 / 12 \\",
                               r"Coconut & 50.0 (sd 35.4) & 6.0 (sd 1.4) & 3 / 12 \\"]
    assert r"prosqa ($n = 2 \times 4$)" in tex and "mean and sd across 2 training seeds" in tex
    assert ("Each method fine-tunes m on a dataset's training split on the reference's stage schedule and answers its "
            "held-out test problems greedily (n in each table header; 2 training seeds): prosqa: 9 epochs for every "
            "method, a stage every 3 epochs up to stage 2 and the rest without any step, c = 1 thought per step, "
            "latent methods from the pretrained model (Coconut and pause train their own stage 0), the last epoch "
            "kept, AdamW lr 0.0001 reset every epoch, batch 8, uniform\\_prob 0, full fine-tuning, trained and "
            "evaluated in float32.") in tex
    assert "of 8 answers (2 seeds, each on the same 4 test problems), m gets right 4 with CoT" in tex
    assert "within noise at n = 4 problems x 2 seeds on prosqa accuracy" in tex
    curves = pd.DataFrame([{"model": "m", "dataset": "prosqa", "seed": seed, "method": method, "step": step,
                            "stage": step // 2, "train_loss": 1 / step, "val_loss": 2 / step}
                           for seed in (1, 2) for method in ("cot", "coconut") for step in (1, 2, 3)])
    figures(summarize(evals), curves, {"coconut_accuracy_by_stage": [tmp_path / "f.png"],
                                       "coconut_training": [tmp_path / "t.png"]})
    assert (tmp_path / "f.png").stat().st_size > 0 and (tmp_path / "t.png").stat().st_size > 0


def test_the_crossed_intervals_hold_the_spread_between_seeds_and_stay_sound_at_zero():
    """Two seeds that disagree on every problem: resampling problems alone would see every problem's
    mean at 0.5 and a zero-width interval; resampling seeds too spans all of [0, 1]."""
    table = np.column_stack([np.ones(50), np.zeros(50)])
    iv = bootstrap_crossed(table)
    assert (iv.mean, iv.low, iv.high, iv.n, iv.repeats) == (0.5, 0.0, 1.0, 50, 2)
    one_seed = bootstrap_crossed(np.array([[1.0], [0.0]] * 25))
    assert 0.3 < one_seed.low < 0.5 < one_seed.high < 0.7 and one_seed.n == 50
    # None right in 2 seeds x 4 problems: a bootstrap collapses to [0, 0], the rate keeps Wilson's 0 of 4.
    assert bootstrap_crossed(np.zeros((4, 2))).high == 0
    none_right = rate_crossed(np.zeros((4, 2)))
    assert (none_right.mean, none_right.low, none_right.n, none_right.repeats) == (0, 0, 4, 2)
    assert none_right.high == pytest.approx(0.4899, abs=1e-4)


def test_latent_controls_are_read_from_paired_drops():
    """Coconut right on the first 15 of 20 problems as trained, on the first 5 with zeros for thoughts (10
    discordant, all its way: McNemar), and on the same 15 with another problem's thoughts (no drop)."""
    evals = pd.DataFrame(evals_of("coconut", 1, [True] * 15 + [False] * 5, [4] * 20, 1)
                         + evals_of("coconut", 1, [True] * 5 + [False] * 15, [4] * 20, 1, control="zeros")
                         + evals_of("coconut", 1, [True] * 15 + [False] * 5, [4] * 20, 1, control="other")
                         + evals_of("cot", 0, [True] * 12 + [False] * 8, [10] * 20, 0))
    s = summarize(evals).set_index("method")
    assert s.loc["coconut", "accuracy"] == 0.75 and s.loc["coconut", "n_problems"] == 20  # controls kept apart
    assert s.loc["coconut", "zeros_accuracy"] == 0.25 and s.loc["coconut", "zeros_drop"] == pytest.approx(0.5)
    low = 10 * (2 * 0.025 ** (1 / 10) - 1) / 20  # McNemar's interval at 10 of 10 discordant
    assert (s.loc["coconut", "zeros_drop_low"], s.loc["coconut", "zeros_drop_high"]) == pytest.approx((low, 0.5))
    assert s.loc["coconut", "other_drop"] == 0 and s.loc["coconut", "other_drop_low"] < 0 < s.loc["coconut", "other_drop_high"]
    assert np.isnan(s.loc["cot", "zeros_drop"])
    tex = section(summarize(evals), PROTOCOL)
    assert (r"\item On prosqa, Coconut uses its latent vectors: accuracy drops when they are replaced by zeros (drops in "
            rf"points, as trained minus control, n = 20: zeros +50.0 (95\% CI +{100 * low:.1f} to +50.0); another "
            r"problem's thoughts +0.0") in tex
    assert "Latent controls at the last stage" in tex and r"Coconut & zeros & 25.0 [11.2, 46.9] & 75.0 [53.1, 88.8]" in tex
    alone = pd.DataFrame(evals_of("coconut", 1, [True] * 15 + [False] * 5, [4] * 20, 1)
                         + evals_of("coconut", 1, [True] * 14 + [False] * 6, [4] * 20, 1, control="random"))
    assert "Coconut shows no evidence of using its latent vectors: no drop's interval lies above 0" in section(
        summarize(alone), PROTOCOL)


def test_a_run_resumes_after_its_planned_stages_up_to_a_removed_one(tmp_path):
    """Stage 2 removed as damaged: stage 3 was trained from it, so it goes too; 0 and 1 are kept."""
    for stage in (0, 1, 3):
        (tmp_path / f"stage{stage}").mkdir()
        (tmp_path / f"stage{stage}" / "history.json").write_text('{"epochs": []}')
    assert resumable_stages(tmp_path, [0, 1, 2, 3]) == [0, 1]
    assert finished_stages(tmp_path) == [0, 1]
    assert resumable_stages(tmp_path, [1, 2]) == [1] and finished_stages(tmp_path) == [0, 1]  # unplanned ones stay
