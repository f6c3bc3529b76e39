"""HRPO: a closed gate is the plain model, the probs state of a one-hot distribution is that token's
embedding, blending stops at the answer marker, batched rollouts = one at a time, the update sees the
rollout's inputs (equal log-probs), advantages / the clipped loss / KL by hand, only LoRA, gate and
projection train (the projection too), a killed run resumes, clear errors, the report's numbers."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from soft_tokens.latent.hrpo import grpo
from soft_tokens.latent.hrpo.method import HybridPolicy, ThinkingGate
from soft_tokens.latent.hrpo.report import findings, goal_verdict, summarize
from soft_tokens.latent.hrpo.rollout import MarkerWatch, left_pad, rollout, sequence_logps
from soft_tokens.latent.hrpo.training import (
    build_policy,
    check_answers,
    evaluate,
    grpo_step,
    load_policy,
    optimizer,
    prompt_problems,
    save_policy,
    start_dir,
    train,
)
from soft_tokens.report import stats
from soft_tokens.latent.hrpo.spec import BuildPolicy, EvalHrpo, TrainHrpo, check_hrpo
from settings import lora_targets, settings

SETTINGS = dict(model="tiny", dataset="prosqa", seed=3, device="cpu", dtype="float32", start="base", fresh_problems=0,
                prompt_prefix="", chat_template=False, system_prompt="", lr_schedule="constant", warmup_ratio=0.1,
                score_temperature=1.0, decay_biases=True,
                marker="###", projection_norm="embedding_rms", a_min=0.99, a_max=0.999, gate_init_std=0.02,
                group_size=2, prompts_per_step=2, steps=2, temperature=1.0, max_new_tokens=6, beta=0.005,
                updates_per_batch=1, clip=0.2, max_grad_norm=1.0, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                lora_target_modules=["q_proj", "v_proj"], lr_lora=1e-2, lr_gate=1e-2, lr_lambda=1e-2,
                lr_projection=1e-2, weight_decay=0.0, checkpoint_every=1, eval_batch_size=3, policy="probs")
QUESTIONS = ["Every wumpus is a yumpus. Is Max a yumpus?", "Is Sally a rempus?", "Tom is a jompus. Is Tom a bimpus?"]


def policy_of(tiny_dir, state, **changes):
    s = settings(TrainHrpo, SETTINGS, policy=state, **changes)
    policy, tokenizer = build_policy(start_dir(tiny_dir, s.start), state, s)
    return policy, tokenizer, s


def open_gate(policy):
    """A gate that blends strongly (a well below 1), so that a wrong input would show in the logits."""
    with torch.no_grad():
        policy.gate.Lambda.fill_(-3.0)


def prompts_of(tokenizer, questions):
    return left_pad([tokenizer(q + "\n", add_special_tokens=False).input_ids for q in questions], "cpu")


def test_a_closed_gate_feeds_the_token_embedding_and_gives_the_plain_model_logits(tiny_dir):
    policy, tokenizer, _ = policy_of(tiny_dir, "probs")
    with torch.no_grad():
        policy.gate.Lambda.fill_(1e4)  # softplus(-Lambda) = 0: a = 1
    ids = torch.tensor([tokenizer("Max is a wumpus.", add_special_tokens=False).input_ids])
    h = torch.randn(*ids.shape, 32)
    embeds, ratio = policy.inputs(ids, h, torch.ones_like(ids, dtype=torch.bool))
    assert torch.equal(embeds, policy.embed(ids)) and torch.all(ratio == 0)
    with torch.no_grad():
        assert torch.equal(policy.lm(inputs_embeds=embeds).logits, policy.lm(input_ids=ids).logits)


def test_the_gate_by_hand_and_its_starting_range():
    gate = ThinkingGate(4, 0.99, 0.999, 0.02, torch.Generator().manual_seed(0))
    e, h = torch.randn(3, 4), torch.randn(3, 4)
    mixed, hidden = gate(e, h)
    r, i = torch.sigmoid(gate.r(e)), torch.sigmoid(gate.i(e))
    a = torch.exp(-8.0 * torch.nn.functional.softplus(-gate.Lambda) * r)
    assert torch.allclose(mixed, a * e + torch.sqrt(1 - a ** 2) * i * h, atol=1e-6)
    assert torch.allclose(hidden, torch.sqrt(1 - a ** 2), atol=1e-6)
    # a = a0 ** r with a0 in [0.99, 0.999]: at r = 1, a is a0 itself.
    a0 = torch.exp(-8.0 * torch.nn.functional.softplus(-gate.Lambda))
    assert torch.all((a0 >= 0.99 - 1e-6) & (a0 <= 0.999 + 1e-6))


def test_the_probs_state_of_a_one_hot_distribution_is_that_tokens_embedding(tiny_dir):
    policy, _, _ = policy_of(tiny_dir, "probs")
    table = policy.lm.get_input_embeddings().weight
    p = torch.zeros(2, table.shape[0])
    p[0, 17], p[1, 400] = 1.0, 1.0
    assert torch.allclose(policy.probs_state(p), table[[17, 400]])
    # and a uniform mix of two tokens is their sum over sqrt(2)
    q = torch.zeros(table.shape[0])
    q[[5, 9]] = 0.5
    assert torch.allclose(policy.probs_state(q), (table[5] + table[9]) / math.sqrt(2), atol=1e-6)


def test_the_projection_state_has_unit_norm_or_the_embeddings_rms(tiny_dir):
    hidden = torch.randn(5, 32)
    unit, _, _ = policy_of(tiny_dir, "projection", projection_norm="unit")
    assert torch.allclose(unit.projected(hidden).norm(dim=-1), torch.ones(5), atol=1e-5)
    rms, _, _ = policy_of(tiny_dir, "projection")
    table = rms.lm.get_input_embeddings().weight
    expected = table.pow(2).mean().sqrt() * math.sqrt(32)
    assert torch.allclose(rms.projected(hidden).norm(dim=-1), expected.expand(5), atol=1e-4)


def scripted(policy, token_ids):
    """Make the LM write `token_ids` in order, whatever its inputs (a large logit bias per call)."""
    calls = []

    def bias(module, args, output):
        step = min(len(calls), len(token_ids) - 1)
        calls.append(step)
        output[..., -1, token_ids[step]] += 1e4
        return output

    return policy.lm.get_output_embeddings().register_forward_hook(bias)


def test_blending_stops_once_the_answer_marker_is_written(tiny_dir):
    policy, tokenizer, _ = policy_of(tiny_dir, "probs")
    open_gate(policy)
    text = tokenizer("Max is\n### Max", add_special_tokens=False).input_ids
    hook = scripted(policy, text)
    try:
        ro = rollout(policy, tokenizer, prompts_of(tokenizer, QUESTIONS[:1]), 1, len(text), 1.0, "###")
    finally:
        hook.remove()
    assert ro.tokens[0].tolist() == text
    written = ["###" in tokenizer.decode(text[:t + 1]) for t in range(len(text))]
    assert ro.thinking[0].tolist() == [not w for w in written]
    assert any(written) and not all(written)
    assert torch.isnan(ro.hidden_ratio[0][torch.tensor(written)]).all()
    assert (ro.hidden_ratio[0][~torch.tensor(written)] > 0).all()
    watch = MarkerWatch(tokenizer, "###", 1, "cpu")
    seen = [watch.update([torch.tensor([t]) for t in text[:k + 1]]).item() for k in range(len(text))]
    assert seen == written


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])  # Qwen2.5 is the paper config's HRPO model
@pytest.mark.parametrize("state", ["grpo", "probs", "projection"])
def test_batched_greedy_rollouts_equal_one_at_a_time(tiny_arch, arch, state):
    policy, tokenizer, _ = policy_of(tiny_arch(arch), state, lora_target_modules=lora_targets(arch))
    if state != "grpo":
        open_gate(policy)
    batched = rollout(policy, tokenizer, prompts_of(tokenizer, QUESTIONS), 1, 6, 1.0, "###")
    for i, q in enumerate(QUESTIONS):
        alone = rollout(policy, tokenizer, prompts_of(tokenizer, [q]), 1, 6, 1.0, "###")
        n = int(alone.lengths[0])
        assert int(batched.lengths[i]) == n
        assert batched.tokens[i, :n].tolist() == alone.tokens[0, :n].tolist()
        assert torch.allclose(batched.logps[i, :n], alone.logps[0, :n], atol=1e-4)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2"])  # Qwen2.5 is the paper config's HRPO model
@pytest.mark.parametrize("state", ["grpo", "probs", "projection"])
def test_the_update_recomputes_the_rollouts_log_probs_for_the_same_weights(tiny_arch, arch, state):
    """The rollout decodes with the LoRA merged into the base weights, the update with it apart: a trained
    (non-zero) adapter gives the same log-probabilities both ways."""
    policy, tokenizer, _ = policy_of(tiny_arch(arch), state, lora_target_modules=lora_targets(arch))
    if state != "grpo":
        open_gate(policy)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2, generator=torch.Generator().manual_seed(1))
    prompts = prompts_of(tokenizer, QUESTIONS[:2])
    ro = rollout(policy, tokenizer, prompts, 3, 6, 0.7, "###", seed=11)
    assert ro.tokens.shape[0] == 6
    logp, ratio = sequence_logps(policy, prompts, ro, 3, 0.7)
    assert torch.allclose(logp[ro.mask], ro.logps[ro.mask], atol=1e-4)
    fed = ro.mask & ro.thinking
    fed[:, -1] = False  # the last token is never fed back
    assert torch.allclose(ratio[fed], ro.hidden_ratio[fed], atol=1e-5)
    # Plain ids (the reference) differ from the hybrid inputs once the gate blends.
    plain, _ = sequence_logps(policy, prompts, ro, 3, 0.7, plain=True)
    assert torch.allclose(plain, logp, atol=1e-5) == (state == "grpo")


def test_advantages_by_hand():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    adv = grpo.advantages(rewards, 4)
    std = math.sqrt(((1 - 0.25) ** 2 + 3 * 0.25 ** 2) / 3)  # sample std of (1, 0, 0, 0)
    expected = [(1 - 0.25) / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 3 + [0.0] * 4
    assert torch.allclose(adv, torch.tensor(expected), atol=1e-6)
    with pytest.raises(ValueError, match="hrpo.group_size: 1;.*>= 2"):
        grpo.advantages(rewards, 1)


def test_the_clipped_loss_and_the_single_update_loss_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.9)], [math.log(0.2), 0.0]], requires_grad=True)
    old = torch.tensor([[math.log(0.4), math.log(0.5)], [math.log(0.25), 0.0]])
    adv = torch.tensor([1.0, -1.0])
    mask = torch.tensor([[True, True], [True, False]])
    # ratios: 1.25 -> clipped 1.2 (A > 0); 1.8 -> 1.2; 0.8 with A < 0: min(-0.8, -0.8) = -0.8.
    value = grpo.loss(logp, old, None, adv, mask, 0.0, 0.2)
    assert value.item() == pytest.approx(((-1.2 - 1.2) / 2 + 0.8) / 2, abs=1e-6)
    # One update per batch: the ratio is 1 in value, its gradient is A / tokens per completion.
    single = grpo.loss(logp, None, None, adv, mask, 0.0, 0.2)
    assert single.item() == pytest.approx((-1.0 + 1.0) / 2, abs=1e-6)
    single.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-0.25, -0.25], [0.5, 0.0]]))


def test_the_kl_term_is_zero_when_the_policy_is_the_reference_and_k3_by_hand(tiny_dir):
    logp = torch.tensor([-1.0, -2.0])
    assert torch.equal(grpo.k3(logp, logp), torch.zeros(2))
    assert grpo.k3(torch.tensor(-1.0), torch.tensor(-2.0)).item() == pytest.approx(math.exp(-1) + 1 - 1)
    # A fresh LoRA (B = 0) with the adapters disabled is the same model: KL exactly 0.
    policy, tokenizer, _ = policy_of(tiny_dir, "grpo")
    prompts = prompts_of(tokenizer, QUESTIONS[:2])
    ro = rollout(policy, tokenizer, prompts, 2, 5, 1.0, "###", seed=2)
    with torch.no_grad():
        mine, _ = sequence_logps(policy, prompts, ro, 2, 1.0)
        with policy.lm.disable_adapter():
            ref, _ = sequence_logps(policy, prompts, ro, 2, 1.0, plain=True)
    assert torch.equal(grpo.k3(mine, ref), torch.zeros_like(mine))


@pytest.mark.parametrize("state", ["grpo", "probs", "projection"])
def test_only_lora_gate_and_projection_weights_receive_gradients(tiny_dir, state):
    policy, tokenizer, s = policy_of(tiny_dir, state)
    opt = optimizer(policy, s)
    prompts = prompts_of(tokenizer, QUESTIONS[:2])
    # Rewards must differ within a group for a gradient: completions that differ, rewarded 1 and 0.
    ro = rollout(policy, tokenizer, prompts, 2, 6, 1.0, "###", seed=seed_with_distinct_pairs(policy, tokenizer,
                                                                                               prompts))
    logp, _ = sequence_logps(policy, prompts, ro, 2, 1.0)
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    grpo.loss(logp, None, None, grpo.advantages(rewards, 2), ro.mask, 0.0, 0.2).backward()
    trained = {n for n, p in policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    allowed = {n for n, p in policy.named_parameters() if p.requires_grad}
    assert trained <= allowed
    assert all("lora_" in n or n.startswith(("gate.", "projection.")) for n in allowed)
    assert any("lora_B" in n for n in trained)
    if state != "grpo":
        assert {"gate.Lambda", "gate.r.weight", "gate.i.weight"} <= trained
    if state == "projection":
        assert "projection.weight" in trained  # h is recomputed with gradient, not stored
    assert sum(len(g["params"]) for g in opt.param_groups) == len(allowed)


def seed_with_distinct_pairs(policy, tokenizer, prompts):
    """A sampling seed under which each prompt's two completions differ (so the toy rewards do)."""
    for seed in range(50):
        ro = rollout(policy, tokenizer, prompts, 2, 6, 1.0, "###", seed=seed)
        if all(not torch.equal(ro.tokens[i], ro.tokens[i + 1]) for i in (0, 2)):
            return seed
    raise AssertionError("no seed gives distinct completions")


def problems_frame():
    return pd.DataFrame({"id": [0, 1, 2], "question": QUESTIONS, "steps": [["a"], ["b"], ["c"]],
                         "answer": ["Max is a yumpus.", "Sally is a rempus.", "Tom is a bimpus."],
                         "source": "test"})


def test_a_killed_run_resumes_after_its_last_checkpoint_and_matches_an_uninterrupted_one(tiny_dir, tmp_path,
                                                                                         monkeypatch):
    from soft_tokens.latent.hrpo import training

    problems = problems_frame()
    policy, tokenizer, s = policy_of(tiny_dir, "probs", steps=3)
    whole = train(policy, tokenizer, problems, s, tmp_path / "a.partial", {"run": 1})
    expected = {n: t.clone() for n, t in policy.state_dict().items() if "lora_" in n or "gate" in n}

    real, calls = training.grpo_step, []

    def dies_at_step_three(*args):
        if args[-1] == 2:
            raise KeyboardInterrupt
        calls.append(args[-1])
        return real(*args)

    monkeypatch.setattr(training, "grpo_step", dies_at_step_three)
    policy, tokenizer, s = policy_of(tiny_dir, "probs", steps=3)
    with pytest.raises(KeyboardInterrupt):
        train(policy, tokenizer, problems, s, tmp_path / "b.partial", {"run": 1})
    monkeypatch.setattr(training, "grpo_step", real)
    policy, tokenizer, s = policy_of(tiny_dir, "probs", steps=3)
    resumed = train(policy, tokenizer, problems, s, tmp_path / "b.partial", {"run": 1})
    assert calls == [0, 1]
    pd.testing.assert_frame_equal(resumed, whole)
    for name, value in expected.items():
        assert torch.allclose(policy.state_dict()[name], value, atol=1e-6), name


def test_a_saved_policy_evaluates_as_it_was_trained(tiny_dir, tmp_path):
    problems = problems_frame()
    policy, tokenizer, s = policy_of(tiny_dir, "projection")
    train(policy, tokenizer, problems, s, tmp_path / "c.partial", {"run": 2})
    save_policy(policy, tmp_path / "policy")
    before = evaluate(policy, tokenizer, problems, settings(EvalHrpo, SETTINGS), "projection")
    fresh, _, _ = policy_of(tiny_dir, "projection")
    after = evaluate(load_policy(tmp_path / "policy", fresh), tokenizer, problems, settings(EvalHrpo, SETTINGS),
                     "projection")
    pd.testing.assert_frame_equal(before, after)
    assert list(before.columns) == ["policy", "seed", "id", "answer", "generated", "predicted", "correct",
                                    "markers", "length", "hidden_ratio"]
    # The LoRA is a standard PEFT adapter on the start model; the gate and projection sit beside it.
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), tmp_path / "policy" / "adapter")
    lora = {k: v for k, v in policy.lm.state_dict().items() if "lora_" in k}
    assert len(lora) > 0 and all(torch.equal(adapted.state_dict()[k].cpu(), v.cpu()) for k, v in lora.items())
    assert set(load_file(tmp_path / "policy" / "trained.safetensors")) == {
        k for k in policy.state_dict() if "lora_" not in k} and any("projection" in k for k in policy.state_dict())
    other, _, _ = policy_of(tiny_dir, "probs")
    with pytest.raises(ValueError, match="holds a 'projection' policy, not the 'probs' policy this job builds; "
                                         "delete .*policy so train_hrpo retrains it"):
        load_policy(tmp_path / "policy", other)
    (tmp_path / "policy" / "meta.json").write_text(json.dumps({"state": "probs"}))  # the names give it away
    (tmp_path / "policy" / "checksums.sha256").unlink()  # as a policy written whole, of another kind
    with pytest.raises(ValueError, match="holds other trained weights than this model trains"):
        load_policy(tmp_path / "policy", other)


def test_clear_errors(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="hrpo.methods: unknown method 'latent'"):
        policy_of(tiny_dir, "latent")
    policy, _, _ = policy_of(tiny_dir, "grpo")
    with pytest.raises(ValueError, match="hrpo.methods: unknown thinking state 'hidden'"):
        HybridPolicy(policy.lm, "hidden", settings(BuildPolicy, SETTINGS), torch.Generator())
    with pytest.raises(FileNotFoundError, match="hrpo.start: no model at .*run the Coconut track's cot method"):
        start_dir(tmp_path / "missing", "cot")
    bad = problems_frame().assign(answer=["####", "Sally is a rempus.", "#### "])
    with pytest.raises(ValueError, match="'prosqa' has 2 answers with nothing after the answer marker"):
        check_answers(bad, "prosqa")
    hub = {"kind": "hub"}
    splits = {k: problems_frame() for k in ("train", "val", "test")}
    with pytest.raises(ValueError, match="hrpo.fresh_problems: 'gsm8k' is read from the hub.*fresh_problems: 0"):
        prompt_problems("gsm8k", hub, splits, settings(TrainHrpo, SETTINGS, fresh_problems=5))
    config = {"group_size": 1, "a_min": 0.99, "a_max": 0.999, "models": [], "datasets": [], "updates_per_batch": 1,
              "temperature": 1.0, "score_temperature": 1.0}
    with pytest.raises(ValueError, match="hrpo.group_size: 1; GRPO normalises"):
        check_hrpo(config)
    with pytest.raises(ValueError, match="hrpo.a_min 0.999 is above hrpo.a_max 0.99"):
        check_hrpo({**config, "group_size": 4, "a_min": 0.999, "a_max": 0.99})
    with pytest.raises(ValueError, match="score_temperature 1.0 differs from hrpo.temperature 0.5 with updates_per_batch 2"):
        check_hrpo({**config, "group_size": 4, "updates_per_batch": 2, "temperature": 0.5, "score_temperature": 1.0})


def test_fresh_problems_are_new_and_of_the_datasets_kind():
    spec = {"kind": "prosqa", "n_problems": 20, "n_concepts": 5, "n_people": 2, "step_counts": {2: 1}, "max_parents": 1}
    from soft_tokens.data.reasoning import build_reasoning

    own = build_reasoning("prosqa", spec, 3)
    splits = {"train": own.iloc[:10], "val": own.iloc[10:12], "test": own.iloc[12:]}
    fresh = prompt_problems("prosqa", spec, splits, settings(TrainHrpo, SETTINGS, fresh_problems=30))
    assert 0 < len(fresh) <= 30 and not set(fresh.question) & set(own.question)
    assert prompt_problems("prosqa", spec, splits, settings(TrainHrpo, SETTINGS)) is splits["train"]


def evals_frame(rng, policy, seeds, p_correct, length):
    rows = []
    for seed in seeds:
        for i in range(40):
            rows.append({"model": "m", "dataset": "d", "policy": policy, "seed": seed, "id": i,
                         "correct": bool(rng.random() < p_correct), "markers": 1, "length": length + i % 3,
                         "hidden_ratio": math.nan if policy in ("start", "grpo") else 0.05})
    return pd.DataFrame(rows)


def test_the_summary_by_hand_and_findings_that_say_when_a_difference_is_noise():
    rng = np.random.default_rng(0)
    evals = pd.concat([evals_frame(rng, "start", [1], 0.5, 20), evals_frame(rng, "grpo", [1, 2, 3], 0.5, 20),
                       evals_frame(rng, "probs", [1, 2, 3], 0.5, 20),
                       evals_frame(rng, "projection", [1, 2, 3], 1.0, 10)])
    summary = summarize(evals).set_index("policy")
    grpo_rows = evals[evals.policy == "grpo"]
    assert summary.loc["grpo", "accuracy"] == pytest.approx(grpo_rows.correct.mean())
    assert summary.loc["grpo", "n"] == 120 and summary.loc["start", "n"] == 40
    proj = evals[evals.policy == "projection"]
    gain = proj.correct.mean() - grpo_rows.correct.mean()
    assert summary.loc["projection", "gain_vs_grpo"] == pytest.approx(gain)
    assert summary.loc["projection", "length_vs_grpo"] == pytest.approx(proj.length.mean() / grpo_rows.length.mean())
    assert summary.loc["projection", "hidden_ratio"] == pytest.approx(0.05)
    assert math.isnan(summary.loc["start", "gain_vs_grpo"]) and "gain_vs_start" in summary.columns
    text = " ".join(findings(summary.reset_index()))
    assert "HRPO, projection state is more accurate than GRPO" in text
    assert "HRPO, probs state and GRPO are within noise on accuracy" in text
    assert "n = 40 problems x 3 seeds" in text and "n = 120" not in text  # problems and seeds, not their product
    assert "is met" in text


def test_one_seed_cannot_carry_the_length_ratio():
    """Three HRPO seeds at 0.47, 1.12 and 1.10 of GRPO's completion length (GRPO at 20 tokens in every seed):
    averaged over seeds first, the problems alone would give a ratio of 0.90 with an interval below 1; the
    crossed bootstrap draws seeds too, so one short seed cannot exclude 1 (nor can the 0.8 goal be met)."""
    rows = [{"model": "m", "dataset": "d", "policy": policy, "seed": seed, "id": i, "correct": i % 2 == 0,
             "markers": 1, "length": length + 2 * (i % 2) - 1, "hidden_ratio": 0.05}
            for policy, lengths in (("grpo", (20.0, 20.0, 20.0)), ("probs", (9.4, 22.4, 22.0)))
            for seed, length in zip((1, 2, 3), lengths) for i in range(200)]
    summary = summarize(pd.DataFrame(rows)).set_index("policy")
    ratio = summary.loc["probs", ["length_vs_grpo", "length_vs_grpo_low", "length_vs_grpo_high"]]
    assert ratio.iloc[0] == pytest.approx(53.8 / 60)
    assert ratio.iloc[1] < 0.8 and ratio.iloc[2] > 1  # seeds drawn: 0.47 alone, or 1.12 alone, are possible
    text = " ".join(findings(summary.reset_index()))
    assert "(the interval excludes 1)" not in text and "is met" not in text


def test_the_goal_verdict():
    interval = lambda m, lo, hi: stats.Interval(m, lo, hi, 600)  # noqa: E731
    assert goal_verdict(interval(0.05, 0.03, 0.07), interval(1.0, 0.9, 1.1)) == "is met"
    assert goal_verdict(interval(0.0, -0.02, 0.02), interval(0.7, 0.65, 0.75)) == "is met"
    assert goal_verdict(interval(0.0, -0.01, 0.015), interval(1.0, 0.95, 1.05)) == "is missed"
    assert goal_verdict(interval(0.01, -0.02, 0.04), interval(1.0, 0.9, 1.1)).startswith("is neither")


def test_a_step_without_reward_differences_leaves_a_fresh_grpo_policy_as_it_was(tiny_dir):
    policy, tokenizer, s = policy_of(tiny_dir, "grpo")
    frozen = {n: p.clone() for n, p in policy.named_parameters() if not p.requires_grad}
    trained = {n: p.clone() for n, p in policy.named_parameters() if p.requires_grad}
    opt = optimizer(policy, s)
    row = grpo_step(policy, tokenizer, opt, prompts_of(tokenizer, QUESTIONS[:2]), ["x", "y"], s, 0)
    assert set(row) == {"step", "reward", "accuracy", "length", "hidden_ratio", "mixed_groups", "loss", "kl"}
    assert all(torch.equal(p, frozen[n]) for n, p in policy.named_parameters() if n in frozen)
    # Rewards all zero: advantages zero; the KL term and its gradient are zero while policy = reference;
    # weight decay is 0: nothing moves.
    assert row["reward"] == 0.0 and row["kl"] == pytest.approx(0.0, abs=1e-6)
    assert all(torch.equal(p, trained[n]) for n, p in policy.named_parameters() if n in trained)


def test_the_public_schedule_clipping_and_decay_groups_reach_the_optimiser(tiny_dir, monkeypatch):
    """Cosine with a 10% warm-up as transformers computes it for the HF Trainer, max_grad_norm as the
    clip of every update, and weight decay on the gate's biases only with decay_biases."""
    from transformers import get_cosine_schedule_with_warmup

    from soft_tokens.latent.hrpo import training

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    reference = get_cosine_schedule_with_warmup(opt, num_warmup_steps=3, num_training_steps=25)  # ceil(0.1 x 25)
    for step in range(25):
        assert training.lr_factor(step, 25, "cosine", 0.1) == pytest.approx(reference.get_last_lr()[0], abs=1e-12)
        opt.step()
        reference.step()
    assert training.lr_factor(7, 25, "constant", 0.1) == 1.0
    for decay_biases, bias_decay in ((True, 0.1), (False, 0.0)):
        policy, tokenizer, s = policy_of(tiny_dir, "probs", weight_decay=0.1, decay_biases=decay_biases)
        opt = optimizer(policy, s)
        names = {id(p): n for n, p in policy.named_parameters()}
        decay = {names[id(p)]: g["weight_decay"] for g in opt.param_groups for p in g["params"]}
        assert decay["gate.r.bias"] == bias_decay and decay["gate.r.weight"] == decay["gate.Lambda"] == 0.1
    policy, tokenizer, s = policy_of(tiny_dir, "probs", lr_schedule="cosine", warmup_ratio=0.5, steps=4,
                                     max_grad_norm=0.1, score_temperature=0.7, temperature=1.3)
    opt = optimizer(policy, s)
    seen = {"lr": [], "clip": [], "temperature": []}
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda params, norm: seen["clip"].append(norm))
    real_logps = training.sequence_logps
    monkeypatch.setattr(training, "sequence_logps",
                        lambda *a, **k: seen["temperature"].append(a[4]) or real_logps(*a, **k))
    step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step",
                        lambda self, *a, **k: seen["lr"].append(self.param_groups[0]["lr"] / s.lr_lora) or step(self))
    for i in range(2):
        training.grpo_step(policy, tokenizer, opt, prompts_of(tokenizer, QUESTIONS[:2]), ["a", "b"], s, i)
    assert seen["lr"] == pytest.approx([0.0, 0.5]) and seen["clip"] == [0.1, 0.1]
    assert seen["temperature"] == [0.7, 0.7, 0.7, 0.7]  # the reference pass and the policy's, both steps


def test_prompts_through_the_chat_template(tiny_dir):
    from soft_tokens.latent.hrpo.training import prompt_ids

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    raw = settings(BuildPolicy, SETTINGS, policy="grpo", prompt_prefix="Solve: ")
    assert prompt_ids(tokenizer, ["Is Tom a wumpus?"], raw) == [tokenizer("Solve: Is Tom a wumpus?\n",
                                                                          add_special_tokens=False).input_ids]
    chat = settings(BuildPolicy, SETTINGS, policy="grpo", prompt_prefix="Solve: ", chat_template=True,
                    system_prompt="Answer after ####.")
    text = tokenizer.decode(prompt_ids(tokenizer, ["Is Tom a wumpus?"], chat)[0])
    assert text == tokenizer.apply_chat_template([{"role": "system", "content": "Answer after ####."},
                                                  {"role": "user", "content": "Solve: Is Tom a wumpus?"}],
                                                 add_generation_prompt=True, tokenize=False)
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match="has no chat template; set chat_template: false"):
        prompt_ids(tokenizer, ["q"], chat)


def test_single_seed_gains_take_mcnemars_interval():
    """One seed each: GRPO right on 6 problems the start model misses and no other difference, so the gain
    is McNemar's exact interval, 6 (2 pi - 1) / 40 for pi's Clopper-Pearson limits at 6 of 6."""
    rows = [{"model": "m", "dataset": "d", "policy": policy, "seed": 1, "id": i, "correct": i < right,
             "markers": 1, "length": 20, "hidden_ratio": math.nan}
            for policy, right in (("start", 20), ("grpo", 26)) for i in range(40)]
    s = summarize(pd.DataFrame(rows)).set_index("policy").loc["grpo"]
    low = 6 * (2 * 0.025 ** (1 / 6) - 1) / 40
    assert (s["gain_vs_start"], s["gain_vs_start_low"], s["gain_vs_start_high"]) == pytest.approx((0.15, low, 0.15))
