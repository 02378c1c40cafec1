"""Checks a workload cannot fake, and no false alarm under load (issue 16), on the real engine and real cells.

1. Results consistent in themselves that the host's own measurements refuse: the chaos fixture framework
   (tests/fixtures/chaos, variants in FORGED there) forges them after the harness wrote a good result, and the
   Docker runner runs it as any cell. Each must end `invalid-output` naming what the host found.
2. Real numpy-reference cells timed by the local runner while CPU hogs (bounded busy loops this test starts and
   stops) take every core: each must stay `ok`; the load is a flag in the record and the report, never a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUILD_ARG, FIXTURES, copy_project, run_cli

SMALL = ["--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=3", "--set", "warmup=0"]
FORGED = {
    "forgelong": "add up to 12000.0 ms but the cell's process lived",
    "nullgates": "without timed_wall_ms, validity (null)",
    "nanloss": "the loss is not finite at timed step(s) [0, 1, 2]",
    "farwindow": "lies outside the time the host saw the cell run",
}
# A busy loop that ends by itself: a hog this test forgets can never outlive it by much.
HOG = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {d["cell_id"]: d for d in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


@pytest.mark.docker
def test_forged_results_are_invalid_output_naming_what_the_host_saw(base_image: str, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", {"chaos": FIXTURES / "chaos"})
    (project / "forged.yaml").write_text(
        f"frameworks:\n  - name: chaos\n    variants: [ok, {', '.join(FORGED)}]\ndevice: cpu\nhidden: [16]\n")
    out = tmp_path / "run"
    proc = run_cli(["forged.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", *SMALL], cwd=project,
                   timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = records(out)
    assert cells["chaos-ok-h16-r0"]["status"] == "ok", cells["chaos-ok-h16-r0"]["reason"]
    for variant, words in FORGED.items():
        cell = cells[f"chaos-{variant}-h16-r0"]
        assert cell["status"] == "invalid-output" and words in cell["reason"], (variant, cell["reason"])
    # The machine summary never takes the forged window's length: clipped to what the host sampled.
    machine = cells["chaos-farwindow-h16-r0"]["machine"]
    if machine is not None:  # sampled (a local engine)
        assert machine["window_s"] < 600 and machine["window_clipped_s"] > 1e10, machine
    report = (out / "report.md").read_text()
    assert "lies outside the time the host saw the cell run" in report


@pytest.fixture
def hogs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """One more busy process than there are CPUs, each ending by itself after at most 10 minutes."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG.format(seconds=600)], stdin=subprocess.DEVNULL)
             for _ in range((os.cpu_count() or 1) + 1)]
    try:
        yield procs
    finally:
        for p in procs:  # only the processes this fixture started, by their own handle
            p.kill()
            p.wait()


def test_real_cells_beside_cpu_hogs_stay_ok_with_a_flag(hogs: list[subprocess.Popen[bytes]],
                                                        tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    (project / "busy.yaml").write_text("frameworks: [numpy-reference]\ndevice: cpu\nhidden: [64]\nrepeats: 3\n")
    out = tmp_path / "run"
    # Steps of tens of ms: a timed window of seconds, several of the host sampler's periods (its counters need two
    # samples around the window to say how busy the host was).
    proc = run_cli(["busy.yaml", "--out", str(out), "--runner", "local", "--python", "current", "-q",
                    "--set", "batch=32", "--set", "seq_len=32", "--set", "vocab=1000", "--set", "iters=30",
                    "--set", "warmup=1"], cwd=project, timeout=900)
    assert all(h.poll() is None for h in hogs), "a hog ended before the cells did: the host was not busy throughout"
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cells = records(out)
    assert len(cells) == 3
    for cell in cells.values():
        assert cell["status"] == "ok", cell["reason"]
        machine = cell["machine"]
        assert machine is not None and machine["window"] == "timed" and machine["window_s"] > 0.5, machine
        assert machine["host_busy"] is True, machine
    report = json.loads((out / "report.json").read_text())
    assert any("other processes took more than" in w for w in report["warnings"]), report["warnings"]
