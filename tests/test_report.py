import math

import pandas as pd
import pytest
import torch

from soft_tokens.compression.report import compressor_findings, summarize_compressor
from soft_tokens.cramming.report import capacity_table, findings, section, summarize, theoretical_capacity
from soft_tokens.report import stats
from soft_tokens.report.findings import all_block, key_block, key_findings
from soft_tokens.report.latex import escape

METRICS = ["teacher_forcing_convergence", "greedy_convergence", "greedy_convergence_bf16", "ce_text_bits", "ce_with_mem_bits",
           "information_gain_bits", "gain_tokens"] + [f"{k}_mismatch@{i}" for k in ("tf", "greedy") for i in (0, 1, 2)]


def sample(**kw):
    row = dict(sample_id=0, model="SmolLM2-135M", corpus="prose", length=16, n_mem=1, variant="base", init="randn",
               optimizer="fast", placement="after_bos", margin=1.0, stop_accuracy=1.0, keep="best", text="start",
               protocol_init="grid", step_budget=150, restarts=2, dtype="float32",
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


def early_error_samples(greedy, mismatch0, texts=8):
    return pd.DataFrame([sample(sample_id=i, greedy_convergence=greedy,
                                **{"greedy_mismatch@0": mismatch0, "greedy_mismatch@1": mismatch0})
                         for i in range(texts)])


def findings_of(samples, search=None):
    return findings(summarize(samples), NO_SEARCH if search is None else search, samples)


NO_SEARCH = capacity_table(pd.DataFrame(columns=["model", "corpus", "n_mem", "variant", "init", "optimizer"]))


def test_findings_state_the_early_token_failure_only_when_it_holds():
    """Eight texts, all right under teacher forcing: the bounded interval of 8 of 8 is Wilson's [0.676, 1]."""
    text = " ".join(findings_of(early_error_samples(0.0, 1.0)))
    assert ("teacher forcing reaches 1.000 (95\\% CI 0.676--1.000, n = 8) but greedy decoding only 0.000 (95\\% CI "
            "0.000--0.324, n = 8) (TF - greedy +1.000 (95\\% CI +0.351 to +1.000, paired over the texts)): the greedy "
            "decode already misses tokens 0--1 (greedy mismatch@0 = 1.00, greedy mismatch@1 = 1.00; teacher-forced "
            "mismatch@0 = 0.00, mismatch@1 = 0.00)") in text
    text = " ".join(findings_of(early_error_samples(0.0, 1.0, texts=1)))  # one text proves nothing
    assert "are within noise of each other: TF - greedy +1.000 (95\\% CI -0.587 to +1.000" in text
    text = " ".join(findings_of(early_error_samples(0.995, 0.0)))
    assert "already misses" not in text and "greedy decoding reproduces the text as teacher forcing does" in text
    assert ("decoded by the model in bf16 only 0.000 (95\\% CI 0.000--0.324, n = 8): a stop margin of 1 logits "
            "does not cover") in text
    text = " ".join(findings_of(pd.DataFrame([sample(sample_id=i, greedy_convergence=1.0,
                                                     greedy_convergence_bf16=0.9 if i == 0 else 1.0)
                                              for i in range(8)])))
    assert "decoded in bf16 within noise of that (0.988" in text and "does not cover" not in text
    text = " ".join(findings_of(early_error_samples(0.5, 0.0)))
    assert "reproduces" not in text and "teacher forcing reaches 1.000 (95\\% CI 0.676--1.000, n = 8) yet greedy" in text


def test_findings_pair_the_texts_of_two_jobs_and_call_a_difference_only_when_its_interval_excludes_zero():
    """Every job of a length crams the same texts. Greedy 0.1 against 0.8 on each of 8 texts is a
    difference (a sign test's p = 1/128); on 4 texts it is not yet (p = 1/8). Texts that disagree both
    ways are noise, however the marginal intervals fall."""
    def variants(texts):
        return pd.DataFrame([sample(variant="base", sample_id=i, greedy_convergence=0.1) for i in range(texts)]
                            + [sample(variant="bos", sample_id=i, greedy_convergence=0.8) for i in range(texts)])
    text = " ".join(findings_of(variants(8)))
    assert ("For SmolLM2-135M with fast at 16 tokens (prose), variant bos has higher greedy accuracy than base: "
            "0.800 (95\\% CI 0.540--0.865, n = 8) vs 0.100 (95\\% CI 0.068--0.392, n = 8); difference +0.700 "
            "(95\\% CI +0.149 to +0.797).") in text
    assert "variant bos and base are within noise at n = 4 on greedy accuracy" in " ".join(findings_of(variants(4)))
    seed = dict(optimizer="seed", init="uniform", protocol_init="uniform", placement="first", keep="last")
    samples = pd.DataFrame([sample(**(seed if o == "seed" else {}), sample_id=i, greedy_convergence=g)
                            for o, values in (("seed", (0.0, 1.0, 0.0, 1.0)), ("fast", (1.0, 1.0, 0.0, 1.0)))
                            for i, g in enumerate(values)])
    # protocols with their own inits are compared on the same texts, paired (the row name omits a prescribed init)
    assert (r"For SmolLM2-135M\_base at 16 tokens (prose), optimizer seed and fast are within noise at n = 4 on "
            r"greedy accuracy: 0.500 (95\% CI 0.000--1.000, n = 4) vs 0.750") in " ".join(findings_of(samples))
    assert "the interval of the difference holds 0" in " ".join(findings_of(samples))
    samples.loc[samples["optimizer"] == "seed", "text"] = "second_half"  # other texts: no pairing by sample id
    assert "the intervals overlap" in " ".join(findings_of(samples))


def test_findings_report_capacity_with_intervals():
    text = " ".join(findings_of(pd.DataFrame([sample()]), capacity_table(capacity_stages())))
    assert ("reconstructs 48 tokens; 64 tokens failed: 48 tokens per vector, 8.1\\% of the bound of 591 tokens, "
            "480 bits of information gain per text; greedy decoding reaches 0.990 (95\\% CI 0.980--1.000, n = 2) "
            "there (teacher forcing 0.995 (95\\% CI 0.990--1.000, n = 2)); decoded by the model in bf16 too (0.990).") in text


def test_render_tables_carry_n_and_intervals_and_escaped_names():
    samples = pd.DataFrame([sample(variant=v) for v in ("base", "bos", "2leading")]
                           + [sample(variant="bos", init="mean", n_mem=2)])
    s = summarize(samples)
    tex = section(s, capacity_table(capacity_stages()), samples)
    assert r"\toprule" in tex and r"\bottomrule" in tex
    assert (r"model & variant & optimizer & length & $n$ & mismatch@0 & mismatch@1 & mismatch@2 & TF accuracy & "
            r"greedy accuracy \\") in tex
    assert (r"model & variant & optimizer & length & $n$ & greedy mismatch@0 & greedy mismatch@1 & greedy mismatch@2 & "
            r"TF $-$ greedy & greedy (bf16) & steps \\") in tex
    assert r"SmolLM2-135M & base & fast & 48 & prose & 64 & 48 & 591 & 8.1 \\" in tex
    assert r"SmolLM2-135M & base & fast & 48 & 2 & 0.995 [0.990, 1.000] & 0.990 [0.980, 1.000] &" in tex
    rows = [line for line in tex.splitlines() if line.startswith("SmolLM2")]
    assert [r.split(" & ")[1] for r in rows[:4]] == ["base", "bos", r"bos\_mean\_mem2", "2leading"]
    # The seed's table: teacher-forced mismatch@0-2, TF and greedy accuracy; one text says little (Wilson's 0 or 1 of 1).
    assert rows[0] == r"SmolLM2-135M & base & fast & 16 & 1 & 0.00 [0.00, 0.79] & 0.00 [0.00, 0.79] & " \
                      r"0.00 [0.00, 0.79] & 1.00 [0.21, 1.00] & 0.00 [0.00, 0.79] \\"
    assert "fast (after\\_bos, margin 1.0, float32), at most 150 steps and 2 restarts" in tex  # the protocol


def test_compressor_summary_gap_share_and_findings_by_hand():
    """Two held-out contexts: none 6 / 8, full 2 / 4, compressor 4 / 6 nats: half the gap closed on
    the means and in every resample (the paired bootstrap of a constant share has zero width)."""
    ce = {"no_context": (6.0, 8.0), "full_context": (2.0, 4.0), "estar": (1.0, 3.0), "compressor": (4.0, 6.0)}
    rows = [dict(model="m", arch="hyper", k=2, context=c, condition=condition, ce_nats=values[c],
                 topk_agreement=0.5 * c, **({"mse": 0.1 * (c + 1), "cosine": 0.5, "norm_rmse": 1.0}
                                            if condition == "compressor" else {}))
            for c in (0, 1) for condition, values in ce.items()]
    s = summarize_compressor(pd.DataFrame(rows))
    assert len(s) == 1
    r = s.iloc[0]
    assert r["ce_estar"] == pytest.approx(2.0) and r["ce_compressor"] == pytest.approx(5.0)
    assert (r["ce_compressor_low"], r["ce_compressor_high"]) == pytest.approx((4.0, 6.0))
    assert r["topk_full_context"] == pytest.approx(0.25) and r["mse"] == pytest.approx(0.15)
    assert (r["gap_share_compressor"], r["gap_share_compressor_low"], r["gap_share_compressor_high"]) == (0.5, 0.5, 0.5)
    assert r["gap_share_estar"] == pytest.approx(1.25) and r["n_contexts"] == 2
    text = " ".join(compressor_findings(s))
    assert "HyperPromptNet (m, k = 2) closes a share of the gap above zero: 0.50 (95\\% CI 0.50--0.50, n = 2)" in text
    # The same contexts both ways: the difference is paired (2 nats less on each), where the marginal
    # intervals [4, 6] and [6, 8] would only touch.
    assert r["ce_compressor_minus_no_context"] == pytest.approx(-2.0)
    assert ("HyperPromptNet (m, k = 2) has lower follow-text CE than no context: 5.000 (95\\% CI 4.000--6.000, n = 2) "
            "vs 7.000 (95\\% CI 6.000--8.000, n = 2); difference -2.000 (95\\% CI -2.000 to -2.000).") in text


SECTION_FINDINGS = [
    r"Coconut and CoT are within noise at n = 8 on prosqa accuracy (\%): 0.0 (95\% CI 0.0--49.0, n = 8).",
    r"Coconut has higher prosqa tokens per answer than CoT: 9.0 (95\% CI 9.0--9.0, n = 8) vs 8.0 (95\% CI "
    r"8.0--8.0, n = 8); difference +1.0 (95\% CI +1.0 to +1.0)."]
SECTION_TEX = r"""\section*{Coconut: reasoning in continuous thoughts}
Each model trains for 2 epochs at lr 0.001; 200 test problems. A difference is stated only where the 95\% intervals separate.

""" + key_block(SECTION_FINDINGS) + r"""\begin{table}[htbp]
\centering
\footnotesize
\caption{tiny: accuracy (\%) with \texttt{coconut.seeds}; $n = 2 \times 4$.}
\begin{tabular}{lrr}
\toprule
 & \multicolumn{2}{c}{prosqa ($n = 8$)} \\
\cmidrule(lr){2-3}
method & accuracy (\%) & \# tokens \\
\midrule
No-CoT & 12.5 [2.2--47.1] & 8.0 \\
CoT\_x & -- & 9.0 \\
\bottomrule
\end{tabular}
\end{table}

""" + all_block(SECTION_FINDINGS)


def test_the_results_digest_carries_a_sections_protocol_tables_and_findings_as_markdown():
    from soft_tokens.report.digest import section as digest_section

    assert digest_section(SECTION_TEX).split("\n\n") == [
        "## Coconut: reasoning in continuous thoughts",
        "Each model trains for 2 epochs at lr 0.001; 200 test problems. A difference is stated only where the 95% "
        "intervals separate.",
        "Key findings:",
        "- Coconut has higher prosqa tokens per answer than CoT: 9.0 (95% CI 9.0–9.0, n = 8) vs 8.0 (95% CI 8.0–8.0, "
        "n = 8); difference +1.0 (95% CI +1.0 to +1.0).\n"
        "- Within noise at this n (1 of 2 findings; each in full below): Coconut vs CoT on prosqa accuracy (%).",
        "*tiny: accuracy (%) with `coconut.seeds`; n = 2 × 4.*",
        "| method | accuracy (%) | # tokens |\n| --- | --- | --- |\n|  | prosqa (n = 8) |  |\n"
        "| No-CoT | 12.5 [2.2–47.1] | 8.0 |\n| CoT_x | – | 9.0 |",
        "All findings:",
        "- Coconut and CoT are within noise at n = 8 on prosqa accuracy (%): 0.0 (95% CI 0.0–49.0, n = 8).\n"
        "- Coconut has higher prosqa tokens per answer than CoT: 9.0 (95% CI 9.0–9.0, n = 8) vs 8.0 (95% CI 8.0–8.0, "
        "n = 8); difference +1.0 (95% CI +1.0 to +1.0).",
    ]


def test_a_sections_html_page_carries_its_tables_and_findings():
    from soft_tokens.report.digest import section_html

    record = {"config": "config/smoke.yaml", "commit": "abc", "date": "2026-12-07 05:00 UTC",
              "version_python": "3.11.7", "version_torch": "2.13.0", "version_transformers": "5.23.0"}
    page = section_html(SECTION_TEX, record)
    assert "<h2>Coconut: reasoning in continuous thoughts</h2>" in page
    assert "From a run of <code>config/smoke.yaml</code> at commit <code>abc</code> on 2026-12-07 05:00 UTC " \
           "(python 3.11.7, torch 2.13.0, transformers 5.23.0)" in page
    assert "<caption>tiny: accuracy (%) with <code>coconut.seeds</code>; n = 2 × 4.</caption>" in page
    assert ("<thead><tr><th></th><th>prosqa (n = 8)</th><th></th></tr><tr><th>method</th><th>accuracy (%)</th>"
            "<th># tokens</th></tr></thead><tbody><tr><td>No-CoT</td><td>12.5 [2.2–47.1]</td><td>8.0</td></tr>") in page
    assert ("<h3>Key findings</h3><ul><li>Coconut has higher prosqa tokens per answer than CoT: 9.0 (95% CI 9.0–9.0, "
            "n = 8) vs 8.0 (95% CI 8.0–8.0, n = 8); difference +1.0 (95% CI +1.0 to +1.0).</li><li>Within noise at "
            "this n (1 of 2 findings; each in full below): Coconut vs CoT on prosqa accuracy (%).</li></ul>"
            "<table><caption>") in page
    assert "</table><h3>All findings</h3><ul><li>Coconut and CoT are within noise" in page


def test_provenance_names_the_config_from_the_repository_root(monkeypatch):
    from soft_tokens.report import provenance

    monkeypatch.setenv(provenance.CONFIG_SOURCE, f"{provenance.ROOT}/config/smoke.yaml + /elsewhere/my.yaml")
    record = provenance.provenance()
    assert record["config"] == "config/smoke.yaml + /elsewhere/my.yaml"
    assert record["version_torch"] == torch.__version__ and record["version_python"].count(".") == 2
    monkeypatch.delenv(provenance.CONFIG_SOURCE)
    assert provenance.provenance()["config"] == "unknown (run outside the workflow)"


def test_key_findings_are_the_differences_that_hold_and_one_line_for_the_noise():
    holds = r"A has lower CE than B: 1.0 (95\% CI 0.9--1.1, n = 4) vs 2.0 (95\% CI 1.9--2.1, n = 4)."
    noise = [rf"X{i} and Y are within noise at n = 4 on accuracy (\%): 1 vs 1, the intervals overlap." for i in range(8)]
    neither = "HRPO writes 1.00 of GRPO's length; the goal is neither met nor missed at n = 4: an interval straddles a bound."
    described = "On prosqa, of 8 answers, m gets right 0 with No-CoT."
    key = key_findings([described, holds, *noise, neither])
    assert key == [holds, "Within noise at this n (9 of 11 findings; each in full below): X0 vs Y on accuracy (\\%); "
                          "X1 vs Y on accuracy (\\%); X2 vs Y on accuracy (\\%); X3 vs Y on accuracy (\\%); X4 vs Y on "
                          "accuracy (\\%); X5 vs Y on accuracy (\\%); and 3 more."]
    assert key_findings([described]) == ["No difference holds at this n."]
    assert key_block([described, holds]) == ("\\subsection*{Key findings}\n\\begin{itemize}\n\\item " + holds
                                             + "\n\\end{itemize}\n")
    assert all_block([described, holds]).endswith(f"\\item {described}\n\\item {holds}\n\\end{{itemize}}\n}}\n")
    assert all_block([]) == ""


def test_every_tracks_finding_phrasings_are_classified():
    """The shapes stats.difference and the tracks write: a holding difference is key, a noisy one is not."""
    a, b = stats.Interval(0.9, 0.85, 0.95, 10), stats.Interval(0.1, 0.05, 0.15, 10)
    holds = stats.difference("A", a, "B", b, "accuracy")
    noise = stats.difference("A", a, "B", a, "accuracy")
    missing = stats.difference("A", stats.Interval(float("nan"), float("nan"), float("nan"), 4), "B", b, "accuracy")
    assert key_findings([holds, noise, missing])[0] == holds
    assert "2 of 3 findings" in key_findings([holds, noise, missing])[1] and "nan" not in missing
    assert missing == "A and B are not compared on accuracy: not measured (n = 4) vs 0.100 (95\\% CI 0.050--0.150, n = 10)."


@pytest.mark.parametrize("sentence,short", [
    (r"For m\_base with fast at 8 tokens (prose), greedy decoding (0.071 (95\% CI 0.000--0.143, n = 2)) and teacher "
     r"forcing (0.071 (95\% CI 0.000--0.143, n = 2)) are within noise of each other.",
     r"For m\_base with fast at 8 tokens (prose), greedy decoding and teacher forcing"),
    (r"HRPO, probs state writes 0.97 (95\% CI 0.96--0.98, n = 4) of GRPO's completion length (the interval excludes "
     r"1); the goal (at least 2 points) is neither met nor missed at n = 4: an interval straddles a bound.",
     "HRPO, probs state writes 0.97 of GRPO's completion length"),
    ("GRPO (no gate) and the start model are within noise on accuracy: 0.0 (95\\% CI -49.0--49.0, n = 4) points.",
     "GRPO (no gate) vs the start model on accuracy"),
    ("On prosqa, Coconut shows no evidence of using its latent vectors: no drop's interval lies above 0.",
     "On prosqa, Coconut shows no evidence of using its latent vectors"),
])
def test_the_within_noise_line_names_each_comparison_without_its_values(sentence, short):
    from soft_tokens.report.findings import subject

    assert subject(sentence) == short


def test_estar_curves_hold_each_contexts_best_so_far_to_the_longest_run():
    from soft_tokens.compression.report import estar_curves

    table = pd.DataFrame([
        {"model": "m", "id": 0, "split": "held_out", "has_estar": True, "accuracy_curve": [0.2, 0.1, 0.6],
         "loss_curve": [3.0, 2.0, 1.0]},
        {"model": "m", "id": 1, "split": "train", "has_estar": True, "accuracy_curve": [0.5], "loss_curve": [4.0]},
        {"model": "m", "id": 2, "split": "train", "has_estar": False, "accuracy_curve": None, "loss_curve": None}])
    curves = estar_curves(table)
    assert curves[curves["id"] == 0]["accuracy"].tolist() == [0.2, 0.2, 0.6]  # best so far, not the step's
    assert curves[curves["id"] == 1][["step", "accuracy", "loss"]].values.tolist() == [[1, 0.5, 4.0], [2, 0.5, 4.0],
                                                                                      [3, 0.5, 4.0]]
    assert set(curves["id"]) == {0, 1}  # a context without e* has no curve
    with pytest.raises(ValueError, match=r"results/estar/\{m\}/estar.parquet was built before e\* kept its curves; "
                                         "remove that folder's estar"):
        estar_curves(table.drop(columns=["accuracy_curve", "loss_curve"]))
