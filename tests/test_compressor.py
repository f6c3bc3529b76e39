import pytest
import torch

from soft_tokens.compressor import (
    build_compressor,
    distillation_kl,
    evaluate_conditions,
    regression_loss,
    run_with_context,
    run_with_prefix,
    train_compressor,
)
from soft_tokens.data import embedded_prose
from soft_tokens.estar import build_estar, context_pairs, teacher_states
from soft_tokens.optimiser import prefix_forward

SETTINGS = dict(width=16, heads=2, layers=1, ffn_dim=32, lr=1e-3, weight_decay=0.0, epochs=3, batch_size=2, seed=0,
                regression_weight=1.0, kl_weight=1.0, temperature=2.0, hidden_weight=0.5, attention_weight=0.0,
                match_layers=[-1])
ESTAR = dict(context_layer=-1, match_layer=1, match_weight=0.5, match_loss="cosine", lr=0.05, max_steps=4,
             batch_size=3)


@pytest.fixture(scope="module")
def estar_data(tiny):
    model, tokenizer = tiny
    pairs = context_pairs(embedded_prose(100), tokenizer, 3, 10, 5)
    inits = [torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(i)) * 0.02
             for i in range(3)]
    built = build_estar(model, pairs, ESTAR, inits)
    return pairs, built, {
        "estar": torch.stack([b["estar"] for b in built]),
        "context_hidden": torch.stack([b["context_hidden"] for b in built]),
        "context": torch.tensor([b["context"] for b in built]),
        "follow": torch.tensor([b["follow"] for b in built]),
    }


def test_context_pairs_follow_the_context(tiny):
    _, tokenizer = tiny
    pairs = context_pairs(embedded_prose(100), tokenizer, 2, 10, 5)
    ids = tokenizer(embedded_prose(100)["text"][0], add_special_tokens=False).input_ids
    assert pairs[0]["context"] == [tokenizer.bos_token_id] + ids[:9] and pairs[0]["follow"] == ids[9:14]
    assert pairs[1]["context"] == [tokenizer.bos_token_id] + ids[14:23] and pairs[1]["follow"] == ids[23:28]
    with pytest.raises(ValueError, match="only 0 windows of 5000 \\+ 5 tokens; lower estar.n_contexts"):
        context_pairs(embedded_prose(100), tokenizer, 2, 5000, 5)


def test_teacher_states_are_the_full_forward_at_the_predicting_positions(tiny):
    model, _ = tiny
    context, follow = torch.tensor([1, 40, 41, 42]), torch.tensor([50, 51, 52])
    ctx_states, follow_states = teacher_states(model, context, follow, [-1])[-1]
    full = model(input_ids=torch.tensor([[1, 40, 41, 42, 50, 51]]), output_hidden_states=True).hidden_states[-1][0]
    torch.testing.assert_close(ctx_states, full[:4])
    torch.testing.assert_close(follow_states, full[3:])


def test_estar_records_vectors_and_context_states(tiny, estar_data):
    model, _ = tiny
    _, built, data = estar_data
    d = model.config.hidden_size
    assert data["estar"].shape == (3, 2, d) and data["context_hidden"].shape == (3, 10, d)
    assert all(b["steps"] == 4 for b in built) or any(b["accuracy"] == 1.0 for b in built)


def test_prefix_paths_agree_with_the_optimiser(tiny, estar_data):
    model, _ = tiny
    _, _, data = estar_data
    view = run_with_prefix(model, data["estar"], data["follow"], [], False)
    logits, _ = prefix_forward(model, data["estar"], data["follow"], torch.tensor([5, 5, 5]))
    torch.testing.assert_close(view["logits"], logits)


def test_regression_loss_by_hand():
    a = torch.tensor([[[1.0, 0.0]]])
    assert float(regression_loss(a, a)) == 0.0
    assert float(regression_loss(torch.tensor([[[0.0, 1.0]]]), a)) == pytest.approx(1.0)  # orthogonal, same norm
    assert float(regression_loss(2 * a, a)) == pytest.approx(1.0)  # same direction, norm off by 100%


def test_kl_is_zero_when_student_equals_teacher():
    logits = torch.randn(2, 5, 11)
    assert float(distillation_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_kl(torch.randn(2, 5, 11), logits, 2.0)) > 0


@pytest.mark.parametrize("arch", ["hyper", "qattn"])
def test_compressors_emit_k_vectors(arch):
    net = build_compressor(arch, 32, 3, SETTINGS)
    assert net(torch.randn(4, 7, 32)).shape == (4, 3, 32)


def test_k_below_one_and_unknown_arch_are_errors():
    with pytest.raises(ValueError, match="estar.k must be at least 1"):
        build_compressor("hyper", 32, 0, SETTINGS)
    with pytest.raises(ValueError, match="compressor.archs: unknown arch 'lstm'"):
        build_compressor("lstm", 32, 2, SETTINGS)


def test_training_resumes_and_evaluation_has_four_conditions(tiny, estar_data, tmp_path):
    model, _ = tiny
    _, _, data = estar_data
    train, held = torch.tensor([0, 1]), torch.tensor([2])
    d = model.config.hidden_size
    torch.manual_seed(0)
    whole = train_compressor(model, build_compressor("qattn", d, 2, SETTINGS), data, train, SETTINGS, tmp_path / "a")
    torch.manual_seed(0)
    net = build_compressor("qattn", d, 2, SETTINGS)
    train_compressor(model, net, data, train, {**SETTINGS, "epochs": 1}, tmp_path / "b")  # killed after epoch 1
    torch.manual_seed(0)
    resumed = train_compressor(model, build_compressor("qattn", d, 2, SETTINGS), data, train, SETTINGS, tmp_path / "b")
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    rows = evaluate_conditions(model, whole, data, held, top_k=1)
    assert [r["condition"] for r in rows] == ["no_context", "full_context", "estar", "compressor"]
    assert rows[1]["topk_agreement"] == 1.0  # the teacher agrees with itself
    full = run_with_context(model, data["context"][2:], data["follow"][2:], [], False)["logits"][0]
    assert rows[1]["ce_nats"] == pytest.approx(float(torch.nn.functional.cross_entropy(full, data["follow"][2])))
    assert {"mse", "cosine", "norm_rmse"} <= set(rows[3])


def test_estar_layer_out_of_range_names_the_key(tiny):
    model, tokenizer = tiny
    pairs = context_pairs(embedded_prose(100), tokenizer, 1, 10, 5)
    with pytest.raises(ValueError, match="estar.match_layer: layer 7 is out of range"):
        build_estar(model, pairs, {**ESTAR, "match_layer": 7}, [torch.zeros(2, model.config.hidden_size)])
