"""The machine sampler on real cells (Docker engine, numpy reference image): the busy-host flag and CPU time.

A cell timed beside CPU hogs must be flagged; a cell timed on a quiet host must not, and its container's CPU time
over the timed window must fit the window (at least half of it for this one-thread-bound workload, at most all
CPUs for all of it). "Quiet" is awaited before the cell runs (up to two minutes): on a host that stays busy with
other work that test cannot be quiet, so it says so (a skip on a developer's machine, a failure under CI, whose
serial phase runs it alone) rather than pass or fail by luck.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.machine.cell import SAMPLES_FILE
from orchestrator.machine.cpu import HostCpu
from orchestrator.machine.summary import BUSY_SHARE
from tests.conftest import BUILD_ARG, missing, run_cli

pytestmark = [pytest.mark.docker, pytest.mark.slow]
# Small enough for two cores, long enough (tens of batches) for several samples in the timed part.
SIZES = ["--set", "batch=32", "--set", "seq_len=32", "--set", "vocab=1000", "--set", "iters=20", "--set", "warmup=1",
         "--set", "repeats=1"]


def run_cell(project: Path, out: Path) -> tuple[dict, Path]:
    args = ["matrix.yaml", "--only", "numpy-reference", "--hidden", "128", "--device", "cpu", "--build-arg", BUILD_ARG,
            "--out", str(out), "-q", "--no-report", *SIZES]
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record_path,) = (out / "cells").glob("*/record.json")
    record = json.loads(record_path.read_text())
    assert record["status"] == "ok", record
    return record, record_path.parent


def background_share(seconds: float = 2.0) -> float:
    """Share of all CPUs' time that was busy while this test only waited (someone else's work)."""
    host = HostCpu()
    a = host.read()
    time.sleep(seconds)
    b = host.read()
    return (b["host_busy_s"] - a["host_busy_s"]) / (b["host_total_s"] - a["host_total_s"])


def wait_until_quiet(limit_s: float = 120) -> None:
    """Until the host is quiet: what an earlier test left (a container going away, a cache written) settles within
    seconds. A host busy for limit_s is a missing prerequisite (CI runs this test in its serial phase, alone)."""
    deadline = time.monotonic() + limit_s
    while (share := background_share()) > BUSY_SHARE / 2:
        if time.monotonic() > deadline:
            missing(f"the host is busy with other work ({share:.0%} of its CPUs' time for {limit_s:g} s): "
                    "no quiet cell possible now")


@contextlib.contextmanager
def cpu_hogs(n: int) -> Iterator[None]:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def check_raw_samples(cell_dir: Path, record: dict) -> None:
    samples = [json.loads(line) for line in (cell_dir / SAMPLES_FILE).read_text().splitlines()]
    t0, t1 = record["workload"]["timed_window"]
    assert samples[0]["t"] <= t0 < t1 <= samples[-1]["t"]  # sampled from before the timed part to after it
    assert all("host_busy_s" in s for s in samples) and any("cell_cpu_s" in s for s in samples)


def test_a_cell_timed_beside_cpu_hogs_is_flagged_busy(base_image: str, project_copy, tmp_path: Path) -> None:
    project = project_copy()
    with cpu_hogs(os.cpu_count() or 1):
        record, cell_dir = run_cell(project, tmp_path / "run")
    m = record["machine"]
    assert m["window"] == "timed" and m["unavailable"] == {}, m
    assert m["host_busy"] is True and m["host_others_share"] > BUSY_SHARE, m
    # Squeezed by the hogs, the container still used CPU in its window, and never more than all CPUs for all of it.
    assert 0 < m["cell_cpu_s"] <= (os.cpu_count() or 1) * m["window_s"] * 1.05 + 0.05, m
    check_raw_samples(cell_dir, record)


def test_a_quiet_cell_is_not_flagged_and_its_cpu_time_fits(base_image: str, project_copy, tmp_path: Path) -> None:
    project = project_copy()
    wait_until_quiet()
    record, cell_dir = run_cell(project, tmp_path / "run")
    m = record["machine"]
    assert m["window"] == "timed" and m["unavailable"] == {}, m
    assert m["host_busy"] is False, m
    cpus = os.cpu_count() or 1
    assert 0.5 * m["window_s"] <= m["cell_cpu_s"] <= cpus * m["window_s"] * 1.05 + 0.05, m
    assert m["gauges"]["cell_mem_bytes"]["max"] > 10 << 20  # python + numpy in the container: tens of MiB
    check_raw_samples(cell_dir, record)
