import math

import pytest
import torch

from soft_tokens.core.optimiser import (
    OptimSettings,
    PrefixTask,
    adamw_rows,
    learning_rate,
    logit_margins,
    min_margin,
    optimise_prefixes,
    optimise_with_restarts,
    weighted_loss_and_accuracy,
)
from soft_tokens.core.prefix import prefix_forward


def test_adamw_rows_matches_torch_adamw_with_rows_starting_at_different_steps():
    s = OptimSettings(lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    torch.manual_seed(0)
    start = torch.randn(2, 3, 4)
    grads = torch.randn(6, 2, 3, 4)
    # Reference: each row alone under torch.optim.AdamW; row 1 joins two steps late.
    reference = []
    for row, first_step in ((0, 0), (1, 2)):
        p = torch.nn.Parameter(start[row].clone())
        opt = torch.optim.AdamW([p], lr=s.lr, betas=s.betas, weight_decay=s.weight_decay, eps=s.eps)
        for g in grads[first_step:, row]:
            p.grad = g.clone()
            opt.step()
        reference.append(p.detach())
    p, m, v, t = start.clone(), torch.zeros_like(start), torch.zeros_like(start), torch.zeros(2, dtype=torch.long)
    for step, g in enumerate(grads):
        active = torch.tensor([True, step >= 2])
        idx = active.nonzero().flatten()
        rows = [p[idx], m[idx], v[idx], t[idx]]
        adamw_rows(*rows[:1], g[idx], *rows[1:], s)
        p[idx], m[idx], v[idx], t[idx] = rows
    torch.testing.assert_close(p, torch.stack(reference), atol=1e-6, rtol=1e-5)
    assert t.tolist() == [6, 4]


def make_tasks(tokenizer, embedding, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    tasks = []
    for key, length in enumerate(lengths):
        ids = torch.randint(3, len(tokenizer), (length,), generator=g)
        init = torch.randn(2, embedding.shape[1], generator=g) * embedding.std()
        tasks.append(PrefixTask(key, ids, torch.ones(length), init))
    return tasks


def run(model, tasks, **settings):
    results = {}
    optimise_prefixes(model, tasks, OptimSettings(**settings), lambda r: results.__setitem__(r.key, r))
    return results


FAST = dict(schedule="cosine", warmup_steps=3, margin=0.5)


@pytest.mark.parametrize("batch_size,protocol", [(2, {}), (4, {}), (2, FAST), (3, FAST)])
def test_batched_equals_one_at_a_time(tiny, batch_size, protocol):
    """Mixed lengths (padding) and, with batch < 4, samples joining as others leave: with the
    constant-lr protocol, and with a per-row cosine schedule, a margin stop and a BOS lead token."""
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [6, 4, 6, 5])
    if protocol:
        for t in tasks:
            t.lead_ids = torch.tensor([1])
    settings = dict(lr=0.05, max_steps=12, patience=5, **protocol)
    alone = run(model, tasks, batch_size=1, **settings)
    together = run(model, tasks, batch_size=batch_size, **settings)
    for key in alone:
        a, b = alone[key], together[key]
        assert (a.steps, a.status, a.best_accuracy) == (b.steps, b.status, b.best_accuracy)
        torch.testing.assert_close(a.vectors, b.vectors, atol=1e-5, rtol=1e-4)
        assert a.loss_curve == pytest.approx(b.loss_curve, rel=1e-4)


def test_best_vectors_reproduce_the_best_accuracy(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [6, 6], seed=3)
    for r in run(model, tasks, lr=0.1, max_steps=30, patience=30, batch_size=2).values():
        task = tasks[r.key]
        logits = prefix_forward(model, r.vectors[None], task.target_ids[None], torch.tensor([6]))["logits"]
        _, acc = weighted_loss_and_accuracy(logits, task.target_ids[None], task.weights[None])
        assert float(acc) == r.best_accuracy == max(r.accuracy_curve)
        assert r.steps == len(r.loss_curve) == len(r.accuracy_curve)


def test_stopping_rules(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [5, 5])
    r = run(model, tasks, lr=0.0, max_steps=50, patience=3, batch_size=2)
    # lr 0: accuracy never improves after step 1, so every sample stops after 1 + patience steps.
    assert all(x.status == "patience" and x.steps == 4 for x in r.values())
    r = run(model, tasks, lr=0.0, max_steps=2, patience=10, batch_size=2)
    assert all(x.status == "max_steps" and x.steps == 2 for x in r.values())


def test_a_sample_with_infinite_vectors_fails_alone(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [5, 5, 5])
    clean = run(model, tasks[:2], lr=0.05, max_steps=6, patience=6, batch_size=3)
    tasks[2].init[0, 0] = math.inf
    mixed = run(model, tasks, lr=0.05, max_steps=6, patience=6, batch_size=3)
    assert mixed[2].status == "failed" and "non-finite loss" in mixed[2].reason
    for key in clean:
        torch.testing.assert_close(clean[key].vectors, mixed[key].vectors, atol=1e-6, rtol=1e-5)


def test_hidden_matching_adds_its_term_and_pulls_the_states_together(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [5, 5])
    target = torch.randn(5, model.config.hidden_size)
    for t in tasks:
        t.target_hidden = target
    plain = run(model, tasks, lr=0.05, max_steps=1, batch_size=2)
    matched = run(model, tasks, lr=0.05, max_steps=1, batch_size=2, hidden_weight=2.0)
    for key in plain:
        task = tasks[key]
        hidden = prefix_forward(model, task.init[None], task.target_ids[None], torch.tensor([5]), [-1])["hidden"][-1]
        extra = 2.0 * (1 - torch.nn.functional.cosine_similarity(hidden[0], target, dim=-1)).mean()
        assert matched[key].loss_curve[0] == pytest.approx(plain[key].loss_curve[0] + float(extra), rel=1e-5)
    before = run(model, tasks, lr=0.05, max_steps=1, batch_size=2, hidden_weight=1.0, hidden_loss="mse")
    after = run(model, tasks, lr=0.05, max_steps=30, patience=30, batch_size=2, hidden_weight=1.0, hidden_loss="mse")
    for key in before:
        assert after[key].loss_curve[-1] < before[key].loss_curve[0]


def test_learning_rate_schedule_by_hand():
    s = OptimSettings(lr=1.0, schedule="cosine", warmup_steps=4, max_steps=14)
    t = torch.tensor([1, 2, 4, 9, 14, 20])
    # warm-up: t/4; then 0.5 * (1 + cos(pi * (t - 4) / 10)); 0 from max_steps on
    expected = [0.25, 0.5, 1.0, 0.5, 0.0, 0.0]
    assert learning_rate(t, s).tolist() == pytest.approx(expected, abs=1e-12)
    assert learning_rate(t, OptimSettings(lr=0.3)).tolist() == [0.3] * 6
    # with a floor: lr * (r + (1 - r) * 0.5 * (1 + cos(pi * t / 10))), r = 0.1 / 1.0; r from max_steps on
    floor = OptimSettings(lr=1.0, schedule="cosine", min_lr=0.1, max_steps=10)
    assert learning_rate(torch.tensor([5, 10, 12]), floor).tolist() == pytest.approx([0.55, 0.1, 0.1], abs=1e-12)
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'linear'"):
        learning_rate(t, OptimSettings(schedule="linear"))


def test_the_seed_schedule_is_transformers_cosine_with_min_lr():
    """The seed's schedule (lr 1e-2 to 1e-3 over 5000 steps, no warm-up): our t-th update takes the lr
    transformers' schedule gives after t scheduler steps (a Trainer's t-th update takes the one after
    t - 1: one step later, at most 3e-6 of lr per step here)."""
    from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

    s = OptimSettings(lr=0.01, schedule="cosine", min_lr=0.001, max_steps=5000)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=s.lr)
    schedule = get_cosine_with_min_lr_schedule_with_warmup(opt, 0, 5000, min_lr=0.001)
    steps = torch.tensor([1, 1000, 2500, 4999, 5000])
    expected = [s.lr * schedule.lr_lambdas[0](int(t)) for t in steps]
    assert learning_rate(steps, s).tolist() == pytest.approx(expected, rel=1e-9)


def test_keep_last_returns_the_last_step_and_stops_on_it(tiny):
    """keep="last" (the seed's): the result is the last step evaluated, not the best one, and a text that
    never reaches its stop accuracy runs its whole budget (no patience can stop it)."""
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [6, 6], seed=3)
    last = run(model, tasks, lr=3.0, max_steps=12, patience=2, batch_size=2, keep="last")
    best = run(model, tasks, lr=3.0, max_steps=12, patience=12, batch_size=2)
    for key, r in last.items():
        assert r.steps == 12 and r.best_accuracy == r.accuracy_curve[-1]
        assert best[key].best_accuracy == max(best[key].accuracy_curve)
    with pytest.raises(ValueError, match="keep must be 'best' or 'last'"):
        run(model, tasks, keep="first")


def test_logit_margins_by_hand():
    logits = torch.tensor([[[3.0, 1.0, 2.5], [0.0, 2.0, 2.0], [1.0, 4.0, 0.0]]])
    ids = torch.tensor([[0, 1, 0]])
    assert logit_margins(logits, ids).tolist() == [[0.5, 0.0, -3.0]]
    assert min_margin(logits, ids, torch.tensor([[1.0, 1.0, 0.0]])).tolist() == [0.0]  # position 2 not scored


def test_a_margin_keeps_optimising_past_accuracy_one(tiny):
    """One token per text (the vectors' own logits), which the tiny random model can fit."""
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [1, 1], seed=5)
    plain = run(model, tasks, lr=0.1, max_steps=300, patience=300, batch_size=2)
    margin = run(model, tasks, lr=0.1, max_steps=300, patience=300, batch_size=2, margin=0.05)
    assert min(r.best_margin for r in plain.values()) < 0.05  # so the margin has work to do
    for key, r in plain.items():
        assert r.status == "converged" and r.best_accuracy == 1.0 and r.best_margin > 0
        m = margin[key]
        assert m.status == "converged" and m.best_margin >= 0.05 and m.steps >= r.steps
        assert m.steps > r.steps or r.best_margin >= 0.05
        # the same trajectory: the margin run only stops later
        assert m.loss_curve[:r.steps] == pytest.approx(r.loss_curve)
    with pytest.raises(ValueError, match="stop margin must be >= 0"):
        run(model, tasks, margin=-1.0)


def test_stop_accuracy_below_one_stops_as_soon_as_it_is_reached(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [4], seed=5)
    r = run(model, tasks, lr=0.1, max_steps=200, patience=200, stop_accuracy=0.2)[0]
    assert r.status == "converged" and r.best_accuracy == 0.25  # one of four tokens: 0.25 >= 0.2
    assert max(r.accuracy_curve[:-1]) < 0.2 <= r.accuracy_curve[-1]


def restarted(model, tasks, batch_size, calls):
    def fresh_init(key, attempt, best):
        calls.append((key, attempt))
        assert best.steps == 3 * attempt  # the attempts so far, merged
        return torch.full_like(tasks[key].init, 0.01 * attempt)
    results = {}
    optimise_with_restarts(model, tasks, OptimSettings(lr=0.05, max_steps=3, patience=3, batch_size=batch_size), 2,
                           fresh_init, lambda r: results.__setitem__(r.key, r))
    return results


def test_restarts_start_stuck_samples_again_and_keep_the_best_attempt(tiny):
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [6, 5, 6], seed=2)
    calls = []
    together = restarted(model, tasks, 3, calls)
    assert sorted(calls) == [(k, a) for k in range(3) for a in (1, 2)]  # none converges in 3 steps: two restarts
    alone = restarted(model, tasks, 1, [])
    for key, r in together.items():
        assert r.steps == 9 and len(r.loss_curve) == 9 and r.status == "max_steps"
        assert r.best_accuracy == max(r.accuracy_curve)  # the best of all three attempts
        a = alone[key]
        assert (a.steps, a.best_accuracy) == (r.steps, r.best_accuracy)
        torch.testing.assert_close(a.vectors, r.vectors, atol=1e-5, rtol=1e-4)
    # a converged sample is never restarted
    one_token = make_tasks(tokenizer, model.get_input_embeddings().weight, [1], seed=5)
    calls = []
    results = {}
    optimise_with_restarts(model, one_token, OptimSettings(lr=0.1, max_steps=50, patience=50), 2,
                           lambda key, attempt, best: calls.append(attempt), lambda r: results.__setitem__(r.key, r))
    assert results[0].status == "converged" and calls == []
