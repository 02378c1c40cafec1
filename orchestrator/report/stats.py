"""Per-cell statistics of the per-batch times: median, a distribution-free 95% interval of the median, the
coefficient of variation and outliers by modified z-score.

The interval is the order-statistic (binomial) one: [x_(r), x_(n+1-r)] covers the true median with probability
1 - 2 * P(Binomial(n, 1/2) <= r - 1), whatever the distribution. It is exact and needs no random resampling, so a
report renders the same every time. With n <= 5 no r reaches 95%; the interval is then [min, max] and its real
coverage (e.g. 93.8% at n = 5) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
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
    """True when the two median intervals overlap, so the data cannot say which is faster."""
    return a.ci_low <= b.ci_high and b.ci_low <= a.ci_high
