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
    """The largest 1-based rank r with coverage(r) >= confidence (r = 1 if none reaches it), and that coverage."""
    if n < 1:
        raise ValueError("need at least one sample")
    # Exact integers: P(Bin(n, 1/2) <= k) = sum_{i<=k} C(n, i) / 2^n; int / int division is correctly rounded.
    total = 1 << n
    tail, comb = 0, 1  # comb = C(n, r - 1)
    best: tuple[int, float] | None = None
    for r in range(1, (n + 1) // 2 + 1):
        tail += comb
        coverage = 1.0 - 2.0 * (tail / total)
        if best is None or coverage >= confidence:
            best = (r, coverage)
        if coverage < confidence:
            break
        comb = comb * (n - r + 1) // r
    assert best is not None
    return best


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
