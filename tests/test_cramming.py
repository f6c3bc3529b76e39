import json
import math

import pandas as pd
import pytest
import torch

from soft_tokens.core.io import parquet_metadata, write_parquet
from soft_tokens.core.optimiser import OptimSettings, PrefixTask, optimise_prefixes
from soft_tokens.cramming import job as cramming
from soft_tokens.cramming.job import CONVENTION, evaluate, init_vectors, position_weights, run_job
from soft_tokens.data.corpora import embedded_prose


def test_position_weights_per_variant():
    assert position_weights("base", 4, 2, 3.0).tolist() == [1, 1, 1, 1]
    assert position_weights("bos", 4, 2, 3.0).tolist() == [0, 1, 1, 1]
    assert position_weights("2leading", 4, 2, 3.0).tolist() == [3, 3, 1, 1]
    with pytest.raises(ValueError, match="cramming.variants: unknown variant 'eos'"):
        position_weights("eos", 4, 2, 3.0)


def test_init_vectors():
    emb = torch.arange(12.0).reshape(4, 3)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert init_vectors("mean", emb, 2, g()).tolist() == [[4.5, 5.5, 6.5]] * 2
    token = init_vectors("token", emb, 2, g())
    assert all(any(torch.equal(row, e) for e in emb) for row in token)
    randn = init_vectors("randn", torch.randn(1000, 64) * 0.02, 200, g())
    assert float(randn.std()) == pytest.approx(0.02, rel=0.05)
    assert torch.equal(init_vectors("randn", emb, 2, g()), init_vectors("randn", emb, 2, g()))
    with pytest.raises(ValueError, match="cramming.inits"):
        init_vectors("zeros", emb, 1, g())


def test_evaluate_agrees_with_the_optimiser(tiny):
    model, _ = tiny
    ids = torch.tensor([1, 50, 60, 70, 80, 90])
    for variant in ("base", "bos"):
        w = position_weights(variant, 6, 2, 3.0)
        init = torch.randn(1, model.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.02
        results = []
        optimise_prefixes(model, [PrefixTask(0, ids, w, init)], OptimSettings(lr=0.1, max_steps=20), results.append)
        m = evaluate(model, results[0].vectors, ids, w, variant)
        assert m["teacher_forcing_accuracy"] == results[0].best_accuracy
        assert len(m["greedy_ids"]) == 6
        if variant == "bos":  # BOS is given, never decoded, and never scored
            assert m["greedy_ids"][0] == 1
            assert math.isnan(m["greedy_mismatch@0"]) and math.isnan(m["tf_mismatch@0"])
        greedy_acc = sum(a == b for a, b in zip(m["greedy_ids"][1:], ids[1:].tolist()))
        assert m["greedy_convergence"] == pytest.approx((greedy_acc + (variant == "base") * (m["greedy_ids"][0] == 1))
                                                       / (6 if variant == "base" else 5))


def job_params(**overrides):
    p = dict(model="tiny", corpus="prose", length=8, n_mem=1, variant="base", init="randn", n_samples=3,
             draw_length=False, seed=1337, device="cpu", dtype="float32", leading_tokens=2, leading_weight=3.0,
             lr=0.01, betas=[0.9, 0.9], weight_decay=0.01, max_steps=6, patience=6, batch_size=2, curve_points=4)
    return {**p, **overrides}


@pytest.fixture(scope="module")
def prose(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prose.parquet"
    write_parquet(embedded_prose(60), path)
    return path


def test_job_writes_results_with_convention_and_resumes_after_a_kill(tiny_dir, prose, tmp_path, monkeypatch):
    out, vec = tmp_path / "job.parquet", tmp_path / "job.safetensors"
    real = cramming.optimise_prefixes

    def killed_after_first(model, tasks, settings, on_result, desc):
        def once(result):
            on_result(result)
            raise KeyboardInterrupt  # the job dies after persisting one sample
        real(model, tasks, settings, once, desc)

    monkeypatch.setattr(cramming, "optimise_prefixes", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_dir, prose, out, vec, job_params())
    finished = json.loads(next((tmp_path / "job.parquet.partial").glob("sample_*.json")).read_text())

    seen = []
    monkeypatch.setattr(cramming, "optimise_prefixes",
                        lambda model, tasks, *a, **k: seen.extend(t.key for t in tasks) or real(model, tasks, *a, **k))
    df = run_job(tiny_dir, prose, out, vec, job_params())
    assert finished["sample_id"] not in seen and len(seen) == 2
    assert not (tmp_path / "job.parquet.partial").exists()
    assert sorted(df["sample_id"]) == [0, 1, 2]
    again = df[df["sample_id"] == finished["sample_id"]].iloc[0]
    assert list(again["curve_loss"]) == finished["curve_loss"]
    assert parquet_metadata(out)["convention"] == CONVENTION
    assert pd.read_parquet(out).shape[0] == 3 and (df["n_tokens"] == 8).all()


def test_job_batched_equals_one_at_a_time(tiny_dir, prose, tmp_path):
    a = run_job(tiny_dir, prose, tmp_path / "a.parquet", tmp_path / "a.safetensors", job_params(batch_size=3))
    b = run_job(tiny_dir, prose, tmp_path / "b.parquet", tmp_path / "b.safetensors", job_params(batch_size=1))
    cols = ["sample_id", "steps", "teacher_forcing_convergence", "greedy_convergence", "status"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_job_marks_a_non_finite_sample_failed_and_keeps_the_others(tiny_dir, prose, tmp_path, monkeypatch):
    real = cramming.init_vectors

    def poisoned(init, embedding, n_mem, generator):
        v = real(init, embedding, n_mem, generator)
        return v if poisoned.calls.append(1) or len(poisoned.calls) != 2 else v * math.inf
    poisoned.calls = []
    monkeypatch.setattr(cramming, "init_vectors", poisoned)
    df = run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", job_params())
    bad = df[df["sample_id"] == 1].iloc[0]
    assert bad["status"] == "failed" and "non-finite loss" in bad["failure_reason"]
    assert math.isnan(bad["greedy_convergence"]) and math.isnan(bad["teacher_forcing_convergence"])
    assert (df[df["sample_id"] != 1]["status"] != "failed").all()


def test_a_partial_job_written_with_other_settings_is_not_reused(tiny_dir, prose, tmp_path):
    partial = tmp_path / "j.parquet.partial"
    partial.mkdir()
    (partial / "fingerprint.json").write_text(json.dumps(job_params(lr=0.5)))
    (partial / "sample_0.json").write_text("{}")  # would break the job if it were reused
    df = run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", job_params())
    assert sorted(df["sample_id"]) == [0, 1, 2] and df["steps"].notna().all()


def test_a_partial_job_made_from_another_corpus_is_not_reused(tiny_dir, prose, tmp_path, monkeypatch):
    """Same settings, other input data: the fingerprint holds the identities of model and corpus."""
    other = tmp_path / "other.parquet"
    write_parquet(embedded_prose(61), other)
    real = cramming.optimise_prefixes

    def killed_after_first(model, tasks, settings, on_result, desc):
        def once(result):
            on_result(result)
            raise KeyboardInterrupt
        real(model, tasks, settings, once, desc)

    monkeypatch.setattr(cramming, "optimise_prefixes", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_dir, other, tmp_path / "j.parquet", tmp_path / "j.safetensors", job_params())
    seen = []
    monkeypatch.setattr(cramming, "optimise_prefixes",
                        lambda model, tasks, *a, **k: seen.extend(t.key for t in tasks) or real(model, tasks, *a, **k))
    run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", job_params())
    assert sorted(seen) == [0, 1, 2]  # nothing of the other corpus's run was kept
