"""Uncertainty for every reported mean, one module for all tracks: Wilson intervals for rates
(successes out of n), percentile-bootstrap intervals (scipy) for means of continuous values and for
paired statistics, a crossed bootstrap for units x training seeds, the columns that carry them in the summary tables, the table cell that shows them,
and the one rule the findings use to call a difference real: the 95% intervals do not overlap.
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

    def separated_from(self, other: "Interval") -> bool:
        return self.high < other.low or other.high < self.low

    def scaled(self, factor: float) -> "Interval":
        return Interval(self.mean * factor, self.low * factor, self.high * factor, self.n)


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
    lucky seed as a sure thing. n = the cells (answers pooled over the repeats)."""
    data = np.asarray(table, dtype=float)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, data.shape[0], (RESAMPLES, data.shape[0]))
    cols = rng.integers(0, data.shape[1], (RESAMPLES, data.shape[1]))
    means = [data[np.ix_(r, c)].mean() for r, c in zip(rows, cols)]
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return Interval(float(data.mean()), float(low), float(high), data.size)


def rate_crossed(table) -> Interval:
    """The share of successes in a units x repeats table of 0/1: the crossed bootstrap, never narrower
    than the Wilson interval of the repeat-averaged rate over the units, so that it stays sound at
    0 and at every unit right, where any bootstrap collapses to a point."""
    crossed = bootstrap_crossed(table)
    units = len(table)
    floor = wilson(round(crossed.mean * units), units)
    return Interval(crossed.mean, min(crossed.low, floor.low), max(crossed.high, floor.high), crossed.n)


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


def from_columns(row, name: str, n: int) -> Interval:
    return Interval(row[name], row[f"{name}_low"], row[f"{name}_high"], int(n))


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
    """`0.750 (95% CI 0.531-0.888, n = 20)`, for findings (escaped later as prose)."""
    return (f"{interval.mean:.{digits}f} (95\\% CI {interval.low:.{digits}f}--{interval.high:.{digits}f}, "
            f"n = {interval.n})")


def difference(a_name: str, a: Interval, b_name: str, b: Interval, quantity: str, digits: int = 3) -> str:
    """One sentence on a against b: the direction only when the intervals separate, otherwise
    "within noise at n = ..." so that a gap of a unit or two is read as what it is."""
    values = f"{text(a, digits)} vs {text(b, digits)}"
    if a.separated_from(b):
        return f"{a_name} has {'higher' if a.mean > b.mean else 'lower'} {quantity} than {b_name}: {values}."
    n = a.n if a.n == b.n else f"{a.n} and {b.n}"
    return f"{a_name} and {b_name} are within noise at n = {n} on {quantity}: {values}, the intervals overlap."
