"""compare RUN_A RUN_B on real runs: ratios, verdicts only from fresh-process repeats, "cannot tell" otherwise."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli as run_cli_process
from report_helpers import derived_run, make_real_run

from orchestrator.compare import build, compare, judge, run_cli
from orchestrator.report.load import load_run
from orchestrator.report.stats import Difference

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


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


def test_one_process_per_side_cannot_tell_even_a_large_change(tmp_path: Path) -> None:
    # B's sequences are 8x longer: really slower, but one process per side cannot separate that from run-to-run noise.
    fast = make_real_run(tmp_path / "fast", hidden=(16,), run_id="fast", iters=20)
    slow = make_real_run(tmp_path / "slow", hidden=(16,), run_id="slow", iters=20, seq_len=64)
    for a, b in ((fast, slow), (slow, fast)):
        (row,) = build(a, b).rows
        assert row.verdict == "cannot tell"
        assert row.reason.startswith("1 repeat per side; run with --set repeats=3")
        assert row.diff is not None and not row.diff.known
    text = compare(fast, slow)
    assert "REGRESSION" not in text and "improvement (" not in text
    assert "cannot tell (1 repeat per side; run with --set repeats=3" in text
    assert "0 regression(s), 0 improvement(s), 0 no change, 1 cannot tell" in text
    assert "the runs differ in seq_len: 8 (A) vs 64 (B)" in text


def test_repeats_on_both_sides_give_a_verdict(tmp_path: Path) -> None:
    # Three fresh processes per side: the 8x longer sequences are a regression one way, an improvement the other.
    fast = make_real_run(tmp_path / "fast", hidden=(16,), run_id="fast", iters=10, repeats=3)
    slow = make_real_run(tmp_path / "slow", hidden=(16,), run_id="slow", iters=10, repeats=3, seq_len=64)
    (row,) = build(fast, slow).rows
    assert row.a is not None and row.b is not None and (row.a.repeats, row.b.repeats) == (3, 3)
    assert row.diff is not None and row.diff.known and row.diff.low > 1.05  # type: ignore[operator]
    assert row.verdict == "REGRESSION"
    (back,) = build(slow, fast).rows
    assert back.verdict == "improvement"
    assert "1 regression(s), 0 improvement(s)" in compare(fast, slow)
    # The same measurements, with the host's state set plainly: quiet on both sides, then busy in B.
    quiet_a, quiet_b = (with_host_busy(run, tmp_path / f"quiet-{run.name}", False) for run in (fast, slow))
    (row,) = build(quiet_a, quiet_b).rows
    assert (row.verdict, row.reason) == ("REGRESSION", "")
    (row,) = build(quiet_a, with_host_busy(slow, tmp_path / "busy-b", True)).rows
    assert row.verdict == "REGRESSION" and row.reason.startswith("busy host in B: ")
    assert "REGRESSION (busy host in B: other processes took the cells' CPUs; rerun to confirm)" in compare(
        quiet_a, tmp_path / "busy-b")


def with_host_busy(run: Path, dst: Path, busy: bool) -> Path:
    """A copy of a real run whose records say the host was (not) busy; everything measured stays as it was."""
    recs = load_run(run).records
    assert all(r.machine is not None for r in recs)
    return derived_run(run, dst, replace={r.cell_id: r.model_copy(update={"machine": r.machine.model_copy(
        update={"host_busy": busy})}) for r in recs if r.machine})


def test_one_side_with_one_repeat_cannot_tell(repeated_run: Path, tmp_path: Path) -> None:
    single = make_real_run(tmp_path / "single", hidden=(8,), run_id="single")
    (row,) = build(single, repeated_run).rows
    assert row.verdict == "cannot tell" and row.reason.startswith("1 repeat in A; run with --set repeats=3")


@pytest.mark.parametrize(("low", "high", "word"), [
    (1.06, 1.30, "REGRESSION"), (0.70, 0.94, "improvement"), (0.96, 1.04, "no change"),
    (1.01, 1.20, "cannot tell"), (0.80, 1.02, "cannot tell"), (0.90, 1.10, "cannot tell"),
])
def test_a_verdict_needs_the_whole_interval_past_or_within_five_percent(low: float, high: float, word: str) -> None:
    verdict, why = judge(Difference((low * high) ** 0.5, low, high, 0.01, (3, 3)))
    assert verdict == word
    assert (why == "") is (word != "cannot tell")
    if word == "cannot tell":
        assert why.startswith(f"95% interval {low:.3f}-{high:.3f} reaches past +-5%")


def test_help_says_what_a_verdict_means() -> None:
    proc = run_cli_process(["compare", "--help"])
    assert proc.returncode == 0
    flat = " ".join(proc.stdout.split())
    for words in ("fresh process", "REGRESSION when the whole interval lies above 1.05", "cannot tell",
                  "--set repeats=3", "Welch's t test"):
        assert words in flat


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
