from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from soft_tokens.core.curves import TrainingCurve
from soft_tokens.core.seeding import generator, seed_for
from soft_tokens.core.models import load_model
from soft_tokens.core.training import (autocast, casts_once, check_finite, eager_attention_on_cpu, load_trainable,
                                       lora_merged, train_epochs, with_lora)

CPU = torch.device("cpu")


def test_bf16_autocast_keeps_float32_master_weights_and_gradients(tiny_dir):
    """The GPU config trains under bfloat16 autocast: low-precision activations, float32 optimiser state."""
    model, _ = load_trainable(tiny_dir, "cpu")
    ids = torch.tensor([[1, 40, 41, 42, 43, 44, 45]])
    with torch.no_grad():
        full = model(input_ids=ids).logits
    with autocast(CPU, "bfloat16"):
        out = model(input_ids=ids, labels=ids)
    assert out.logits.dtype == torch.bfloat16 and full.dtype == torch.float32
    torch.testing.assert_close(out.logits.float(), full, atol=0.02, rtol=0.05)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    params = list(model.parameters())
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in params)
    assert all(bool(torch.isfinite(p.grad).all()) for p in params)
    assert any(bool(p.grad.abs().sum() > 0) for p in params)


@pytest.mark.parametrize("dtype", ["float32", "auto"])
def test_float32_autocast_is_a_no_op(tiny_dir, dtype):
    model, _ = load_trainable(tiny_dir, "cpu")
    ids = torch.tensor([[1, 40, 41, 42]])
    with torch.no_grad():
        plain = model(input_ids=ids).logits
        with autocast(CPU, dtype):
            assert not torch.is_autocast_enabled("cpu")
            logits = model(input_ids=ids).logits
    assert logits.dtype == torch.float32
    assert torch.equal(logits, plain)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_check_finite_names_where_and_the_fix(bad):
    with pytest.raises(FloatingPointError, match=rf"^converter epoch 3: loss is {bad}; lower converter.lr$"):
        check_finite(torch.tensor(bad), "converter epoch 3", "lower converter.lr")


def test_check_finite_passes_finite_losses():
    for value in (0.0, -2.5, 1e30):
        assert check_finite(torch.tensor(value), "where", "fix") is None


def test_seed_folds_keys_in_order():
    assert seed_for(7) == 7
    assert seed_for(7, 3) == 7 * 1_000_003 + 3
    assert seed_for(7, 3, 2) == (7 * 1_000_003 + 3) * 1_000_003 + 2
    assert seed_for(7, 3) != seed_for(3, 7)


def test_generator_draws_equal_a_generator_seeded_by_hand():
    by_hand = torch.Generator().manual_seed(7 * 1_000_003 + 3)
    assert torch.equal(torch.randn(5, generator=generator(7, 3)), torch.randn(5, generator=by_hand))
    assert not torch.equal(torch.randn(5, generator=generator(7, 3)), torch.randn(5, generator=generator(7, 4)))


def test_accumulating_single_examples_takes_the_step_one_batch_takes(tmp_path):
    """Four batches of one with accumulation 4 = one batch of four: the same SGD step (and 8 examples
    make two steps either way)."""
    x, y = torch.randn(8, 3, generator=torch.Generator().manual_seed(0)), torch.randn(8, 1)

    def run(batch_size, accumulation, name):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        batches = lambda epoch: (slice(i, i + batch_size) for i in range(0, 8, batch_size))  # noqa: E731
        loss = lambda rows: (torch.nn.functional.mse_loss(net(x[rows]), y[rows]), len(x[rows]))  # noqa: E731
        return train_epochs(net, opt, loss, batches, 1, tmp_path / f"{name}.pt", {}, "test", "fix",
                            accumulation=accumulation).weight.detach()

    assert torch.allclose(run(4, 1, "batched"), run(1, 4, "accumulated"), atol=1e-6)
    assert not torch.allclose(run(4, 1, "batched"), run(1, 1, "unaccumulated"), atol=1e-4)


def test_an_epoch_whose_last_step_breaks_the_weights_is_not_checkpointed(tmp_path):
    """The loss of the step that makes a weight inf is finite; the epoch must still not be saved."""
    x, y = torch.ones(2, 3), torch.ones(2, 1)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(net.parameters(), lr=1e38)  # one step of this size overflows float32
    batches = lambda epoch: [slice(0, 2)]  # noqa: E731
    loss = lambda rows: (torch.nn.functional.mse_loss(net(x[rows]) * 1e3, y[rows]), 2)  # noqa: E731
    with pytest.raises(FloatingPointError, match=r"^test epoch 1: \d weight tensors hold NaN/inf \(weight, ...\); "
                                                 r"lower test.lr$"):
        train_epochs(net, opt, loss, batches, 1, tmp_path / "run.pt", {}, "test", "lower test.lr")
    assert not (tmp_path / "run.pt").exists()


def test_training_curves_record_every_epoch_and_survive_a_resume(tmp_path):
    """The curve is rewritten after every epoch (a running job can be followed) and a resumed run keeps
    the epochs it did before it was killed."""
    torch.manual_seed(0)
    x, y = torch.randn(16, 3), torch.randn(16, 2)
    curve = TrainingCurve(tmp_path / "curve.parquet", {"model": "m", "arch": "linear"})

    def run(epochs):
        net = torch.nn.Linear(3, 2)
        opt = torch.optim.AdamW(net.parameters(), lr=0.1)
        return train_epochs(net, opt, lambda idx: (torch.nn.functional.mse_loss(net(x[idx]), y[idx]), len(idx)),
                            lambda epoch: [torch.arange(8), torch.arange(8, 16)], epochs, tmp_path / "c.pt",
                            {"run": 1}, "test", "lower lr", curve=curve)

    run(2)
    first = pd.read_parquet(tmp_path / "curve.parquet")
    assert list(first["epoch"]) == [1, 2] and set(first["model"]) == {"m"} and set(first["arch"]) == {"linear"}
    run(4)  # resumes after epoch 2 from the checkpoint: the first two rows are the first run's
    whole = pd.read_parquet(tmp_path / "curve.parquet")
    assert list(whole["epoch"]) == [1, 2, 3, 4]
    assert whole["train_loss"].iloc[:2].tolist() == first["train_loss"].tolist()
    assert whole["train_loss"].iloc[3] < whole["train_loss"].iloc[0]


def test_tensorboard_gets_the_curves_when_asked_and_says_how_to_install_it(tmp_path, monkeypatch):
    import sys
    import types

    from soft_tokens.core import curves

    monkeypatch.setenv(curves.TENSORBOARD, str(tmp_path / "tb"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not installed
    with pytest.raises(ImportError, match="pip install tensorboard, or set tensorboard: false"):
        TrainingCurve(tmp_path / "c.parquet", {"model": "m"}).write([{"epoch": 1, "train_loss": 0.5}])
    logged = []

    class Writer:
        def __init__(self, folder):
            logged.append(("folder", folder))

        def add_scalar(self, name, value, step):
            logged.append((name, value, step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    curve = TrainingCurve(tmp_path / "c.parquet", {"model": "m"})
    curve.write([{"epoch": 1, "train_loss": 0.5}])
    curve.write([{"epoch": 1, "train_loss": 0.5}, {"epoch": 2, "train_loss": 0.25}])
    assert logged == [("folder", str(tmp_path / "tb" / "model=m")), ("train_loss", 0.5, 1), ("train_loss", 0.25, 2)]


def casts_in(model, ids) -> int:
    """The dtype conversions one forward makes (autocast's casts of weights and activations)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        model(input_ids=ids)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_to_copy")


def test_casts_once_casts_each_frozen_weight_once_per_autocast_region_with_autocasts_numbers(tiny_dir):
    model, _ = load_model(tiny_dir, "cpu", "float32")  # frozen, as every evaluated model
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad(), autocast(CPU, "bfloat16"):
        plain = model(input_ids=ids).logits
        recast = casts_in(model, ids)
        with casts_once(model, None, model):  # None skipped, a model given twice restored once
            once = model(input_ids=ids).logits
            cached = casts_in(model, ids)
    assert torch.equal(once, plain)
    weights = sum(1 for name, p in model.named_parameters() if p.dim() == 2 and "embed" not in name)
    assert recast - cached >= weights  # every linear weight was cast again without it, none with it
    assert not any(p.requires_grad for p in model.parameters())
    with pytest.raises(RuntimeError, match="casts_once is for decoding under torch.no_grad"):
        with casts_once(model):
            pass


def test_eager_attention_on_cpu_inside_the_block_alone_with_fused_attentions_logits_and_gradients(tiny_dir):
    model, _ = load_trainable(tiny_dir, "cpu")
    ids = torch.tensor([[0, 0, 40, 41, 42, 43], [1, 40, 41, 42, 43, 44]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding: the masked path
    weight = model.model.layers[0].self_attn.q_proj.weight

    def logits_and_gradient():
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits[mask.bool()]
        logits.logsumexp(-1).mean().backward()
        return logits.detach(), weight.grad.clone()

    fused = logits_and_gradient()
    with eager_attention_on_cpu(model, None):
        assert model.config._attn_implementation == "eager"
        eager = logits_and_gradient()
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(eager, fused)
    model.set_attn_implementation("eager")  # a model not on sdpa (the compressor's attention matching) is left alone
    with eager_attention_on_cpu(model):
        pass
    assert model.config._attn_implementation == "eager"


def test_a_merged_lora_computes_the_adapted_model_and_leaves_the_base_weights_bit_for_bit(tiny_dir):
    model, _ = load_model(tiny_dir, "cpu", "float32")
    lora = SimpleNamespace(lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj", "down_proj"])
    model = with_lora(model, lora)
    ids = torch.tensor([[1, 40, 41, 42, 43]])
    with torch.no_grad():
        base_logits = model(input_ids=ids).logits  # B = 0: the adapter adds nothing yet
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
        base = {name: p.clone() for name, p in model.named_parameters() if ".base_layer." in name}
        adapted = model(input_ids=ids).logits
        with lora_merged(model):
            merged = model(input_ids=ids).logits
            assert not torch.equal(next(p for n, p in model.named_parameters() if n in base and "q_proj" in n),
                                   next(base[n] for n in base if "q_proj" in n))
        after = model(input_ids=ids).logits
    assert (adapted - base_logits).abs().max() > 0.01
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)
    assert torch.equal(after, adapted)
    assert len(base) == 6 and all(torch.equal(p, base[name]) for name, p in model.named_parameters() if name in base)
