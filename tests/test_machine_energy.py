"""Energy without an energy counter (pre-Volta GPUs, e.g. the 2016 GTX 980): energy per batch from the integrated
power samples, labelled as such (synthetic NVML-shaped samples, as tests/test_machine.py)."""

from __future__ import annotations

import pytest
from test_machine import gpu_samples

from orchestrator.machine.summary import summarise
from orchestrator.report.machine import energy_text


def without_counter(samples: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if k != "gpu_energy_j"} for s in samples]


def test_no_counter_integrates_the_power_samples() -> None:
    samples = without_counter(gpu_samples())
    for i, s in enumerate(samples):
        s["gpu_power_w"] = 100.0 + 10.0 * i  # a ramp: 100 W at t=1000, +20 W/s
    m = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_energy_source == "power-samples"
    # The ramp's integral over [1002, 1008]: (140 W + 260 W) / 2 x 6 s.
    assert m.gpu_energy_j == pytest.approx(200.0 * 6.0)
    assert m.j_per_batch == pytest.approx(1200.0 / 50) and m.gpu_avg_w == pytest.approx(200.0)


def test_the_counter_wins_when_there_is_one() -> None:
    m = summarise(gpu_samples(), [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_energy_source == "counter" and m.gpu_energy_j == pytest.approx(1200.0)


def test_a_window_between_two_power_samples_is_interpolated() -> None:
    samples = without_counter(gpu_samples(period=2.0, n=3))  # samples at 1000, 1002, 1004; 200 W
    m = summarise(samples, [1000.5, 1001.5], batches=10, period_s=2.0)
    assert m is not None and m.gpu_energy_j == pytest.approx(200.0) and m.coverage == 1.0


def test_no_power_and_no_counter_means_no_energy() -> None:
    samples = [{k: v for k, v in s.items() if k not in ("gpu_energy_j", "gpu_power_w")} for s in gpu_samples()]
    m = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_energy_j is None and m.gpu_energy_source is None and m.j_per_batch is None


def test_the_report_labels_energy_from_power_samples() -> None:
    counted = summarise(gpu_samples(), [1002.0, 1008.0], batches=50, period_s=0.5)
    integrated = summarise(without_counter(gpu_samples()), [1002.0, 1008.0], batches=50, period_s=0.5)
    assert counted is not None and integrated is not None
    assert energy_text(counted) == "24"
    assert energy_text(integrated) == "24 (from power samples)"
