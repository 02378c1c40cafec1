"""The report's building blocks: statistics, FLOPs, GPU peaks, the 2016 baseline and row mapping, equivalence."""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from orchestrator.frameworks import Framework, FrameworkMeta
from orchestrator.report import peaks
from orchestrator.report.baseline import load_baseline, original_row_for
from orchestrator.report.equivalence import TOLERANCE, Oracle, reference_losses
from orchestrator.report.flops import forward_flops, training_step_flops
from orchestrator.report.load import load_run
from orchestrator.report.stats import describe, describe_repeats, difference, median_ci_ranks, modified_z, overlaps
from tests.conftest import missing

# The seed's table, from the shared folder beside the checkout (CI keeps a copy of it beside its clone).
SEED_README = Path(__file__).resolve().parent.parent.parent / "shared" / "seed" / "lstm-benchmarks-README.md"

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


# ------------------------------------------------------------------------------------------------ statistics
def _coverage(n: int, r: int) -> Fraction:
    """P(x_(r) <= median <= x_(n+1-r)) = 1 - 2 P(Bin(n, 1/2) <= r - 1), by definition."""
    return 1 - 2 * Fraction(sum(math.comb(n, i) for i in range(r)), 2**n)


@pytest.mark.parametrize("n", [*range(1, 40), 50, 99, 150, 1000])
def test_median_interval_is_the_tightest_with_95_percent(n: int) -> None:
    r, coverage = median_ci_ranks(n)
    assert coverage == pytest.approx(float(_coverage(n, r)))
    if n >= 6:
        assert _coverage(n, r) >= Fraction(95, 100)
        if r + 1 <= (n + 1) // 2:
            assert _coverage(n, r + 1) < Fraction(95, 100)
    else:
        assert r == 1  # nothing reaches 95%: the widest interval, its real coverage reported


def test_median_interval_covers_the_true_median_as_promised() -> None:
    rng = np.random.default_rng(7)
    n, trials = 30, 4000
    true_median = math.log(2)  # of the unit exponential
    hits = 0
    for _ in range(trials):
        s = describe(rng.exponential(size=n))
        hits += s.ci_low <= true_median <= s.ci_high
    _, coverage = median_ci_ranks(n)
    assert abs(hits / trials - coverage) < 0.015


def test_describe_on_real_times(real_run: Path) -> None:
    times = load_run(real_run).records[0].workload.times_ms
    s = describe(times)
    assert s.n == len(times) and s.median == pytest.approx(float(np.median(times)))
    assert s.ci_low <= s.median <= s.ci_high
    assert s.cv == pytest.approx(float(np.std(times, ddof=1) / np.mean(times)))


def test_modified_z_flags_a_far_value_and_nothing_in_constant_data(real_run: Path) -> None:
    times = list(load_run(real_run).records[0].workload.times_ms)
    far = float(np.median(times)) * 50
    z = modified_z([*times, far])
    assert abs(z[-1]) > 3.5
    assert describe([*times, far]).outliers >= 1
    assert describe([2.0] * 10).outliers == 0


def test_overlap() -> None:
    rng = np.random.default_rng(1)
    a = describe(rng.normal(10, 0.1, 50))
    b = describe(rng.normal(10, 0.1, 50))
    c = describe(rng.normal(20, 0.1, 50))
    assert overlaps(a, b) and not overlaps(a, c)


# Three fresh processes whose batch medians are 10, 11 and 12 ms (each process: its median +- 0.1 ms).
REPEATS_A = [[m - 0.1, m, m + 0.1] for m in (10.0, 11.0, 12.0)]
# The same processes 1.5x slower: medians 15, 16.5, 18.
REPEATS_B = [[1.5 * t for t in r] for r in REPEATS_A]


def test_repeat_level_statistics_against_a_hand_computed_example() -> None:
    s = describe_repeats(REPEATS_A)
    # By hand: logs 2.302585, 2.397895, 2.484907; mean 2.395129 -> time = 1320^(1/3) = 10.9696 ms.
    # sd of the logs 0.091192, standard error 0.052650; t(0.975, df 2) = 4.3027 (table) -> half-width 0.226537.
    assert (s.repeats, s.basis, s.repeat_medians) == (3, "processes", (10.0, 11.0, 12.0))
    assert s.median == pytest.approx(1320 ** (1 / 3), rel=1e-9)
    assert s.ci_low == pytest.approx(math.exp(2.395129 - 0.226537), rel=1e-5)  # 8.7467
    assert s.ci_high == pytest.approx(math.exp(2.395129 + 0.226537), rel=1e-5)  # 13.7578
    assert s.repeat_cv == pytest.approx(1.0 / 11.0)  # sd of 10, 11, 12 is 1; mean 11
    assert s.n == 9 and s.min == 9.9 and s.max == 12.1  # batches are still described


def test_one_repeat_is_described_by_its_batches() -> None:
    one = describe_repeats([REPEATS_A[0]])
    assert (one.repeats, one.basis, one.median) == (1, "batches", 10.0)
    assert (one.ci_low, one.ci_high) == (describe(REPEATS_A[0]).ci_low, describe(REPEATS_A[0]).ci_high)


def test_welch_difference_against_a_hand_computed_example() -> None:
    # By hand: log ratio ln 1.5; equal spread on both sides, so Welch's df = 2 (n - 1) = 4, t(0.975, 4) = 2.7764;
    # standard error sqrt(2 * 0.0083161 / 3) = 0.074458 -> half-width 0.206727 on the log scale.
    d = difference(describe_repeats(REPEATS_A), describe_repeats(REPEATS_B))
    assert d.ratio == pytest.approx(1.5)
    assert d.low == pytest.approx(1.5 * math.exp(-0.206727), rel=1e-5)  # 1.2199
    assert d.high == pytest.approx(1.5 * math.exp(0.206727), rel=1e-5)  # 1.8445
    assert d.repeats == (3, 3) and d.p is not None and d.p < 0.01
    assert not difference(describe_repeats([REPEATS_A[0]]), describe_repeats(REPEATS_B)).known


def test_ties_are_judged_over_processes_not_batches() -> None:
    # Processes with medians 10, 11, 12 ms and 51 batches each; B's sit 0.5 ms above. Pooled as batches their
    # intervals do not overlap (the per-batch view would rank them), but three processes a side cannot tell a
    # 4.5% shift from their own 10% spread.
    a = [[m + 0.01 * k for k in range(-25, 26)] for m in (10.0, 11.0, 12.0)]
    b = [[t + 0.5 for t in r] for r in a]
    assert not overlaps(describe([t for r in a for t in r]), describe([t for r in b for t in r]))
    assert overlaps(describe_repeats(a), describe_repeats(b))
    assert not overlaps(describe_repeats(REPEATS_A), describe_repeats(REPEATS_B))


# ------------------------------------------------------------------------------------------------ FLOPs
def test_training_step_flops_match_the_notes_figure() -> None:
    # NOTES.md: about 1.65 TFLOP per step at B = 128, T = 64, H = 2048.
    assert training_step_flops(128, 64, 2048) == pytest.approx(1.65e12, rel=0.01)
    # ... and the seed's Theano 526.7 ms is about 3.1 TFLOP/s.
    assert training_step_flops(128, 64, 2048) / 0.5267 / 1e12 == pytest.approx(3.1, abs=0.05)


def test_forward_flops_count_every_matrix_product() -> None:
    b, t, h, e, c = 3, 5, 7, 11, 2
    # One [B, E+H] x [E+H, 4H] product per step (2 FLOP per multiply-add), then [B, H] x [H, C].
    assert forward_flops(b, t, h, e, c) == t * 2 * b * (e + h) * 4 * h + 2 * b * h * c
    assert training_step_flops(b, t, h, e, c) > 3 * forward_flops(b, t, h, e, c)


# ------------------------------------------------------------------------------------------------ peaks
@pytest.mark.parametrize(("name", "fp32"), [
    ("NVIDIA H100 80GB HBM3", 67.0), ("NVIDIA H100 PCIe", 51.0), ("NVIDIA H200", 67.0), ("NVIDIA A100-SXM4-80GB", 19.5),
    ("Tesla V100-SXM2-16GB", 15.7), ("Tesla T4", 8.1), ("NVIDIA A10", 31.2), ("NVIDIA L4", 30.3),
    ("NVIDIA L40S", 91.6), ("NVIDIA GeForce GTX 980", 4.98),
])
def test_known_gpus(name: str, fp32: float) -> None:
    peak = peaks.lookup(name)
    assert peak is not None and peak.fp32_tflops == fp32 and peak.source.startswith("http")


@pytest.mark.parametrize("name", ["NVIDIA A10G", "NVIDIA H100", "NVIDIA GeForce GTX 980 Ti", "AMD Instinct MI300X", "",
                                  None])
def test_unknown_or_ambiguous_gpus_get_no_peak(name: str | None) -> None:
    assert peaks.lookup(name) is None


def test_gpus_without_tf32_tensor_cores_have_no_tf32_peak() -> None:
    for name in ("Tesla T4", "Tesla V100-PCIE-32GB", "NVIDIA GeForce GTX 980"):
        assert peaks.lookup(name).tf32_tflops is None  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------ baseline
def test_baseline_matches_the_seed_readme_table() -> None:
    if not SEED_README.is_file():
        missing(f"{SEED_README} is not on this machine (the shared folder belongs beside the checkout)")
    base = load_baseline()
    lines = [ln for ln in SEED_README.read_text().splitlines() if ln.startswith("|") and "---" not in ln]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    sizes = [int(h.split("-")[1]) for h in header[1:]]
    assert [ln.strip("|").split("|")[0].strip() for ln in lines[1:]] == [base.labels[r] for r in base.rows]
    for ln, row in zip(lines[1:], base.rows, strict=True):
        for size, text in zip(sizes, [c.strip() for c in ln.strip("|").split("|")[1:]], strict=True):
            cell = base.cell(row, size)
            assert cell is not None
            if re.fullmatch(r"[0-9.]+", text):
                assert cell.ms == float(text)
            else:
                assert cell.ms is None and cell.word is not None and cell.word.lower() == text.lower()


def test_baseline_carries_its_caveats() -> None:
    base = load_baseline()
    assert base.cell("mxnet", 256).ms_alt == 490.2  # type: ignore[union-attr]
    assert any("10,000 outputs" in c for c in base.caveats["torch"])
    assert any("output[0]" in c for c in base.caveats["theano"])
    assert all(base.caveats[r] for r in base.rows)


def _fw(name: str, **meta: object) -> Framework:
    return Framework(name, Path("images") / name, FrameworkMeta(**meta))


def test_row_mapping_by_label_and_original_row() -> None:
    base = load_baseline()
    keras = _fw("keras", variants=("tensorflow", "jax"), original_row="keras (tensorflow)")
    assert original_row_for("keras (tensorflow)", keras, "tensorflow", base) == "keras (tensorflow)"
    assert original_row_for("keras (jax)", keras, "jax", base) is None
    pytorch = _fw("pytorch", label="PyTorch", original_row="torch")
    assert original_row_for("PyTorch", pytorch, None, base) == "torch"
    assert original_row_for("Tensorflow(7.1)", None, None, base) == "tensorflow"
    assert original_row_for("keras-theano", _fw("keras-theano"), None, base) == "keras (theano)"
    assert original_row_for("numpy (reference)", _fw("numpy-reference"), None, base) is None


# ------------------------------------------------------------------------------------------------ equivalence
def test_host_reference_agrees_with_the_reference_workload(real_run: Path) -> None:
    oracle = Oracle([])  # no reference cell: computed on the host
    for rec in load_run(real_run).records:
        e = oracle.check([rec])
        assert e.verdict == "ok" and e.reference is not None and e.reference.source == "host"
        assert e.rel_dev is not None and e.rel_dev <= TOLERANCE
        assert e.delta_ratio == pytest.approx(1.0, rel=1e-3)
        assert e.params_ok is True


def test_a_wrong_loss_is_a_mismatch(real_run: Path) -> None:
    rec = load_run(real_run).records[0]
    assert rec.workload is not None and rec.workload.loss_after_one_step is not None
    w = rec.workload.model_copy(update={"loss_after_one_step": rec.workload.loss_after_one_step * (1 + 10 * TOLERANCE)})
    e = Oracle([]).check([rec.model_copy(update={"workload": w})])
    assert e.verdict == "mismatch" and e.symbol == "✗"
    assert e.rel_dev == pytest.approx(10 * TOLERANCE, rel=1e-3)


def test_a_cell_in_the_run_is_used_as_reference(real_run: Path) -> None:
    records = load_run(real_run).records
    oracle = Oracle(records)
    big = dict(records[0].workload.params, hidden=2048, batch=128, seq_len=64, vocab=10000)
    assert "too large" in Oracle([]).reference(big)  # type: ignore[operator]
    assert oracle.reference(records[0].workload.params).source == records[0].cell_id  # type: ignore[union-attr]


def test_reference_losses_are_cached_per_params(real_run: Path) -> None:
    params = load_run(real_run).records[0].workload.params
    assert reference_losses(params) is reference_losses(dict(params, framework="other", iters=99))
