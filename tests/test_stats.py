import numpy as np
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
