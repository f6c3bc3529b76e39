"""Coconut: curriculum layouts by hand, cached multi-pass forward = full recomputation, batched
generation = one at a time, and stage checkpoints that a rerun resumes from."""

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
    collate,
    curriculum,
    generate,
    latent_forward,
    latent_ids,
    layout,
    lm_loss,
    n_latents,
    tokenize_problem,
)
from soft_tokens.latent.coconut.training import evaluate_method, finished_stages, mean_loss, train_method

IDS = LatentIds(start=100, end=101, latent=102)
PROBLEM = Problem(question=[10, 11], steps=[[20, 21], [30], [40, 41]], answer=[50, 2])
M = IGNORE


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


def test_curriculum_and_schedule():
    assert curriculum("cot", 2, 3) == [0] and curriculum("nocot", 2, 3) == [0]
    assert curriculum("coconut", 2, 3) == [1, 2, 3]  # a chain longer than the last stage: one more stage
    assert curriculum("coconut", 2, 2) == [1, 2] and curriculum("pause", 2, 2) == [1, 2]
    assert curriculum("coconut_nocurriculum", 2, 3) == [3]
    assert n_latents(1, 3, 2) == 3 and n_latents(5, 2, 2) == 4
    with pytest.raises(ValueError, match="c_thought must be >= 1"):
        n_latents(1, 0, 2)
    with pytest.raises(ValueError, match="unknown method 'cocnut'"):
        layout(PROBLEM, "cocnut", 1, 1, 1, IDS)


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


@pytest.fixture(scope="module")
def latent_model(tiny, tiny_dir):
    """The tiny model with latent tokens, their rows nudged apart from "<<" (exact ties in argmax
    would make greedy outputs depend on float noise; training separates them anyway)."""
    model, tokenizer, ids = with_latent_tokens(tiny, tiny_dir)
    with torch.no_grad():
        model.get_input_embeddings().weight[[ids.start, ids.end, ids.latent]] += 0.01 * torch.randn(3, 32)
    return model, tokenizer, ids


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
    return [tokenize_problem(tokenizer, **prosqa_problem(rng, 6, 2, 1)) for _ in range(n)]


def test_cached_multipass_equals_full_recomputation(latent_model):
    model, tokenizer, ids = latent_model
    batch = collate([layout(p, "coconut", 2, 2, 2, ids) for p in problems(tokenizer, 3)])
    assert batch.n_latent == 4 and len(set(batch.attention_mask[:, 0].tolist())) == 2  # padded rows exist
    with torch.no_grad():
        cached, _ = latent_forward(model, batch, feedback=True)
        reference = naive_forward(model, batch)
        no_feedback, _ = latent_forward(model, batch, feedback=False)
    real = batch.attention_mask.bool()
    torch.testing.assert_close(cached[real], reference[real], atol=1e-5, rtol=1e-4)
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


@pytest.mark.parametrize("method,stage,feedback", [("coconut", 2, True), ("pause", 1, False), ("cot", 0, False)])
def test_batched_generation_equals_one_at_a_time(latent_model, method, stage, feedback):
    model, tokenizer, ids = latent_model
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


SETTINGS = {"c_thought": 1, "max_latent_stage": 1, "epochs_per_stage": 1, "lr": 1e-3, "weight_decay": 0.0,
            "batch_size": 4, "eval_batch_size": 4, "finetune": "full", "lora_r": 4, "lora_alpha": 8,
            "lora_dropout": 0.0, "lora_target_modules": ["q_proj", "v_proj"], "init_token": "<<",
            "max_new_tokens": 8, "seed": 0, "device": "cpu", "dtype": "float32"}


def frame(n, seed):
    rng = np.random.default_rng(seed)
    rows = [prosqa_problem(rng, 6, 2, 1) for _ in range(n)]
    return pd.DataFrame({"id": range(n), **{k: [r[k] for r in rows] for k in ("question", "steps", "answer")},
                         "source": "test"})


def test_stages_are_checkpointed_and_a_rerun_resumes(tiny_dir, tmp_path, caplog):
    train, val = frame(6, 0), frame(2, 1)
    cot = tmp_path / "cot"
    train_method(tiny_dir, None, train, val, "cot", SETTINGS, cot)
    assert finished_stages(cot) == [0]
    out = tmp_path / "coconut"
    # A run killed after its first stage: the .partial folder holds stage1 only.
    train_method(tiny_dir, cot, train, val, "coconut", SETTINGS, out)
    assert finished_stages(out) == [1, 2]  # chains of 2 steps > max_latent_stage 1: a final stage
    partial = out.with_name("coconut.partial")
    out.rename(partial)
    shutil.rmtree(partial / "stage2")
    with caplog.at_level("INFO"):
        train_method(tiny_dir, cot, train, val, "coconut", SETTINGS, out)
    assert "resuming coconut after finished stage 1" in caplog.text
    assert finished_stages(out) == [1, 2] and not partial.exists()
    history = json.loads((out / "stage2" / "history.json").read_text())
    assert history["n_latent"] == 1 and len(history["epochs"]) == 1
    results = evaluate_method(out, val, "coconut", SETTINGS, {"model": "tiny", "dataset": "prosqa"})
    assert len(results) == 4 and set(results["stage"]) == {1, 2}
    assert (results["latent_tokens"] == 1).all() and results["generated_tokens"].between(1, 8).all()
    # The random model never says EOS: every answer is cut at max_new_tokens, and flagged so.
    assert results["truncated"].all() and (results["generated_tokens"] == 8).all()


def test_lora_trains_the_latent_embeddings_and_merges(tiny_dir, tmp_path):
    s = {**SETTINGS, "finetune": "lora"}
    train_method(tiny_dir, None, frame(4, 0), frame(2, 1), "cot", s, tmp_path / "cot")
    train_method(tiny_dir, tmp_path / "cot", frame(4, 0), frame(2, 1), "pause", s, tmp_path / "pause")
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

    train_method(tiny_dir, None, frame(4, 0), frame(2, 1), "cot", SETTINGS, tmp_path / "cot")
    real = training.lm_loss
    calls = []

    def nan_in_stage_two(logits, labels):
        calls.append(1)
        loss = real(logits, labels)
        return loss * float("nan") if len(calls) > 2 else loss  # stage 1: one batch + one val batch

    monkeypatch.setattr(training, "lm_loss", nan_in_stage_two)
    with pytest.raises(FloatingPointError, match="coconut stage 2 epoch 1: loss is nan; lower coconut.lr"):
        train_method(tiny_dir, tmp_path / "cot", frame(4, 0), frame(2, 1), "coconut", SETTINGS, tmp_path / "coconut")
    assert finished_stages(tmp_path / "coconut.partial") == [1]


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
        noisy = [lm_loss(latent_forward(dropped, batch, False)[0], batch.labels).item() for _ in range(2)]
    assert noisy[0] != noisy[1]  # dropout is really on in train mode
    first, second = (mean_loss(dropped, layouts, False, {"eval_batch_size": 2, "dtype": "float32"}) for _ in range(2))
    assert first == second and dropped.training
    assert first == pytest.approx(mean_loss(model.eval(), layouts, False, {"eval_batch_size": 2, "dtype": "float32"}))
