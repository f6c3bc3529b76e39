import pytest
import torch

from soft_tokens.compression.converter import (
    build_converter,
    check_layer,
    evaluate_converter,
    extract_pairs,
    hidden_states,
    load_converter,
    load_pairs,
    nearest_token_hits,
    save_converter,
    save_pairs,
    split,
    token_subset,
    train_converter,
)
from soft_tokens.compression.spec import TrainConverter
from soft_tokens.core.io import fingerprint
from soft_tokens.core.models import load_model
from settings import settings

SETTINGS = dict(model="tiny", layer="-1", arch="linear", seed=0, hidden_dim=16, lr=0.05, weight_decay=0.0, epochs=60,
                batch_size=64, val_fraction=0.2)


def converter_settings(**changes):
    return settings(TrainConverter, SETTINGS, **changes)


def test_pairs_are_the_hidden_state_after_bos_and_the_embedding_row(tiny):
    model, tokenizer = tiny
    ids = torch.tensor([5, 700, 49151])
    bos = tokenizer.bos_token_id
    pairs = extract_pairs(model, ids, [-1, 1], bos, batch_size=2)
    for layer in (-1, 1):
        assert pairs[layer]["X"].shape == pairs[layer]["Y"].shape == (3, model.config.hidden_size)
        for i, t in enumerate(ids.tolist()):
            alone = model(input_ids=torch.tensor([[bos, t]]), output_hidden_states=True).hidden_states[layer][0, -1]
            torch.testing.assert_close(pairs[layer]["X"][i], alone, atol=1e-5, rtol=1e-5)
            assert torch.equal(pairs[layer]["Y"][i], model.get_input_embeddings().weight[t])
    no_bos = extract_pairs(model, ids[:1], [0], None, batch_size=1)[0]
    torch.testing.assert_close(no_bos["X"][0], model.get_input_embeddings().weight[5])  # layer 0 = embeddings


def test_layer_out_of_range_names_the_key(tiny):
    model, _ = tiny
    assert check_layer(model, -3) == -3 and check_layer(model, 2) == 2
    with pytest.raises(ValueError, match=r"converter.layers: layer 3 is out of range .* -3..2"):
        check_layer(model, 3)


def test_token_subset_and_split_are_seeded_and_disjoint():
    assert token_subset(10, None, 0).tolist() == list(range(10))
    sub = token_subset(1000, 50, 1)
    assert len(sub) == 50 and torch.equal(sub, token_subset(1000, 50, 1)) and not torch.equal(sub, token_subset(1000, 50, 2))
    train, held = split(100, 0.1, 0)
    assert len(held) == 10 and len(train) == 90 and not set(train.tolist()) & set(held.tolist())


def test_linear_converter_learns_an_exact_linear_map(tmp_path):
    """An exact linear map from ill-scaled inputs (an outlier and a tiny dimension, an offset)."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(8, 6, generator=g), torch.randn(6, generator=g)
    scale, offset = torch.tensor([1, 1, 1, 1, 1, 1, 50.0, 0.02]), 3.0
    target = lambda x: ((x - offset) / scale) @ w + b  # noqa: E731  (linear in x)
    x = torch.randn(512, 8, generator=g) * scale + offset
    net = train_converter(x, target(x), converter_settings(), tmp_path / "ckpt", {})
    fresh = torch.randn(64, 8, generator=g) * scale + offset  # held out: never trained on
    torch.testing.assert_close(net(fresh).detach(), target(fresh), atol=5e-3, rtol=1e-3)


def test_training_resumes_from_its_checkpoint(tmp_path):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 4, generator=g), torch.randn(128, 3, generator=g)
    run = fingerprint(SETTINGS, {})
    whole = train_converter(x, y, converter_settings(arch="mlp", epochs=4), tmp_path / "a", run)
    train_converter(x, y, converter_settings(arch="mlp", epochs=2), tmp_path / "b", run)  # killed after epoch 2 ...
    resumed = train_converter(x, y, converter_settings(arch="mlp", epochs=4), tmp_path / "b", run)  # ... and rerun
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)


def test_a_resumed_training_with_another_lr_starts_over(tmp_path, pairs_file):
    """The checkpoint of a run with other settings (or other pairs) is never resumed."""
    x, y = torch.randn(128, 4, generator=torch.Generator().manual_seed(0)), torch.randn(128, 3)
    old, new = converter_settings(arch="mlp", epochs=2), converter_settings(arch="mlp", epochs=4, lr=0.01)
    train_converter(x, y, old, tmp_path / "ckpt", fingerprint(old.params(), {"pairs": pairs_file}))
    resumed = train_converter(x, y, new, tmp_path / "ckpt", fingerprint(new.params(), {"pairs": pairs_file}))
    fresh = train_converter(x, y, new, tmp_path / "fresh", fingerprint(new.params(), {"pairs": pairs_file}))
    for p, q in zip(fresh.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    assert torch.load(tmp_path / "ckpt")["fingerprint"]["params"]["lr"] == 0.01
    before = fingerprint(new.params(), {"pairs": pairs_file})
    pairs_file.write_bytes(b"other pairs")  # same settings, other input: another run
    assert fingerprint(new.params(), {"pairs": pairs_file}) != before


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.safetensors"
    path.write_bytes(b"pairs")
    return path


def test_nearest_token_hits_by_hand():
    embedding = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    pred = torch.tensor([[2.0, 0.1], [0.9, 1.0], [-1.0, -0.2]])
    # Nearest rows: 0 (right); 1 then 0 (wrong at top-1, right at top-2); 2 (right).
    top1, top2 = nearest_token_hits(pred, embedding, torch.tensor([0, 0, 2]), k=2)
    assert top1.tolist() == [True, False, True] and top2.tolist() == [True, True, True]


def test_converter_of_another_width_is_refused(tmp_path):
    net = build_converter("linear", 4, 4, 8)
    meta = dict(model="other", layer=-1, arch="linear", in_dim=4, out_dim=4, hidden_dim=8)
    save_converter(net, tmp_path / "c.pt", meta)
    assert isinstance(load_converter(tmp_path / "c.pt", 4)[1], torch.nn.Linear)
    with pytest.raises(ValueError, match=r"maps 4-d hidden states \(model other\), but this model's hidden size is 32"):
        load_converter(tmp_path / "c.pt", 32)


def test_empty_pair_file_is_an_error(tmp_path):
    empty = {"X": torch.zeros(0, 4), "Y": torch.zeros(0, 4), "token_ids": torch.zeros(0, dtype=torch.long)}
    save_pairs(empty, tmp_path / "p.safetensors", {"layer": -1})
    with pytest.raises(ValueError, match="holds no pairs"):
        load_pairs(tmp_path / "p.safetensors")


def test_evaluation_of_a_perfect_converter():
    embedding = torch.eye(4)
    ids = torch.tensor([0, 3])
    out = evaluate_converter(torch.nn.Identity(), embedding[ids], embedding[ids], ids, embedding, k=2)
    assert out["mse"] == [0.0, 0.0] and out["cosine"] == pytest.approx([1.0, 1.0])
    assert out["top1"] == out["topk"] == [True, True] and out["token_id"] == [0, 3]


def test_a_non_finite_loss_stops_training_with_the_fix(tmp_path):
    x, y = torch.randn(64, 4), torch.randn(64, 3)
    y[3, 1] = float("nan")
    with pytest.raises(FloatingPointError, match="converter linear epoch 1: loss is nan; lower converter.lr"):
        train_converter(x, y, converter_settings(), tmp_path / "ckpt", {})


@pytest.mark.parametrize("arch", ["llama", "gpt2", "qwen2", "gpt_neox"])
def test_hidden_states_without_the_head_are_the_full_models(tiny_arch, arch):
    model, _ = load_model(tiny_arch(arch), "cpu", "float32")
    ids = torch.randint(0, 1000, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(input_ids=ids, output_hidden_states=True).hidden_states
        body = hidden_states(model, input_ids=ids)
    assert len(body) == len(full) == model.config.num_hidden_layers + 1
    assert all(torch.equal(a, b) for a, b in zip(body, full))
