import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from soft_tokens.compression import compressor
from soft_tokens.compression.compressor import (
    architecture,
    build_compressor,
    compressor_loss,
    distillation_kl,
    evaluate_conditions,
    load_compressor,
    regression_loss,
    run_with_context,
    save_compressor,
    teacher_logits,
    train_compressor,
)
from soft_tokens.compression.estar import build_estar, context_pairs, load_estar, save_estar, teacher_states, with_estar
from soft_tokens.compression.spec import BuildEstar, TrainCompressor
from soft_tokens.core.io import fingerprint
from soft_tokens.core.models import load_model
from soft_tokens.data.corpora import embedded_prose
from settings import settings

SETTINGS = dict(model="tiny", arch="qattn", device="cpu", dtype="float32", width=16, heads=2, layers=1, ffn_dim=32,
                lr=1e-3, weight_decay=0.0, epochs=3, batch_size=2, seed=0, regression_weight=1.0, kl_weight=1.0,
                temperature=2.0, hidden_weight=0.5, attention_weight=0.0, match_layers=[-1])
ESTAR = dict(model="tiny", seed=0, device="cpu", dtype="float32", train_contexts=2, held_out_contexts=1,
             estar_train_contexts=2, ctx_len=10, follow_len=5, k=2, context_layer=-1, match_layer=1, match_weight=0.5,
             match_loss="mse", lr=0.1, max_steps=50, batch_size=3)
TRAIN = torch.tensor([1, 2])


def compressor_settings(**changes):
    return settings(TrainCompressor, SETTINGS, **changes)


def made_estar(model, tokenizer, **changes):
    """Three contexts (one held out, then two to train on), e* for each, and the tensors compressors read."""
    pairs = context_pairs(embedded_prose(100), tokenizer, 2, 1, 10, 5)
    inits = {i: torch.randn(2, model.config.hidden_size, generator=torch.Generator().manual_seed(i)) * 0.02
             for i in range(3)}
    built = build_estar(model, pairs, settings(BuildEstar, ESTAR, **changes), inits)
    return pairs, built, {
        "estar": torch.stack([b["estar"] for b in built]),
        "has_estar": torch.tensor([True, True, False]),  # the last training context trains on KL alone
        "held_out": torch.tensor([True, False, False]),
        "context_hidden": torch.stack([b["context_hidden"] for b in built]),
        "teacher_final": torch.stack([b["teacher_final"] for b in built]),
        "context": torch.tensor([b["context"] for b in built]),
        "follow": torch.tensor([b["follow"] for b in built]),
    }


@pytest.fixture(scope="module")
def estar_data(tiny):
    return made_estar(*tiny)


class Constant(torch.nn.Module):
    """A compressor that emits the same vectors whatever the context."""

    def __init__(self, vectors: torch.Tensor):
        super().__init__()
        self.vectors = torch.nn.Parameter(vectors.clone())

    def forward(self, context):
        return self.vectors.expand(len(context), -1, -1)


def trained(model, data, s, checkpoint, run):
    torch.manual_seed(0)
    net = build_compressor("qattn", model.config.hidden_size, 2, architecture(s))
    return train_compressor(model, net, data, TRAIN, s, checkpoint, run)


def after_vectors(model, vectors, follow):
    """Logits predicting `follow` after `vectors`, from the model's own embeddings."""
    embeds = torch.cat([vectors, model.get_input_embeddings()(follow[:-1])])
    return model(inputs_embeds=embeds[None]).logits[0, len(vectors) - 1 :]


def test_context_pairs_hold_out_the_end_and_spread_training_windows_before_it(tiny):
    _, tokenizer = tiny
    corpus = embedded_prose(100)
    stream = [t for text in corpus["text"] for t in tokenizer(text, add_special_tokens=False).input_ids]
    pairs = context_pairs(corpus, tokenizer, 3, 2, 10, 5)  # windows of 9 + 5 = 14 stream tokens
    bos, end = tokenizer.bos_token_id, len(stream)
    assert [p["split"] for p in pairs] == ["held_out", "held_out", "train", "train", "train"]
    held_start = end - 2 * 14
    assert [p["start"] for p in pairs] == [held_start, held_start + 14, 0, round((held_start - 14) / 2),
                                           held_start - 14]
    for p in pairs:
        assert p["context"] == [bos] + stream[p["start"] : p["start"] + 9]
        assert p["follow"] == stream[p["start"] + 9 : p["start"] + 14]
    train_end = max(p["start"] + 14 for p in pairs if p["split"] == "train")
    assert train_end <= held_start  # no held-out token is trained on
    with pytest.raises(ValueError, match="2 held-out windows of 5000 \\+ 5 tokens and 3 distinct training windows need "
                                         "more; lower estar.train_contexts"):
        context_pairs(corpus, tokenizer, 3, 2, 5000, 5)


def test_estar_goes_to_every_held_out_pair_and_evenly_spread_training_ones(tiny):
    _, tokenizer = tiny
    pairs = context_pairs(embedded_prose(100), tokenizer, 5, 2, 10, 5)
    assert with_estar(pairs, 0) == [0, 1]
    assert with_estar(pairs, 3) == [0, 1, 2, 4, 6]
    with pytest.raises(ValueError, match="estar.estar_train_contexts is 6 but there are 5 training contexts"):
        with_estar(pairs, 6)


def test_teacher_states_are_the_full_forward_at_the_predicting_positions_batched_or_not(tiny):
    model, _ = tiny
    context, follow = torch.tensor([[1, 40, 41, 42], [1, 60, 61, 62], [1, 70, 71, 72]]), torch.tensor(
        [[50, 51, 52], [53, 54, 55], [56, 57, 58]])
    ctx_states, follow_states = teacher_states(model, context, follow, [-1], batch_size=2)[-1]
    assert ctx_states.shape == (3, 4, 32) and follow_states.shape == (3, 3, 32)
    for i in range(3):
        ids = torch.cat([context[i], follow[i, :-1]])[None]
        full = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
        torch.testing.assert_close(ctx_states[i], full[:4])
        torch.testing.assert_close(follow_states[i], full[3:])


def test_estar_predicts_the_follow_text_better_than_no_context(tiny, estar_data):
    """e* must carry something of the context: the follow_text is likelier after it than after BOS alone."""
    model, tokenizer = tiny
    _, built, data = estar_data
    d = model.config.hidden_size
    assert data["estar"].shape == (3, 2, d) and data["context_hidden"].shape == (3, 10, d)
    assert [b["has_estar"] for b in built] == [True] * 3 and [b["split"] for b in built] == ["held_out", "train", "train"]
    for b in built:
        assert b["status"] in {"converged", "max_steps", "patience"}
        assert b["reason"] == ("" if b["status"] == "converged" else f"stopped at max_steps={ESTAR['max_steps']}")
    bos = torch.tensor([[tokenizer.bos_token_id]])
    for i in range(3):
        follow = data["follow"][i : i + 1]
        alone = model(input_ids=torch.cat([bos, follow[:, :-1]], dim=1)).logits[0]
        after_estar = after_vectors(model, data["estar"][i], follow[0])
        assert float(F.cross_entropy(after_estar, follow[0])) < float(F.cross_entropy(alone, follow[0])) - 0.05


def test_regression_loss_by_hand():
    a, one = torch.tensor([[[1.0, 0.0]]]), torch.tensor([True])
    assert float(regression_loss(a, a, one)) == 0.0
    assert float(regression_loss(torch.tensor([[[0.0, 1.0]]]), a, one)) == pytest.approx(1.0)  # orthogonal, same norm
    assert float(regression_loss(2 * a, a, one)) == pytest.approx(1.0)  # same direction, norm off by 100%
    # Opposite (cosine term 2) with a third of the norm (norm term 4/9), averaged with an exact row.
    pred, target = torch.tensor([[[-1.0, 0.0], [0.0, 3.0]]]), torch.tensor([[[3.0, 0.0], [0.0, 3.0]]])
    assert float(regression_loss(pred, target, one)) == pytest.approx((2 + 4 / 9) / 2)
    # A context without e* counts zero: the norm error of the first context (1.0) over a batch of two,
    # then only the exact second one, then none at all.
    pred, target = torch.cat([2 * a, a]), torch.cat([a, a])
    assert float(regression_loss(pred, target, torch.tensor([True, False]))) == pytest.approx(0.5)
    assert float(regression_loss(pred, target, torch.tensor([False, True]))) == 0.0
    assert float(regression_loss(pred, target, torch.tensor([False, False]))) == 0.0


def test_stored_teacher_states_give_the_full_context_logits(tiny, estar_data):
    """The KL target from the last hidden states build_estar stored equals the teacher run on the full context."""
    model, _ = tiny
    _, _, data = estar_data
    with torch.no_grad():
        cached = teacher_logits(model, data["teacher_final"])
        direct = run_with_context(model, data["context"], data["follow"], [], False)["logits"]
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-5)


def test_kl_by_hand():
    """Uniform teacher, student (3/4, 1/4): KL = ln(4/3) / 2; the logits scaled by T give the same
    distributions, so the T^2 factor alone changes the value."""
    teacher, student = torch.zeros(1, 1, 2), torch.tensor([[[math.log(3), 0.0]]])
    assert float(distillation_kl(student, teacher, 1.0)) == pytest.approx(math.log(4 / 3) / 2)
    assert float(distillation_kl(2 * student, teacher, 2.0)) == pytest.approx(4 * math.log(4 / 3) / 2)
    logits = torch.randn(2, 5, 11)
    assert float(distillation_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(distillation_kl(torch.randn(2, 5, 11), logits, 2.0)) > 0.01


def test_compressor_loss_is_zero_when_the_student_reads_what_the_teacher_reads(tiny_dir):
    """A one-token context (BOS) and a compressor emitting BOS's embedding: student and teacher run the
    same sequence, so every term is 0, which holds only if both score the same positions."""
    model, tokenizer = load_model(tiny_dir, "cpu", "float32")
    model.set_attn_implementation("eager")
    bos = tokenizer.bos_token_id
    embedding = model.get_input_embeddings().weight[bos].detach()
    follow = torch.tensor([[40, 41, 42, 43, 44], [700, 701, 702, 703, 704]])
    batch = {"context": torch.full((2, 1), bos), "follow": follow, "context_hidden": torch.zeros(2, 1, 32),
             "estar": embedding.expand(2, 1, -1), "has_estar": torch.tensor([True, True])}
    batch["teacher_final"] = teacher_states(model, batch["context"], batch["follow"], [-1], 2)[-1][1]
    s = compressor_settings(attention_weight=2.0, match_layers=[1, -1])
    total, terms = compressor_loss(model, Constant(embedding[None]), batch, s)
    assert set(terms) == {"regression", "kl", "hidden", "attention"}
    assert all(value == pytest.approx(0.0, abs=1e-5) for value in terms.values())
    assert float(total.detach()) == pytest.approx(0.0, abs=1e-5)
    off = Constant(embedding[None] + 0.05 * torch.randn(1, 32, generator=torch.Generator().manual_seed(0)))
    total, terms = compressor_loss(model, off, batch, s)
    assert all(value > 1e-6 for value in terms.values())
    expected = terms["regression"] + terms["kl"] + 0.5 * terms["hidden"] + 2.0 * terms["attention"]
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("arch", ["hyper", "qattn"])
def test_compressors_emit_k_vectors(arch):
    net = build_compressor(arch, 32, 3, SETTINGS)
    assert net(torch.randn(4, 7, 32)).shape == (4, 3, 32)


def test_k_below_one_and_unknown_arch_are_errors():
    with pytest.raises(ValueError, match="estar.k must be at least 1"):
        build_compressor("hyper", 32, 0, SETTINGS)
    with pytest.raises(ValueError, match="compressor.archs: unknown arch 'lstm'"):
        build_compressor("lstm", 32, 2, SETTINGS)


@pytest.mark.parametrize("arch", ["hyper", "qattn"])
def test_saved_compressor_is_rebuilt_from_its_own_architecture(arch, tmp_path):
    """The config may change after training (here: width 64, 2 layers); the checkpoint still rebuilds
    the net that was trained, and refuses a model of another hidden size."""
    torch.manual_seed(0)
    net = build_compressor(arch, 32, 2, SETTINGS).eval()
    save_compressor(net, tmp_path / "c.pt", arch, 32, 2, SETTINGS)
    later = {**SETTINGS, "width": 64, "layers": 2}
    with pytest.raises(RuntimeError):
        build_compressor(arch, 32, 2, later).load_state_dict(torch.load(tmp_path / "c.pt")["net"])
    loaded = load_compressor(tmp_path / "c.pt", 32)
    assert type(loaded) is type(net) and not loaded.training
    context = torch.randn(3, 10, 32)
    with torch.no_grad():
        assert torch.equal(loaded(context), net(context))
    with pytest.raises(ValueError, match="trained for width 32, the model has 64; train a compressor"):
        load_compressor(tmp_path / "c.pt", 64)


def training_loss_before_and_after(model, data, s, checkpoint):
    """The training loss of an untrained compressor and of one trained with `s`; the trained one."""
    batch = {key: value[TRAIN] for key, value in data.items()}
    torch.manual_seed(0)
    untrained = build_compressor("qattn", model.config.hidden_size, 2, architecture(s))
    with torch.no_grad():
        before = float(compressor_loss(model, untrained, batch, s)[0])
    net = trained(model, data, s, checkpoint, fingerprint(s.params(), {}))
    with torch.no_grad():
        after = float(compressor_loss(model, net, batch, s)[0])
    return before, after, net


def test_training_lowers_the_training_loss(tiny, estar_data, tmp_path):
    before, after, _ = training_loss_before_and_after(tiny[0], estar_data[2], compressor_settings(lr=1e-2, epochs=5),
                                                      tmp_path / "ckpt")
    assert after < 0.9 * before


def test_a_killed_run_resumes_and_a_changed_run_starts_over(tiny, estar_data, tmp_path, caplog):
    model, _ = tiny
    _, _, data = estar_data
    run = fingerprint(SETTINGS, {})
    whole = trained(model, data, compressor_settings(), tmp_path / "a", run)
    trained(model, data, compressor_settings(epochs=1), tmp_path / "b", run)  # killed after epoch 1
    with caplog.at_level("INFO", logger="soft_tokens.core.training"):
        resumed = trained(model, data, compressor_settings(), tmp_path / "b", run)
    epochs = [r.getMessage().split(":")[0] for r in caplog.records if "mean training loss" in r.getMessage()]
    assert epochs == ["compressor epoch 2", "compressor epoch 3"]
    for p, q in zip(whole.parameters(), resumed.parameters()):
        torch.testing.assert_close(p, q)
    faster = compressor_settings(lr=1e-2)
    trained(model, data, compressor_settings(lr=1e-2, epochs=1), tmp_path / "c", fingerprint(faster.params(), {}))
    caplog.clear()
    with caplog.at_level("INFO", logger="soft_tokens.core.training"):
        restarted = trained(model, data, compressor_settings(), tmp_path / "c", run)
    assert "written with other settings or data: starting over" in caplog.text
    epochs = [r.getMessage().split(":")[0] for r in caplog.records if "mean training loss" in r.getMessage()]
    assert epochs == ["compressor epoch 1", "compressor epoch 2", "compressor epoch 3"]
    for p, q in zip(whole.parameters(), restarted.parameters()):
        torch.testing.assert_close(p, q)


def test_a_non_finite_loss_stops_with_the_fix_and_keeps_finished_epochs(tiny, estar_data, tmp_path, monkeypatch):
    model, _ = tiny
    _, _, data = estar_data
    real, calls = compressor.compressor_loss, []

    def nan_in_epoch_two(*args):
        calls.append(None)
        loss, terms = real(*args)
        return (loss * float("nan") if len(calls) > 1 else loss), terms

    monkeypatch.setattr(compressor, "compressor_loss", nan_in_epoch_two)
    run = fingerprint(SETTINGS, {})
    with pytest.raises(FloatingPointError, match="compressor epoch 2: loss is nan; lower compressor.lr"):
        trained(model, data, compressor_settings(), tmp_path / "ckpt", run)
    saved = torch.load(tmp_path / "ckpt")
    assert saved["epoch"] == 0 and saved["fingerprint"] == run


def test_evaluation_matches_independent_forwards(tiny, estar_data):
    """Each condition's CE and top-k agreement, recomputed from plain forwards of the model."""
    model, _ = tiny
    _, _, data = estar_data
    torch.manual_seed(0)
    net = build_compressor("qattn", model.config.hidden_size, 2, SETTINGS).eval()
    rows = evaluate_conditions(model, net, data, torch.tensor([2, 0]), top_k=3)
    assert [r["condition"] for r in rows] == ["no_context", "full_context", "estar", "compressor"] * 2
    assert [r["context"] for r in rows] == [2] * 4 + [0] * 4
    with torch.no_grad():
        for i, got in zip([2, 0], (rows[:4], rows[4:])):
            context, follow = data["context"][i], data["follow"][i]
            pred = net(data["context_hidden"][i : i + 1])[0]
            logits = {
                "no_context": model(input_ids=torch.cat([context[:1], follow[:-1]])[None]).logits[0],
                "full_context": model(input_ids=torch.cat([context, follow[:-1]])[None]).logits[0, len(context) - 1 :],
                "estar": after_vectors(model, data["estar"][i], follow),
                "compressor": after_vectors(model, pred, follow),
            }
            teacher_top = logits["full_context"].argmax(-1)
            for row in got:
                mine = logits[row["condition"]]
                assert row["ce_nats"] == pytest.approx(float(F.cross_entropy(mine, follow)), rel=1e-5)
                agree = [int(t) in mine[j].topk(3).indices.tolist() for j, t in enumerate(teacher_top)]
                assert row["topk_agreement"] == pytest.approx(sum(agree) / len(agree))
            estar = data["estar"][i]
            assert got[3]["mse"] == pytest.approx(float(((pred - estar) ** 2).mean()), rel=1e-5)
            cosines = (pred * estar).sum(-1) / (pred.norm(dim=-1) * estar.norm(dim=-1))
            assert got[3]["cosine"] == pytest.approx(float(cosines.mean()), rel=1e-5)
            norm_gap = pred.norm(dim=-1) - estar.norm(dim=-1)
            assert got[3]["norm_rmse"] == pytest.approx(float(norm_gap.pow(2).mean().sqrt()), rel=1e-5)


def test_estar_layer_out_of_range_names_the_key(tiny):
    model, tokenizer = tiny
    pairs = context_pairs(embedded_prose(100), tokenizer, 1, 1, 10, 5)
    with pytest.raises(ValueError, match="estar.match_layer: layer 7 is out of range"):
        build_estar(model, pairs, settings(BuildEstar, ESTAR, match_layer=7), {0: torch.zeros(2, model.config.hidden_size)})


def test_estar_files_hold_what_the_compressors_read(tmp_path, estar_data):
    _, built, data = estar_data
    built = [*built[:2], {**built[2], "has_estar": False}]  # the last context without e*: stored as zeros
    save_estar(built, 2, data["estar"].shape[2], {"model": "tiny", "k": 2}, tmp_path / "e.safetensors",
               tmp_path / "e.parquet")
    loaded = load_estar(tmp_path / "e.safetensors")
    for key in ("has_estar", "held_out", "context_hidden", "teacher_final", "context", "follow"):
        assert torch.equal(loaded[key], data[key]), key
    assert torch.equal(loaded["estar"][:2], data["estar"][:2]) and not loaded["estar"][2].any()
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert table["split"].tolist() == ["held_out", "train", "train"] and table["has_estar"].tolist() == [True, True, False]
    assert (table["model"] == "tiny").all() and (table["k"] == 2).all()


def test_the_compressor_trains_in_bfloat16_as_the_paper_config_runs_it(tiny_dir, tmp_path):
    """config/paper.yaml loads the LM in bf16 (the compressor keeps float32 weights, the cached teacher
    states are float32): training must run, its loss fall, and evaluation give finite numbers."""
    model, tokenizer = load_model(tiny_dir, "cpu", "bfloat16")
    _, _, data = made_estar(model, tokenizer, dtype="bfloat16", max_steps=3)
    before, after, net = training_loss_before_and_after(model, data, compressor_settings(dtype="bfloat16", lr=1e-2,
                                                                                         epochs=4), tmp_path / "ckpt")
    assert math.isfinite(after) and after < before
    rows = evaluate_conditions(model, net, data, torch.tensor([0]), 2)
    assert len(rows) == 4 and all(math.isfinite(r["ce_nats"]) for r in rows)
