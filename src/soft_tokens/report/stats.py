"""Uncertainty for every reported mean, one module for all tracks: Wilson intervals for rates
(successes out of n), percentile-bootstrap intervals (scipy) for means of continuous values (never of
zero width where the sample sits at a bound of its range), a crossed bootstrap for units x training
seeds, the intervals of differences each design calls for (paired units: the bootstrap of the per-unit
differences, McNemar's exact interval for rates; independent samples: Newcombe's interval for rates,
the two-sample bootstrap for means), the columns that carry them in the summary tables, the table cell
that shows them, and the one rule the findings use to call a difference real: the 95% interval of the
difference excludes 0 (where a finding has only the two marginal intervals, they must not overlap,
which is stricter).
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% interval and the number of units (texts, problems, contexts) behind it."""

    mean: float
    low: float
    high: float
    n: int
    repeats: int = 1  # a crossed design's training seeds: n units, each under every seed

    def separated_from(self, other: "Interval") -> bool:
        return self.high < other.low or other.high < self.low

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def scaled(self, factor: float) -> "Interval":
        low, high = sorted((self.low * factor, self.high * factor))
        return Interval(self.mean * factor, low, high, self.n, self.repeats)

    def size(self) -> str:
        """`n = 200`, or `n = 200 problems x 3 seeds` for a crossed design (plain text, escaped later)."""
        return f"n = {self.n}" + (f" problems x {self.repeats} seeds" if self.repeats > 1 else "")


def wilson(successes: int, n: int) -> Interval:
    """The Wilson score interval of a rate: sound at 0/n and n/n, where the normal one collapses."""
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    ci = stats.binomtest(int(successes), int(n)).proportion_ci(CONFIDENCE, method="wilson")
    return Interval(successes / n, float(ci.low), float(ci.high), int(n))


def bootstrap(values, statistic=np.mean, seed: int = 0) -> Interval:
    """The percentile-bootstrap interval of `statistic` over the rows of `values` (one row per unit;
    several columns are resampled together, so a paired statistic keeps its pairs). Constant data
    has a zero-width interval; NaN rows (failed units) are left out."""
    data = np.asarray(values, dtype=float)
    if len(data) == 0:  # no unit at all (a capacity search that passed no length)
        return Interval(np.nan, np.nan, np.nan, 0)
    data = data.reshape(len(data), -1)
    data = data[~np.isnan(data).any(axis=1)]
    n = len(data)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    if n == 1 or np.all(data == data[0]):
        point = float(statistic(*data[:1].T))
        return Interval(point, point, point, n)
    point = float(statistic(*data.T))
    res = stats.bootstrap(tuple(data.T), statistic, paired=True, vectorized=False, n_resamples=RESAMPLES,
                          confidence_level=CONFIDENCE, method="percentile", rng=np.random.default_rng(seed))
    return Interval(point, float(res.confidence_interval.low), float(res.confidence_interval.high), n)


def bootstrap_band(curves) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 95% percentile-bootstrap band of the mean of `curves` [units, points], for figures."""
    curves = np.asarray(curves, dtype=float)
    if len(curves) < 2:
        return curves.mean(0), curves.mean(0)
    res = stats.bootstrap((curves,), np.mean, axis=0, n_resamples=RESAMPLES, confidence_level=CONFIDENCE,
                          method="percentile", rng=np.random.default_rng(0))
    return res.confidence_interval.low, res.confidence_interval.high


def bootstrap_crossed(table, seed: int = 0) -> Interval:
    """The percentile-bootstrap interval of the mean of a units x repeats table (test problems x
    training seeds), resampling units and repeats independently (the pigeonhole bootstrap): it holds
    the noise of the units drawn and of the repeats, where resampling units alone would read one
    lucky seed as a sure thing. n = the units, repeats = the seeds."""
    data = np.asarray(table, dtype=float)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, data.shape[0], (RESAMPLES, data.shape[0]))
    cols = rng.integers(0, data.shape[1], (RESAMPLES, data.shape[1]))
    means = [data[np.ix_(r, c)].mean() for r, c in zip(rows, cols)]
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(data.mean()), float(low), float(high), data.shape[0], data.shape[1])


def rate_crossed(table) -> Interval:
    """The share of successes in a units x repeats table of 0/1: the crossed bootstrap, never narrower
    than the Wilson interval of the repeat-averaged rate over the units, so that it stays sound at
    0 and at every unit right, where any bootstrap collapses to a point."""
    crossed = bootstrap_crossed(table)
    units = len(table)
    floor = wilson(round(crossed.mean * units), units)
    return Interval(crossed.mean, min(crossed.low, floor.low), max(crossed.high, floor.high), crossed.n,
                    crossed.repeats)


def crossed_difference(a, b, statistic=lambda x, y: x.mean() - y.mean(), seed: int = 0) -> Interval:
    """`statistic` (mean(a) - mean(b) by default; a ratio for lengths) of two units x seeds tables of
    methods run on the same units with their own training seeds: one draw of units serves both (the
    units are paired), each method's seeds are drawn on their own (seed i of one is not seed i of the
    other). n = the units, repeats = the fewer seeds."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(RESAMPLES):
        rows = rng.integers(0, a.shape[0], a.shape[0])
        ca, cb = rng.integers(0, a.shape[1], a.shape[1]), rng.integers(0, b.shape[1], b.shape[1])
        draws.append(statistic(a[np.ix_(rows, ca)], b[np.ix_(rows, cb)]))
    low, high = np.quantile(draws, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(statistic(a, b)), float(low), float(high), a.shape[0], min(a.shape[1], b.shape[1]))


def bounded_mean(values, low: float = 0.0, high: float = 1.0) -> Interval:
    """The mean of values in [low, high] (accuracies, steps up to a budget, differences of those) with
    its bootstrap interval, except where every unit has the same value c, where any bootstrap collapses
    to a point that n units cannot warrant. There the share of units that could differ from c is only
    known to lie below Wilson's upper limit U for 0 of n, and such a unit is at worst at a bound, so the
    mean lies in [c - U (c - low), c + U (high - c)]: all 8 texts at 1.0 give [0.676, 1.0], as a rate
    of 8/8 does, and 4 texts that all gain 0.7 do not yet exclude 0 (nor does a sign test, p = 1/8)."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    n = len(data)
    if n == 0:
        return Interval(np.nan, np.nan, np.nan, 0)
    if np.all(data == data[0]):
        c, limit = float(data[0]), wilson(0, n).high
        return Interval(c, c - limit * (c - low), c + limit * (high - c), n)
    return bootstrap(data)


def paired_difference(a, b, low: float = 0.0, high: float = 1.0) -> Interval:
    """mean(a) - mean(b) over the units measured both ways (values in [low, high]), from the bootstrap of
    the per-unit differences: the unit-to-unit spread both share cancels, which two marginal intervals
    cannot see. Equal differences on every unit follow bounded_mean's rule on [low - high, high - low]."""
    pairs = np.column_stack([np.asarray(a, dtype=float), np.asarray(b, dtype=float)])
    pairs = pairs[~np.isnan(pairs).any(axis=1)]
    return bounded_mean(pairs[:, 0] - pairs[:, 1], low - high, high - low)


def discordant(a, b) -> tuple[int, int]:
    """Of paired 0/1 outcomes, the units where only a succeeds and those where only b does."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    return int((a & ~b).sum()), int((~a & b).sum())


def mcnemar(a, b) -> float:
    """The two-sided p-value of McNemar's exact test on paired 0/1 outcomes: of the units where the two
    differ, those where a succeeds are Binomial(m, 1/2) when neither is better."""
    wins, losses = discordant(a, b)
    return 1.0 if wins + losses == 0 else float(stats.binomtest(wins, wins + losses).pvalue)


def paired_rate_difference(a, b) -> Interval:
    """rate(a) - rate(b) on the same units, with McNemar's exact interval: given the m units where they
    differ, a's wins are Binomial(m, pi) and the difference is m (2 pi - 1) / n, so pi's Clopper-Pearson
    interval gives the difference's, which excludes 0 exactly when McNemar's exact test rejects at 5%.
    With no unit differing, paired_difference's rule for equal differences."""
    (wins, losses), n = discordant(a, b), len(a)
    m = wins + losses
    if m == 0:
        return paired_difference(a, b)
    ci = stats.binomtest(wins, m).proportion_ci(CONFIDENCE, method="exact")
    return Interval((wins - losses) / n, m * (2 * ci.low - 1) / n, m * (2 * ci.high - 1) / n, n)


def paired_units(a: pd.Series, b: pd.Series, rates: bool = False) -> Interval:
    """a - b over the units (the index) both measured: McNemar's exact interval for 0/1 outcomes
    (`rates`), otherwise the bootstrap of the per-unit differences."""
    shared = a.index.intersection(b.index)
    a, b = a.loc[shared], b.loc[shared]
    return paired_rate_difference(a, b) if rates else bootstrap(a - b)


def rate_difference(a: Interval, b: Interval) -> Interval:
    """rate a - rate b of two independent samples (Wilson intervals, as `wilson` gives them): Newcombe's
    hybrid score interval (Newcombe 1998, method 10), which combines the two Wilson limits and so stays
    sound at 0/n and n/n."""
    d = a.mean - b.mean
    low = d - np.sqrt((a.mean - a.low) ** 2 + (b.high - b.mean) ** 2)
    high = d + np.sqrt((a.high - a.mean) ** 2 + (b.mean - b.low) ** 2)
    return Interval(float(d), float(low), float(high), min(a.n, b.n))


def rate(flags) -> Interval:
    """Wilson interval of the share of true values among the non-missing ones."""
    flags = pd.Series(flags).dropna().astype(bool)
    return wilson(int(flags.sum()), len(flags))


def gap_share(none, method, full) -> Interval:
    """The share of the no-context -> full-context loss gap a method closes, (none - method) /
    (none - full) on the means, bootstrapped over the units with their three values paired."""
    return bootstrap(np.column_stack([none, method, full]),
                     lambda a, b, c: (np.mean(a) - np.mean(b)) / (np.mean(a) - np.mean(c)))


def columns(name: str, interval: Interval) -> dict:
    """The summary-table columns of one mean: name, name_low, name_high."""
    return {name: interval.mean, f"{name}_low": interval.low, f"{name}_high": interval.high}


def from_columns(row, name: str, n: int, repeats: int = 1) -> Interval:
    return Interval(row[name], row[f"{name}_low"], row[f"{name}_high"], int(n), int(repeats))


def from_columns_or_none(row, name: str, n: int, repeats: int = 1) -> Interval | None:
    """from_columns, or None where the row does not carry `name` (a comparison not made for it)."""
    return from_columns(row, name, n, repeats) if name in row.index and pd.notna(row[name]) else None


def cell(interval: Interval, digits: int = 3) -> str:
    """A table cell, `0.750 [0.531, 0.888]`: the mean and its 95% interval (plain text, escaped as
    every cell is); "--" where nothing was measured."""
    if interval.n == 0 or np.isnan(interval.mean):
        return "--"
    return f"{interval.mean:.{digits}f} [{interval.low:.{digits}f}, {interval.high:.{digits}f}]"


def cells(frame: pd.DataFrame, name: str, counts, digits: int = 3, scale: float = 1) -> list[str]:
    """The table cells of the mean `name` in every row of a summary frame, each row's n from `counts`,
    times `scale` (100 for a rate in percent or points)."""
    return [cell(from_columns(row, name, n).scaled(scale), digits) for (_, row), n in zip(frame.iterrows(), counts)]


def error_bars(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Matplotlib's yerr [2, rows] for the mean `name` from its interval columns."""
    return np.stack([frame[name] - frame[f"{name}_low"], frame[f"{name}_high"] - frame[name]])


def text(interval: Interval, digits: int = 3) -> str:
    """`0.750 (95% CI 0.531-0.888, n = 20)`, for findings (escaped later as prose); "not measured" for
    an undefined mean (a ratio to zero, a gap of none), so that prose never reads "nan"."""
    if np.isnan(interval.mean):
        return f"not measured ({interval.size()})"
    return (f"{interval.mean:.{digits}f} (95\\% CI {interval.low:.{digits}f}--{interval.high:.{digits}f}, "
            f"{interval.size()})")


def difference(a_name: str, a: Interval, b_name: str, b: Interval, quantity: str, digits: int = 3,
               diff: Interval | None = None) -> str:
    """One sentence on a against b: the direction only when the interval of the difference `diff`
    (a - b, by the design's rule) excludes 0, otherwise "within noise" so that a gap of a unit or two
    is read as what it is. Without `diff`, the two marginal intervals must not overlap."""
    values = f"{text(a, digits)} vs {text(b, digits)}"
    if any(np.isnan(x.mean) for x in (a, b, *([diff] if diff is not None else []))):
        return f"{a_name} and {b_name} are not compared on {quantity}: {values}."
    if diff is not None:
        values += f"; difference {diff.mean:+.{digits}f} (95\\% CI {diff.low:+.{digits}f} to {diff.high:+.{digits}f})"
    if diff.excludes_zero() if diff is not None else a.separated_from(b):
        return f"{a_name} has {'higher' if a.mean > b.mean else 'lower'} {quantity} than {b_name}: {values}."
    n = a.size() if a.size() == b.size() else f"{a.size()} and {b.size()}"
    why = "the interval of the difference holds 0" if diff is not None else "the intervals overlap"
    return f"{a_name} and {b_name} are within noise at {n} on {quantity}: {values}, {why}."
