"""compare RUN_A RUN_B on real runs, and the Mann-Whitney U test against exact enumeration."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
from report_helpers import make_real_run

from orchestrator.compare import build, compare, mann_whitney_u, run_cli
from orchestrator.report.load import load_run

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


def exact_p(x: list[float], y: list[float]) -> float:
    """Two-sided permutation p of U by enumerating every split (small samples only)."""
    pooled = [*x, *y]
    n1 = len(x)
    mu = n1 * len(y) / 2

    def u_of(first: list[float], second: list[float]) -> float:
        return sum((a > b) + 0.5 * (a == b) for a in first for b in second)

    observed = abs(u_of(x, y) - mu)
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), n1):
        chosen = set(idx)
        first = [pooled[i] for i in idx]
        second = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        hits += abs(u_of(first, second) - mu) >= observed - 1e-12
        total += 1
    return hits / total


def test_u_test_agrees_with_exact_enumeration() -> None:
    rng = np.random.default_rng(3)
    for shift in (0.0, 0.5, 1.0, 2.0):
        x = list(rng.normal(0, 1, 7))
        y = list(rng.normal(shift, 1, 7))
        assert mann_whitney_u(x, y).p == pytest.approx(exact_p(x, y), abs=0.03)


def test_u_test_handles_ties_and_identical_samples(real_run: Path) -> None:
    times = load_run(real_run).records[0].times_ms
    assert mann_whitney_u(times, times).p == 1.0
    assert mann_whitney_u([1.0] * 5, [1.0] * 6).p == 1.0
    tied = mann_whitney_u([1, 1, 2, 2, 3], [2, 3, 3, 4, 4])
    assert 0 < tied.p < 1 and tied.p == pytest.approx(exact_p([1, 1, 2, 2, 3], [2, 3, 3, 4, 4]), abs=0.05)


def test_u_of_the_first_sample() -> None:
    # U counts the pairs where the first sample is larger: here none of them.
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]).u == 0
    assert mann_whitney_u([4, 5, 6], [1, 2, 3]).u == 9


def test_compare_two_real_runs(real_run: Path, real_run_b: Path, tmp_path: Path) -> None:
    md = tmp_path / "cmp.md"
    text = compare(real_run, real_run_b, md)
    a, b = load_run(real_run).records, load_run(real_run_b).records
    ratios = [float(np.median(rb.workload.times_ms) / np.median(ra.workload.times_ms))
              for ra, rb in zip(a, b, strict=True)]
    gm = math.exp(sum(map(math.log, ratios)) / len(ratios))
    assert f"geometric mean of B/A over {len(ratios)} cells: {gm:.3f}" in text
    for rec, ratio in zip(a, ratios, strict=True):
        line = next(ln for ln in text.splitlines() if ln.startswith(rec.label) and f" {rec.hidden} " in ln)
        assert f"{ratio:.3f}" in line
    assert md.read_text().startswith("# Comparison: run-a (A) vs run-b (B)")
    assert md.read_text().count("\n| ") == len(a) + 1


def test_more_work_is_a_regression_and_less_an_improvement(tmp_path: Path) -> None:
    # Same framework and sizes, but B's sequences are 8x longer: B really is slower, measurably.
    fast = make_real_run(tmp_path / "fast", hidden=(16,), run_id="fast", iters=20)
    slow = make_real_run(tmp_path / "slow", hidden=(16,), run_id="slow", iters=20, seq_len=64)
    (row,) = build(fast, slow).rows
    assert row.ratio is not None and row.ratio > 1.05 and row.test is not None and row.test.p < 0.05
    assert row.verdict == "REGRESSION"
    (back,) = build(slow, fast).rows
    assert back.verdict == "improvement"
    text = compare(fast, slow)
    assert "the runs differ in seq_len: 8 (A) vs 64 (B)" in text
    assert "1 regression(s), 0 improvement(s)" in text


def test_cells_in_one_run_only(real_run: Path, tmp_path: Path) -> None:
    other = make_real_run(tmp_path / "other", hidden=(8, 24), run_id="other")
    verdicts = {r.key[3]: r.verdict for r in build(real_run, other).rows}
    assert verdicts[16] == "only in A" and verdicts[24] == "only in B"


def test_run_cli_exit_codes(
    real_run: Path, real_run_b: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_cli(real_run, real_run_b, None) == 0
    assert "geometric mean" in capsys.readouterr().out
    assert run_cli(real_run, tmp_path / "missing", None) == 2
    assert "not a run directory" in capsys.readouterr().err
