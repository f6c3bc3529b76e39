import math

import numpy as np
import pandas as pd
import pytest

from soft_tokens.report import stats


def test_wilson_for_15_of_20_by_hand():
    """p = 0.75, z = 1.96: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)."""
    z, n, p = 1.959964, 20, 0.75
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    iv = stats.wilson(15, 20)
    assert (iv.mean, iv.n) == (0.75, 20)
    assert (iv.low, iv.high) == pytest.approx((centre - half, centre + half), abs=1e-5)
    assert (iv.low, iv.high) == pytest.approx((0.5313, 0.8881), abs=1e-4)


def test_wilson_stays_inside_zero_and_one_at_the_extremes():
    assert stats.wilson(0, 10).low == 0.0 and 0 < stats.wilson(0, 10).high < 0.35
    assert stats.wilson(10, 10).high == pytest.approx(1.0) and stats.wilson(10, 10).low > 0.65
    assert stats.rate([True, False, None, True]) == stats.wilson(2, 3)


def test_bootstrap_of_a_constant_sample_has_zero_width_and_skips_failed_units():
    iv = stats.bootstrap([0.4, 0.4, np.nan, 0.4])
    assert (iv.mean, iv.low, iv.high, iv.n) == (0.4, 0.4, 0.4, 3)
    for nothing in ([], [np.nan]):  # no unit measured: NaN with n = 0, not an error
        iv = stats.bootstrap(nothing)
        assert np.isnan(iv.mean) and iv.n == 0


def test_bootstrap_interval_covers_the_mean_and_narrows_with_n():
    rng = np.random.default_rng(0)
    small, large = stats.bootstrap(rng.normal(1.0, 1.0, 20)), stats.bootstrap(rng.normal(1.0, 1.0, 500))
    assert small.low < small.mean < small.high and large.low < 1.0 < large.high
    assert large.high - large.low < 0.5 * (small.high - small.low)
    assert stats.bootstrap([1.0, 2.0, 3.0]) == stats.bootstrap([1.0, 2.0, 3.0])  # seeded: the same every run


def test_gap_share_pairs_the_units():
    """The per-context gaps vary a lot, the share each closes does not: a paired resample keeps it at 1/2."""
    none, full = np.array([10.0, 4.0, 7.0]), np.array([2.0, 3.0, 1.0])
    iv = stats.gap_share(none, (none + full) / 2, full)
    assert (iv.mean, iv.low, iv.high) == pytest.approx((0.5, 0.5, 0.5))


def test_difference_names_the_effect_only_when_the_intervals_separate():
    assert stats.difference("A", stats.wilson(150, 200), "B", stats.wilson(190, 200), "accuracy") == (
        "A has lower accuracy than B: 0.750 (95\\% CI 0.686--0.805, n = 200) vs 0.950 (95\\% CI 0.910--0.973, "
        "n = 200).")
    assert stats.difference("A", stats.wilson(15, 20), "B", stats.wilson(19, 20), "accuracy").startswith(
        "A and B are within noise at n = 20 on accuracy: 0.750 (95\\% CI 0.531--0.888, n = 20) vs 0.950")


def test_cell_shows_the_interval_and_a_dash_for_nothing_measured():
    assert stats.cell(stats.wilson(15, 20)) == "0.750 [0.531, 0.888]"
    assert stats.cell(stats.wilson(15, 20).scaled(100), 1) == "75.0 [53.1, 88.8]"
    assert stats.cell(stats.rate([None, None])) == "--"


def test_a_mean_at_a_bound_gets_the_wilson_limit_not_a_zero_width_interval():
    """8 texts all at accuracy 1.0 say no more than a rate of 8/8; steps all at a budget of 150 (from 1)
    likewise: 1 + 149 x Wilson's lower limit for 8/8."""
    at_one = stats.bounded_mean([1.0] * 8)
    assert (at_one.mean, at_one.high, at_one.n) == (1.0, 1.0, 8)
    assert at_one.low == pytest.approx(stats.wilson(8, 8).low) == pytest.approx(0.6756, abs=1e-4)
    assert stats.bounded_mean([0.0] * 8).high == pytest.approx(stats.wilson(0, 8).high)
    steps = stats.bounded_mean([150] * 8, 1, 150)
    assert (steps.mean, steps.high) == (150, 150) and steps.low == pytest.approx(1 + 149 * 0.6756, abs=0.02)
    assert stats.bounded_mean([0.5, 1.0, np.nan]) == stats.bootstrap([0.5, 1.0])  # off the bound: the bootstrap
    gain = stats.paired_difference([0.8] * 4, [0.1] * 4)  # 4 texts that all gain 0.7: a sign test's p is 1/8
    assert gain.mean == pytest.approx(0.7) and gain.low < 0 < gain.high
    assert stats.paired_difference([0.8] * 8, [0.1] * 8).low == pytest.approx(0.149, abs=1e-3)  # 8: p = 1/128


# Student (1908), Cushny and Peebles' hours of extra sleep of ten patients under two drugs.
SLEEP_1 = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
SLEEP_2 = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])


def test_the_paired_difference_on_students_sleep_data_matches_the_paired_t_interval():
    """The textbook paired example: mean difference 1.58 h, paired t interval (0.70, 2.46); the marginal
    intervals overlap (between-patient spread), the paired one excludes 0."""
    diff = stats.paired_difference(SLEEP_2, SLEEP_1, -10, 10)
    assert (diff.mean, diff.n) == (pytest.approx(1.58), 10) and diff.excludes_zero()
    assert diff.low == pytest.approx(0.70, abs=0.3) and diff.high == pytest.approx(2.46, abs=0.3)
    assert not stats.bootstrap(SLEEP_2).separated_from(stats.bootstrap(SLEEP_1))
    assert "difference +1.580 (95\\% CI +" in stats.difference("B", stats.bootstrap(SLEEP_2), "A",
                                                                 stats.bootstrap(SLEEP_1), "sleep", diff=diff)
    assert stats.difference("B", stats.bootstrap(SLEEP_2), "A", stats.bootstrap(SLEEP_1), "sleep",
                            diff=diff).startswith("B has higher sleep than A")


def test_equal_paired_values_give_a_difference_interval_of_positive_width():
    diff = stats.paired_difference([1.0] * 8, [1.0] * 8)
    assert (diff.mean, diff.high, diff.n) == (0.0, pytest.approx(stats.wilson(0, 8).high), 8) and diff.low == -diff.high
    assert stats.paired_rate_difference([True] * 8, [True] * 8) == diff


def test_mcnemar_exact_by_hand():
    """9 units where only a is right and 1 where only b is: p = 2 (C(10,0) + C(10,1)) / 2^10 = 22/1024.
    Agresti's approval ratings (150 vs 86 discordant of 1600): the doubled binomial tail."""
    a = [True] * 9 + [False] + [True] * 5
    b = [False] * 9 + [True] + [True] * 5
    assert stats.mcnemar(a, b) == pytest.approx(22 / 1024)
    tail = sum(math.comb(236, k) for k in range(87)) / 2**236
    assert stats.mcnemar([True] * 150 + [False] * 86, [False] * 150 + [True] * 86) == pytest.approx(2 * tail)
    assert stats.mcnemar([True, False], [True, False]) == 1.0


def test_the_paired_rate_interval_excludes_zero_exactly_when_mcnemar_rejects():
    for wins in range(13):
        for losses in range(13):
            if wins + losses == 0:
                continue
            a = [True] * wins + [False] * losses + [True] * 10 + [False] * 5
            b = [False] * wins + [True] * losses + [True] * 10 + [False] * 5
            diff = stats.paired_rate_difference(a, b)
            assert diff.mean == pytest.approx((wins - losses) / len(a))
            assert diff.low <= diff.mean <= diff.high
            assert diff.excludes_zero() == (stats.mcnemar(a, b) < 0.05), (wins, losses)


def test_newcombes_interval_for_two_independent_rates():
    """Newcombe (1998, method 10), his example 56/70 - 48/80: 0.2000 (0.0524, 0.3339)."""
    diff = stats.rate_difference(stats.wilson(56, 70), stats.wilson(48, 80))
    assert (diff.mean, diff.low, diff.high) == pytest.approx((0.2, 0.0524, 0.3339), abs=1e-4)


def test_a_crossed_length_ratio_keeps_the_seed_noise():
    """Three HRPO seeds at 0.47, 1.12 and 1.10 of GRPO's length: averaging the seeds per problem first
    (the problems bootstrap alone) would call 0.90 a sure reduction; resampling seeds too does not."""
    rng = np.random.default_rng(0)
    problems = rng.uniform(80, 120, (200, 1))
    grpo = problems * np.ones((1, 3)) * rng.normal(1, 0.01, (200, 3))
    hrpo = problems * np.array([0.47, 1.12, 1.10]) * rng.normal(1, 0.01, (200, 3))
    ratio = stats.crossed_difference(hrpo, grpo, lambda x, y: x.mean() / y.mean())
    assert ratio.mean == pytest.approx(0.897, abs=0.01) and ratio.low < 1 < ratio.high
    assert (ratio.n, ratio.repeats) == (200, 3) and "n = 200 problems x 3 seeds" in stats.text(ratio)
    seed_averaged = stats.bootstrap(np.column_stack([hrpo.mean(1), grpo.mean(1)]), lambda x, y: x.mean() / y.mean())
    assert seed_averaged.high < 1  # the verdict the seed-averaged bootstrap would give


def test_paired_units_pairs_by_unit_and_skips_units_measured_once():
    a = pd.Series([1.0, 1.0, 0.0, 1.0], index=[3, 1, 2, 9])
    b = pd.Series([0.0, 1.0, 0.0], index=[1, 2, 3])  # unit 9 has no partner; order differs
    rates = stats.paired_units(a, b, rates=True)  # units 1, 2, 3: a - b = +1, -1, +1
    assert (rates.mean, rates.n) == (pytest.approx(1 / 3), 3)
    assert stats.paired_units(a, b).mean == pytest.approx(1 / 3)
    assert stats.from_columns_or_none(pd.Series({"x": 1.0}), "y", 3) is None
