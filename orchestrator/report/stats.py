"""Per-cell statistics: the batches of one process (median, a distribution-free 95% interval of the median, the
coefficient of variation, outliers by modified z-score) and, above them, the fresh processes (repeats) of a cell.

The unit of evidence for a run-level number is a fresh process, as pyperf (20 worker processes by default, values
of all of them) and asv (samples from several processes) treat it: batches of one process share its address-space
layout, caches, clocks and neighbours, so they say how steady that process was, not how the next one will be. With
two or more repeats a cell's time is the geometric mean of its repeats' medians and its 95% interval is Student's t
on their logarithms (scipy.stats.t); two cells are told apart by Welch's t test on those logarithms
(scipy.stats.ttest_ind), whose interval of the ratio is what `compare` and the report's ranking read.

The interval is the order-statistic (binomial) one: [x_(r), x_(n+1-r)] covers the true median with probability
1 - 2 * P(Binomial(n, 1/2) <= r - 1), whatever the distribution. It is exact and needs no random resampling, so a
report renders the same every time. With n <= 5 no r reaches 95%; the interval is then [min, max] and its real
coverage (e.g. 93.8% at n = 5) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
BATCHES, PROCESSES = "batches", "processes"  # what a TimeStats interval is over
# Iglewicz & Hoaglin's rule: |modified z| > 3.5 marks a likely outlier; 0.6745 makes MAD comparable to a sd.
MODIFIED_Z_LIMIT = 3.5
MAD_SCALE = 0.6745


@dataclass(frozen=True)
class TimeStats:
    n: int
    median: float
    mean: float
    ci_low: float
    ci_high: float
    ci_coverage: float  # the interval's exact coverage; below CONFIDENCE only for tiny n
    cv: float | None  # sample sd / mean; None for one sample
    outliers: int  # count of |modified z| > 3.5
    min: float
    max: float
    # The cell's time (`median`) and interval rest on this many fresh processes: with one, they are that process's
    # batch median and order-statistic interval (basis "batches"); with more, the geometric mean of the repeats'
    # medians and its t interval (basis "processes"). n, mean, cv, outliers, min and max always describe batches.
    repeats: int = 1
    repeat_medians: tuple[float, ...] = ()
    basis: str = BATCHES
    repeat_cv: float | None = None  # run-to-run spread: sd / mean of the repeats' medians (2+ repeats)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ci_ranks(n: int, confidence: float = CONFIDENCE) -> tuple[int, float]:
    """The largest 1-based rank r with coverage(r) >= confidence (r = 1 if none reaches it), and that coverage.

    coverage(r) = 1 - 2 * P(Bin(n, 1/2) <= r - 1); the binomial quantile gives r directly (scipy.stats, O(1) in
    n), so a cell of millions of batches costs no more than its sort.
    """
    if n < 1:
        raise ValueError("need at least one sample")
    alpha_half = (1.0 - confidence) / 2.0
    k = int(stats.binom.ppf(alpha_half, n, 0.5))  # smallest k with P(X <= k) >= alpha/2
    if k >= 0 and stats.binom.cdf(k, n, 0.5) > alpha_half:
        k -= 1  # the largest k with P(X <= k) <= alpha/2; r = k + 1
    r = min(max(k + 1, 1), (n + 1) // 2)
    return r, _coverage(n, r)


def _coverage(n: int, r: int) -> float:
    return float(1.0 - 2.0 * stats.binom.cdf(r - 1, n, 0.5))


def modified_z(values: Sequence[float]) -> np.ndarray:
    """Iglewicz-Hoaglin modified z-scores; all zero when the MAD is zero (half the values identical)."""
    a = np.asarray(values, dtype=np.float64)
    med = np.median(a)
    mad = np.median(np.abs(a - med))
    if mad == 0:
        return np.zeros_like(a)
    return MAD_SCALE * (a - med) / mad


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> TimeStats:
    a = np.sort(np.asarray(values, dtype=np.float64))
    n = int(a.size)
    if n == 0:
        raise ValueError("no times to describe")
    r, coverage = median_ci_ranks(n, confidence)
    mean = float(a.mean())
    cv = float(a.std(ddof=1) / mean) if n > 1 and mean > 0 else None
    return TimeStats(
        n=n,
        median=float(np.median(a)),
        mean=mean,
        ci_low=float(a[r - 1]),
        ci_high=float(a[n - r]),
        ci_coverage=coverage,
        cv=cv,
        outliers=int(np.count_nonzero(np.abs(modified_z(a)) > MODIFIED_Z_LIMIT)),
        min=float(a[0]),
        max=float(a[-1]),
    )


def overlaps(a: TimeStats, b: TimeStats) -> bool:
    """True when the data cannot say which cell is faster ("tied").

    With 2+ repeats on both sides: the 95% interval of the ratio (Welch, `difference`) contains 1. Otherwise the
    run-to-run spread is unmeasured and only the cells' own intervals can be compared (they overlap): a weaker
    check, which the report says.
    """
    if a.repeats >= 2 and b.repeats >= 2:
        d = difference(a, b)
        return d.known and d.low <= 1.0 <= d.high  # type: ignore[operator]
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high


def describe_repeats(per_repeat: Sequence[Sequence[float]], confidence: float = CONFIDENCE) -> TimeStats:
    """A cell's statistics over its repeats: each inner sequence is the batch times of one fresh process.

    Batches give each repeat its median only; the cell's time and interval come from those medians (module doc).
    """
    runs = [r for r in per_repeat if len(r) > 0]
    if not runs:
        raise ValueError("no times to describe")
    pooled = describe([t for r in runs for t in r], confidence)
    medians = tuple(float(np.median(r)) for r in runs)
    if len(runs) == 1:
        return replace(describe(runs[0], confidence), repeat_medians=medians)
    logs = np.log(medians)
    center = float(np.exp(logs.mean()))
    sem = float(stats.sem(logs))
    if sem > 0:
        low, high = stats.t.interval(confidence, len(logs) - 1, loc=float(logs.mean()), scale=sem)
    else:
        low = high = float(logs.mean())  # identical medians: no measured spread
    mean_m = float(np.mean(medians))
    return replace(pooled, median=center, ci_low=float(np.exp(low)), ci_high=float(np.exp(high)),
                   ci_coverage=confidence, repeats=len(runs), repeat_medians=medians, basis=PROCESSES,
                   repeat_cv=float(np.std(medians, ddof=1) / mean_m))


@dataclass(frozen=True)
class Difference:
    """B against A at the repeat level: the ratio of the cells' times and its 95% interval."""

    ratio: float  # b.median / a.median (above 1: B slower)
    low: float | None  # the interval of the ratio; None unless both sides have 2+ repeats
    high: float | None
    p: float | None  # Welch's two-sided t test on the logs of the repeats' medians
    repeats: tuple[int, int]

    @property
    def known(self) -> bool:
        return self.low is not None and self.high is not None


def difference(a: TimeStats, b: TimeStats, confidence: float = CONFIDENCE) -> Difference:
    """Welch's t test (scipy.stats.ttest_ind, unequal variances) on log repeat medians, B against A.

    On the log scale a ratio is a difference, and run-to-run spread is roughly proportional to the time, so a
    slow and a fast cell are treated alike. With one repeat on a side there is no measured spread: no interval.
    """
    ratio = b.median / a.median
    reps = (a.repeats, b.repeats)
    if min(reps) < 2:
        return Difference(ratio, None, None, None, reps)
    la, lb = np.log(a.repeat_medians), np.log(b.repeat_medians)
    if np.ptp(la) == 0 and np.ptp(lb) == 0:  # no spread on either side: the ratio is all there is
        return Difference(ratio, ratio, ratio, 0.0 if ratio != 1 else 1.0, reps)
    res = stats.ttest_ind(lb, la, equal_var=False)
    ci = res.confidence_interval(confidence)
    return Difference(ratio, float(np.exp(ci.low)), float(np.exp(ci.high)), float(res.pvalue), reps)
