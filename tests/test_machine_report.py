"""Machine state in the report and in compare: real runs (local runner, sampled for real), and the same runs with
a GPU summary made from NVML-shaped samples (test_machine.gpu_samples: made-up inputs, no GPU here)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from report_helpers import derived_run
from test_machine import gpu_samples

from orchestrator.compare import compare
from orchestrator.machine.cell import SAMPLES_FILE
from orchestrator.machine.summary import summarise
from orchestrator.report import render
from orchestrator.report.flops import flops_for_params, tflops_per_s
from orchestrator.report.load import load_run

pytest_plugins = ["report_fixtures"]


def table_lines(md: str, title: str) -> list[str]:
    part = md.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    return [ln for ln in part.splitlines() if ln.startswith("| ") and "---" not in ln][1:]


def test_a_real_run_reports_each_cells_machine_state(real_run: Path, tmp_path: Path) -> None:
    records = load_run(real_run).records
    for rec in records:
        m = rec.machine
        assert m is not None and m.window == "timed" and m.unavailable == {}, m
        assert m.gpu_energy_j is None
        samples_file = real_run / "cells" / rec.cell_id / SAMPLES_FILE
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        # The process's own counters end when it exits, so a tiny cell's timed window of a few ms (0.2 s period) can
        # lie after the last sample that still read them (no CPU figure: None, not a guess), straddle it (the covered
        # part's rate carried on, and the coverage says how much was covered) or lie before it (covered whole).
        reads = [s["t"] for s in samples if "cell_cpu_s" in s]
        assert rec.workload is not None and rec.workload.timed_window is not None
        t0, t1 = rec.workload.timed_window
        t0, t1 = max(t0, samples[0]["t"]), min(t1, samples[-1]["t"])  # the summary's window: cut to the samples
        covered = min(t1, reads[-1]) - max(t0, reads[0])
        if covered <= 0:
            assert m.cell_cpu_s is None
        else:
            # The coverage is the least over the counters, so at most the CPU counter's.
            assert m.cell_cpu_s is not None and m.coverage is not None
            assert m.coverage <= round(covered / (t1 - t0), 3) + 0.001
            if t1 <= reads[-1]:
                assert m.host_others_share is not None
            else:
                assert m.coverage < 1
    render(real_run, tmp_path)
    rows = table_lines((tmp_path / "report.md").read_text(), "Machine state during each cell")
    assert len(rows) == len(records)
    assert all(r.machine.host_others_share is None or f"{100 * r.machine.host_others_share:.0f}%" in row
               for r, row in zip(records, rows, strict=True))


def test_throttled_gpu_cells_are_flagged_with_energy_per_batch(real_run: Path, tmp_path: Path) -> None:
    first = load_run(real_run).records[0]
    gpu = summarise(gpu_samples(reasons=0x4), [1002.0, 1008.0], batches=50, period_s=0.5)
    assert gpu is not None
    run = derived_run(real_run, tmp_path / "gpu", replace={first.cell_id: first.model_copy(update={"machine": gpu})})
    render(run)
    md = (run / "report.md").read_text()
    row = next(r for r in table_lines(md, "Machine state during each cell") if f"| {first.hidden} |" in r)
    per_w = tflops_per_s(flops_for_params(first.cell_params or {}), first.median_ms) / gpu.gpu_avg_w
    assert "THROTTLED" in row and "sw-power-cap" in row and "| 24 |" in row and f"{per_w:.3g}" in row
    assert "the GPU throttled (power or heat) during" in md.split("## Warnings", 1)[1].split("\n## ", 1)[0]
    assert "THROTTLED" in (run / "report.html").read_text()
    csv = pd.read_csv(run / "results.csv").set_index("cell_id")
    assert csv.loc[first.cell_id, "j_per_batch"] == 24 and bool(csv.loc[first.cell_id, "throttled"]) is True


def test_compare_warns_when_machine_states_differ(real_run: Path, real_run_b: Path, tmp_path: Path) -> None:
    quiet = compare(real_run, real_run_b)
    busy_a = sum(1 for r in load_run(real_run).records if r.machine and r.machine.host_busy)
    assert ("run A:" in quiet) == bool(busy_a)  # this host's own load, measured: noted only when it was there
    first = load_run(real_run_b).records[0]
    gpu = summarise(gpu_samples(reasons=0x40), [1002.0, 1008.0], batches=50, period_s=0.5)
    b = derived_run(
        real_run_b, tmp_path / "b", replace={first.cell_id: first.model_copy(update={"machine": gpu})},
        manifest={"gpus": [{"index": "0", "name": "GPU X", "driver": "2", "power_limit_w": 300.0}]},
    )
    a = derived_run(real_run, tmp_path / "a",
                    manifest={"gpus": [{"index": "0", "name": "GPU X", "driver": "1", "power_limit_w": 350.0}]})
    text = compare(a, b)
    assert "the GPUs' driver differ: 1 (A) vs 2 (B)" in text
    assert "the GPUs' power limit (W) differ: 350.0 (A) vs 300.0 (B)" in text
    assert "run B: the GPU throttled (power or heat) in 1 cell(s)" in text


def test_a_busy_host_cell_is_warned_about(real_run: Path, tmp_path: Path) -> None:
    first = load_run(real_run).records[0]
    assert first.machine is not None
    marked = first.model_copy(update={"machine": first.machine.model_copy(update={"host_busy": True})})
    run = derived_run(real_run, tmp_path / "busy", replace={first.cell_id: marked})
    render(run)
    md = (run / "report.md").read_text()
    assert f"other processes took more than 25% of the CPUs during {first.label} hidden-{first.hidden}" in md
    assert "BUSY HOST" in table_lines(md, "Machine state during each cell")[0]
    n_busy = sum(1 for r in load_run(run).records if r.machine and r.machine.host_busy)
    assert f"run B: {n_busy} cell(s) ran on a busy host" in compare(real_run, run)
