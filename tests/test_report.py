import math

import pandas as pd
import pytest

from soft_tokens.compression.report import summarize_compressor
from soft_tokens.cramming.report import capacity_table, findings, section, summarize, theoretical_capacity
from soft_tokens.latent.coconut.report import findings as coconut_findings
from soft_tokens.latent.coconut.report import section as coconut_section
from soft_tokens.latent.coconut.report import summarize as summarize_coconut
from soft_tokens.report.latex import escape

METRICS = ["teacher_forcing_convergence", "greedy_convergence", "greedy_convergence_bf16", "ce_text_bits", "ce_with_mem_bits",
           "information_gain_bits", "gain_tokens"] + [f"{k}_mismatch@{i}" for k in ("tf", "greedy") for i in (0, 1, 2)]


def sample(**kw):
    row = dict(model="SmolLM2-135M", corpus="prose", length=16, n_mem=1, variant="base", init="randn",
               optimizer="fast", placement="after_bos", margin=1.0, stop_accuracy=1.0, dtype="float32",
               teacher_forcing_convergence=1.0, greedy_convergence=0.0, greedy_convergence_bf16=0.0, ce_text_bits=40.0,
               ce_with_mem_bits=4.0, information_gain_bits=36.0, gain_tokens=10, steps=100, seconds=5.0,
               converged=True, status="converged", hidden_size=576, vocab_size=49152,
               **{f"{k}_mismatch@{i}": 0.0 for k in ("tf", "greedy") for i in (0, 1, 2)})
    row.update(kw)
    return row


def test_summary_means_by_hand_skipping_failed_samples():
    samples = pd.DataFrame([
        sample(teacher_forcing_convergence=1.0, greedy_convergence=0.5, **{"greedy_mismatch@0": 1.0}),
        sample(teacher_forcing_convergence=0.5, greedy_convergence=0.0, converged=False, status="max_steps"),
        sample(status="failed", converged=False, **{k: math.nan for k in METRICS}),
    ])
    s = summarize(samples).iloc[0]
    assert s["mean_teacher_forcing_convergence"] == pytest.approx(0.75)  # the failed sample is skipped
    assert s["mean_greedy_convergence"] == pytest.approx(0.25)
    assert s["greedy_mismatch@0"] == pytest.approx(0.5)
    assert s["converged_rate"] == pytest.approx(1 / 3)
    assert (s["n_samples"], s["n_failed"]) == (3, 1)


def stage_rows(stage, length, accuracies, greedy, capacity_tokens):
    return [sample(stage=stage, length=length, sample_id=i, teacher_forcing_convergence=a, greedy_convergence=g,
                   greedy_convergence_bf16=g,
                   information_gain_bits=10.0 * length, steps=50, capacity_tokens=capacity_tokens, threshold=0.99)
            for i, (a, g) in enumerate(zip(accuracies, greedy))]


def capacity_stages():
    """A search by hand: 16 and 32 pass, 64 fails (mean 0.95), 48 passes; capacity 48."""
    return pd.DataFrame(stage_rows(0, 16, [1, 1], [1, 1], 48) + stage_rows(1, 32, [1, 1], [1, 0.5], 48)
                        + stage_rows(2, 64, [1, 0.9], [1, 0.2], 48) + stage_rows(3, 48, [1, 0.99], [1, 0.98], 48))


def test_capacity_and_bound_by_hand():
    assert theoretical_capacity(576, 49152, 1) == pytest.approx(576 * 16 / 15.5849625, rel=1e-6)
    c = capacity_table(capacity_stages()).iloc[0]
    assert (c["capacity_tokens"], c["shortest_failed"], c["tokens_per_vector"]) == (48, 64, 48)
    assert c["lengths_tried"] == [16, 32, 64, 48] and c["n_samples"] == 2
    assert c["exact_greedy_tokens"] == 48  # mean greedy 1 at 16, 0.75 at 32, 0.6 at 64, 0.99 at 48 (bf16 too)
    stages = capacity_stages()
    stages.loc[stages["length"] == 48, "greedy_convergence_bf16"] = 0.9  # bf16 decoding misses at 48
    assert capacity_table(stages).iloc[0]["exact_greedy_tokens"] == 16
    assert c["mean_teacher_forcing_at_capacity"] == pytest.approx(0.995)
    assert c["mean_greedy_at_capacity"] == c["mean_greedy_bf16_at_capacity"] == pytest.approx(0.99)
    assert c["information_gain_bits_at_capacity"] == pytest.approx(480)
    assert c["utilisation"] == pytest.approx(48 / theoretical_capacity(576, 49152, 1))
    assert c["total_steps"] == 8 * 50


def test_latex_escape():
    assert escape("Llama-3.2-1B_bos 50% & #1") == r"Llama-3.2-1B\_bos 50\% \& \#1"


def early_error_summary(greedy, mismatch0):
    rows = [sample(greedy_convergence=greedy, **{"greedy_mismatch@0": mismatch0, "greedy_mismatch@1": mismatch0})]
    return summarize(pd.DataFrame(rows))


NO_SEARCH = capacity_table(pd.DataFrame(columns=["model", "corpus", "n_mem", "variant", "init", "optimizer"]))


def test_findings_state_the_early_token_failure_only_when_it_holds():
    s = early_error_summary(0.0, 1.0)
    text = " ".join(findings(s, NO_SEARCH))
    assert "the greedy decode already misses tokens 0--1 (mismatch@0 = 1.00" in text
    s = early_error_summary(0.995, 0.0)
    text = " ".join(findings(s, NO_SEARCH))
    assert "already misses" not in text and "greedy decoding reproduces the text as teacher forcing does" in text
    assert "decoded by the model in bf16 only 0.000: a stop margin of 1 logits does not cover" in text
    s = summarize(pd.DataFrame([sample(greedy_convergence=0.9, greedy_convergence_bf16=0.9)]))
    text = " ".join(findings(s, NO_SEARCH))
    assert "decoded in bf16 the same (0.900)" in text and "does not cover" not in text
    s = early_error_summary(0.9, 0.0)
    text = " ".join(findings(s, NO_SEARCH))
    assert "reproduces" not in text and "teacher forcing reaches 1.000 yet greedy decoding only 0.900" in text


def test_findings_compare_variants_and_capacity():
    s = summarize(pd.DataFrame([sample(variant="base", greedy_convergence=0.1),
                                sample(variant="bos", greedy_convergence=0.8)]))
    text = " ".join(findings(s, capacity_table(capacity_stages())))
    assert "Ignoring the BOS position (bos) raises greedy accuracy for SmolLM2-135M with fast at 16 tokens" in text
    assert ("reconstructs 48 tokens; 64 tokens failed: 48 tokens per vector, 8.1\\% of the bound of 591 tokens, "
            "480 bits of information gain per text; greedy decoding reaches 0.990 there (teacher forcing 0.995); "
            "decoded by the model in bf16 too (0.990).") in text


def test_render_table_has_the_seed_columns_and_escaped_names():
    s = summarize(pd.DataFrame([sample(variant=v) for v in ("base", "bos", "2leading")]
                               + [sample(variant="bos", init="mean", n_mem=2)]))
    tex = section(s, capacity_table(capacity_stages()))
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert (r"model & optimizer & sequence length & mismatch@0 & mismatch@1 & mismatch@2 & TF accuracy & "
            r"greedy accuracy & greedy (bf16) & steps \\") in tex
    assert r"SmolLM2-135M\_base & prose & fast (after\_bos, margin 1.0, float32) & 48 & 64 & 48 & 591 & 8.1 &" in tex
    assert r"\texttt{mean\_teacher\_forcing\_convergence}" in tex  # the seed's column names, in the caption
    rows = [line for line in tex.splitlines() if line.startswith("SmolLM2")]
    assert [r.split(" & ")[0] for r in rows[:4]] == [
        r"SmolLM2-135M\_base", r"SmolLM2-135M\_bos", r"SmolLM2-135M\_bos\_mean\_mem2", r"SmolLM2-135M\_2leading"]
    assert rows[0].endswith(r"& 1.000 & 0.000 & 0.000 & 100 \\")


def test_compressor_summary_is_one_row_per_model_arch_k_by_hand():
    rows = []
    for context, ce in ((0, 2.0), (1, 4.0)):
        for condition in ("no_context", "full_context", "estar", "compressor"):
            row = dict(model="m", arch="hyper", k=2, condition=condition, ce_nats=ce + len(condition),
                       topk_agreement=0.5 * context)
            if condition == "compressor":
                row.update(mse=0.1 * (context + 1), cosine=0.5, norm_rmse=1.0)
            rows.append(row)
    s = summarize_compressor(pd.DataFrame(rows))
    assert len(s) == 1
    r = s.iloc[0]
    assert r["ce_estar"] == pytest.approx(3.0 + 5) and r["ce_compressor"] == pytest.approx(3.0 + 10)
    assert r["topk_full_context"] == pytest.approx(0.25) and r["mse"] == pytest.approx(0.15)
    assert r["n_contexts"] == 2


def coconut_eval(method, stage, correct, generated, latent):
    return [dict(model="m", dataset="prosqa", method=method, stage=stage, id=i, answer="a", generated="",
                 predicted="", correct=c, latent_tokens=latent, generated_tokens=g, truncated=g == 12,
                 final_train_loss=0.5)
            for i, (c, g) in enumerate(zip(correct, generated))]


def test_coconut_summary_and_table_by_hand():
    evals = pd.DataFrame(coconut_eval("cot", 0, [True, False], [10, 12], 0)
                         + coconut_eval("coconut", 1, [False, False], [6, 6], 1)
                         + coconut_eval("coconut", 2, [True, True], [4, 6], 2)
                         + coconut_eval("nocot", 0, [False, True], [3, 3], 0))
    s = summarize_coconut(evals).set_index(["method", "stage"])
    assert s.loc[("cot", 0), "accuracy"] == 0.5 and s.loc[("cot", 0), "mean_tokens"] == 11
    assert s.loc[("cot", 0), "truncated_rate"] == 0.5 and s.loc[("nocot", 0), "truncated_rate"] == 0
    assert s.loc[("coconut", 2), "accuracy"] == 1.0 and s.loc[("coconut", 2), "mean_tokens"] == 5 + 2
    assert s["final"].to_dict() == {("coconut", 1): False, ("coconut", 2): True, ("cot", 0): True,
                                    ("nocot", 0): True}
    tex = coconut_section(summarize_coconut(evals))
    rows = tex[tex.index("Coconut: reasoning"):].splitlines()
    body = [r for r in rows if " & " in r and not r.startswith((" &", "method"))]
    # Table 1's order; Coconut at its last stage; methods not run are left out.
    assert body == [r"No-CoT & 50.0 & 3.0 \\", r"CoT & 50.0 & 11.0 \\", r"Coconut & 100.0 & 7.0 \\"]
    assert r"\multicolumn{2}{c}{prosqa}" in tex and "on 2 held-out problems" in tex
    assert (r"\item On prosqa, m with Coconut answers 2 of 2 test problems (100.0\%) with 7.0 tokens per answer; "
            r"CoT answers 1 (50.0\%) with 11.0 tokens, 1.6 times as many.") in tex
    nocurriculum = summarize_coconut(pd.concat([evals, pd.DataFrame(
        coconut_eval("coconut_nocurriculum", 2, [True, False], [4, 4], 2))]))
    assert coconut_findings(nocurriculum[nocurriculum["final"]])[1] == (
        "Without the curriculum, Coconut answers 1 of 2 on prosqa: 1 problem fewer than with it.")
