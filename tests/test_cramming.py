import json
import math

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from soft_tokens.core.io import parquet_metadata, write_parquet
from soft_tokens.core.optimiser import OptimSettings, PrefixTask, optimise_prefixes
from soft_tokens.cramming import job as cramming
from soft_tokens.cramming.capacity import next_length, run_search
from soft_tokens.cramming.job import convention, evaluate, init_vectors, position_weights, run_job, task_for
from soft_tokens.cramming.spec import Capacity, Cram
from soft_tokens.data.corpora import embedded_prose
from settings import settings


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
    # the seed's `random` init: U[0, 1) whatever the embedding's scale, so mean 1/2, variance 1/12 and
    # norm sqrt(d / 3) (~13.9 at SmolLM2's d = 576, against token embeddings of norm ~1)
    uniform = init_vectors("uniform", torch.randn(1000, 576) * 0.02, 200, g())
    assert 0 <= float(uniform.min()) and float(uniform.max()) < 1
    assert (float(uniform.mean()), float(uniform.var())) == (pytest.approx(0.5, abs=0.005), pytest.approx(1 / 12, rel=0.02))
    assert float(uniform.norm(dim=1).mean()) == pytest.approx((576 / 3) ** 0.5, rel=0.01)
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


HIDDEN_CAPACITY = dict(lr=0.01, betas=[0.9, 0.9], weight_decay=0.01, schedule="constant", warmup_steps=0, min_lr=0.0,
                       temperature=1.0, init="randn", init_scale=1.0, text="second_half", placement="first",
                       stop_accuracy=1.0, margin=0.0, restarts=0, keep="best", dtype="float32")
FAST = dict(HIDDEN_CAPACITY, lr=0.1, schedule="cosine", warmup_steps=2, init="grid", placement="after_bos", margin=0.5,
            restarts=1)


CAPACITY = dict(threshold=0.99, start_length=4, max_length=12, resolution=2, stage_steps=5, restarts=0, n_samples=2)
SETTINGS = dict(model="tiny", corpus="prose", length=8, n_mem=1, variant="base", init="randn", optimizer="hidden_capacity",
                n_samples=3, draw_length=False, seed=1337, device="cpu", dtype="float32", leading_tokens=2,
                leading_weight=3.0, max_steps=6, patience=6, batch_size=2, curve_points=4, capacity=CAPACITY)


def cram_settings(optimizer_settings=HIDDEN_CAPACITY, **changes):
    return settings(Cram, SETTINGS, optimizer_settings=optimizer_settings, **changes)


def test_after_bos_gives_bos_as_input_and_scores_the_rest():
    ids = torch.tensor([1, 50, 60, 70])
    init = torch.zeros(1, 4)
    # 2leading weights the first two tokens the vectors predict (1 and 2), not BOS, which they never do
    for variant, expected in (("base", [0, 1, 1, 1]), ("bos", [0, 1, 1, 1]), ("2leading", [0, 3, 3, 1])):
        task, weights = task_for(0, ids, init, cram_settings(FAST, variant=variant))
        assert weights.tolist() == expected
        assert task.lead_ids.tolist() == [1] and task.target_ids.tolist() == [50, 60, 70]
        assert task.weights.tolist() == expected[1:]
    task, weights = task_for(0, ids, init, cram_settings(HIDDEN_CAPACITY))
    assert task.lead_ids is None and task.target_ids.tolist() == [1, 50, 60, 70] and weights.tolist() == [1] * 4
    assert "placement 'after_bos': BOS is given as an ordinary input token" in convention(cram_settings(FAST))


@pytest.fixture(scope="module")
def prose(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "prose.parquet"
    write_parquet(embedded_prose(60), path)
    return path


def test_job_writes_results_with_convention_and_resumes_after_a_kill(tiny_dir, prose, tmp_path, monkeypatch):
    out, vec = tmp_path / "job.parquet", tmp_path / "job.safetensors"
    real = cramming.optimise_with_restarts

    def killed_after_first(model, tasks, settings, restarts, restart_from, on_result, desc):
        def once(result):
            on_result(result)
            raise KeyboardInterrupt  # the job dies after persisting one sample
        real(model, tasks, settings, restarts, restart_from, once, desc)

    monkeypatch.setattr(cramming, "optimise_with_restarts", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_dir, prose, out, vec, cram_settings())
    finished = json.loads(next((tmp_path / "job.parquet.partial").glob("sample_*.json")).read_text())

    seen = []
    monkeypatch.setattr(cramming, "optimise_with_restarts",
                        lambda model, tasks, *a, **k: seen.extend(t.key for t in tasks) or real(model, tasks, *a, **k))
    df = run_job(tiny_dir, prose, out, vec, cram_settings())
    assert finished["sample_id"] not in seen and len(seen) == 2
    assert not (tmp_path / "job.parquet.partial").exists()
    assert sorted(df["sample_id"]) == [0, 1, 2]
    again = df[df["sample_id"] == finished["sample_id"]].iloc[0]
    assert list(again["curve_loss"]) == finished["curve_loss"]
    assert parquet_metadata(out)["convention"] == convention(cram_settings())
    assert pd.read_parquet(out).shape[0] == 3 and (df["n_tokens"] == 8).all()


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])  # Llama-3 in config/paper.yaml, Pythia in hidden_capacity
def test_job_batched_equals_one_at_a_time(tiny_arch, arch, prose, tmp_path):
    folder = tiny_arch(arch)
    a = run_job(folder, prose, tmp_path / "a.parquet", tmp_path / "a.safetensors", cram_settings(batch_size=3))
    b = run_job(folder, prose, tmp_path / "b.parquet", tmp_path / "b.safetensors", cram_settings(batch_size=1))
    cols = ["sample_id", "steps", "teacher_forcing_convergence", "greedy_convergence", "status"]
    pd.testing.assert_frame_equal(a[cols], b[cols])


def test_job_marks_a_non_finite_sample_failed_and_keeps_the_others(tiny_dir, prose, tmp_path, monkeypatch):
    real = cramming.init_vectors

    def poisoned(init, embedding, n_mem, generator):
        v = real(init, embedding, n_mem, generator)
        return v if poisoned.calls.append(1) or len(poisoned.calls) != 2 else v * math.inf
    poisoned.calls = []
    monkeypatch.setattr(cramming, "init_vectors", poisoned)
    df = run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", cram_settings())
    bad = df[df["sample_id"] == 1].iloc[0]
    assert bad["status"] == "failed" and "non-finite loss" in bad["failure_reason"]
    assert math.isnan(bad["greedy_convergence"]) and math.isnan(bad["teacher_forcing_convergence"])
    assert (df[df["sample_id"] != 1]["status"] != "failed").all()


def test_a_partial_job_written_with_other_settings_is_not_reused(tiny_dir, prose, tmp_path):
    partial = tmp_path / "j.parquet.partial"
    partial.mkdir()
    (partial / "fingerprint.json").write_text(json.dumps(cram_settings(dict(HIDDEN_CAPACITY, lr=0.5)).params()))
    (partial / "sample_0.json").write_text("{}")  # would break the job if it were reused
    df = run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", cram_settings())
    assert sorted(df["sample_id"]) == [0, 1, 2] and df["steps"].notna().all()


def test_a_partial_job_made_from_another_corpus_is_not_reused(tiny_dir, prose, tmp_path, monkeypatch):
    """Same settings, other input data: the fingerprint holds the identities of model and corpus."""
    other = tmp_path / "other.parquet"
    write_parquet(embedded_prose(61), other)
    real = cramming.optimise_with_restarts

    def killed_after_first(model, tasks, settings, restarts, restart_from, on_result, desc):
        def once(result):
            on_result(result)
            raise KeyboardInterrupt
        real(model, tasks, settings, restarts, restart_from, once, desc)

    monkeypatch.setattr(cramming, "optimise_with_restarts", killed_after_first)
    with pytest.raises(KeyboardInterrupt):
        run_job(tiny_dir, other, tmp_path / "j.parquet", tmp_path / "j.safetensors", cram_settings())
    seen = []
    monkeypatch.setattr(cramming, "optimise_with_restarts",
                        lambda model, tasks, *a, **k: seen.extend(t.key for t in tasks) or real(model, tasks, *a, **k))
    run_job(tiny_dir, prose, tmp_path / "j.parquet", tmp_path / "j.safetensors", cram_settings())
    assert sorted(seen) == [0, 1, 2]  # nothing of the other corpus's run was kept


def test_evaluate_after_bos_agrees_with_the_optimiser(tiny):
    """BOS given before the vector: TF accuracy is over tokens 1.., greedy keeps BOS and decodes the rest."""
    model, _ = tiny
    ids = torch.tensor([1, 50, 60, 70, 80, 90])
    init = torch.randn(1, model.config.hidden_size, generator=torch.Generator().manual_seed(1)) * 0.02
    task, w = task_for(0, ids, init, cram_settings(FAST))
    results = []
    optimise_prefixes(model, [task], OptimSettings(lr=0.1, max_steps=20), results.append)
    m = evaluate(model, results[0].vectors, ids, w, "base", "after_bos")
    assert m["teacher_forcing_accuracy"] == results[0].best_accuracy
    assert m["greedy_ids"][0] == 1 and len(m["greedy_ids"]) == 6
    assert math.isnan(m["greedy_mismatch@0"]) and math.isnan(m["tf_mismatch@0"])
    right = sum(a == b for a, b in zip(m["greedy_ids"][1:], ids[1:].tolist()))
    assert m["greedy_convergence"] == pytest.approx(right / 5)


def test_capacity_search_doubles_then_bisects_by_hand():
    passes = lambda limit: lambda length: 1.0 if length <= limit else 0.5  # noqa: E731
    for limit, resolution, expected in ((40, 4, [8, 16, 32, 64, 48, 40, 44]), (3, 4, [8, 4]), (3, 1, [8, 4, 2, 3]),
                                        (100, 4, [8, 16, 32, 64, 100])):
        history, tried = {}, []
        while (length := next_length(history, 0.99, 8, 100, resolution)) is not None:
            tried.append(length)
            history[length] = passes(limit)(length)
        assert tried == expected, limit
    assert next_length({8: 0.5, 4: 0.5, 2: 0.5}, 0.99, 8, 100, 1) is None  # nothing shorter than 2 tokens


def search_settings(**changes):
    return settings(Capacity, SETTINGS, optimizer_settings=FAST, **changes)


def test_capacity_search_warm_starts_and_resumes_after_a_kill(tiny_dir, prose, tmp_path, monkeypatch):
    from soft_tokens.cramming import capacity

    passing = {4, 8}  # the stub decides which lengths pass, so the path of the search is known
    real = capacity.optimise_with_restarts
    inits = {}

    def stub(model, tasks, settings, restarts, restart_from, on_result, desc):
        length = len(tasks[0].target_ids) + 1
        inits[length] = [t.init.clone() for t in tasks]

        def result(r):
            r.best_accuracy = 1.0 if length in passing else 0.5
            on_result(r)
        real(model, tasks, settings, restarts, restart_from, result, desc)

    monkeypatch.setattr(capacity, "optimise_with_restarts", stub)
    out, vec = tmp_path / "c.parquet", tmp_path / "c.safetensors"
    monkeypatch.setattr(capacity, "evaluate", lambda *a, **k: kill() if len(inits) == 3 else real_evaluate(*a, **k))
    real_evaluate = evaluate

    def kill():
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_search(tiny_dir, prose, out, vec, search_settings())
    assert sorted(inits) == [4, 8, 12]  # killed while evaluating the third stage
    first_inits = dict(inits)
    inits.clear()
    monkeypatch.setattr(capacity, "evaluate", real_evaluate)
    df = run_search(tiny_dir, prose, out, vec, search_settings())
    assert sorted(inits) == [10, 12]  # stages 4 and 8 were kept; 12 is redone, then the bisection
    assert list(df.drop_duplicates("stage")["length"]) == [4, 8, 12, 10]
    assert (df["capacity_tokens"] == 8).all()
    assert list(df.drop_duplicates("stage")["warm_start_length"]) == [0, 4, 8, 8]
    stage_8 = load_file(vec)
    for i, init in enumerate(inits[12]):  # warm-started from the vectors found at 8 tokens
        torch.testing.assert_close(init, stage_8[f"sample_{i}"])
    torch.testing.assert_close(first_inits[12][0], inits[12][0])


def test_a_search_longer_than_the_texts_names_its_key(tiny_dir, prose, tmp_path):
    long = search_settings(capacity=dict(CAPACITY, max_length=5000))
    with pytest.raises(ValueError, match=r"lower cramming.capacity.max_length, or give corpus 'prose' longer "
                                         r"passages \(corpora.prose.passage_words"):
        run_search(tiny_dir, prose, tmp_path / "c.parquet", tmp_path / "c.safetensors", long)
