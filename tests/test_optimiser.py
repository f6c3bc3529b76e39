import math

import pytest
import torch

from soft_tokens.core.optimiser import (
    OptimSettings,
    PrefixTask,
    adamw_rows,
    optimise_prefixes,
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


@pytest.mark.parametrize("batch_size", [2, 4])
def test_batched_equals_one_at_a_time(tiny, batch_size):
    """Mixed lengths (padding) and, with batch 2, samples joining as others leave."""
    model, tokenizer = tiny
    tasks = make_tasks(tokenizer, model.get_input_embeddings().weight, [6, 4, 6, 5])
    settings = dict(lr=0.05, max_steps=12, patience=5)
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
