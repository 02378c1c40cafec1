"""A shared GPU noticed: NVML's running compute processes on the cell's GPU, sampled with the machine state; another
process during the timed window flags the cell GPU SHARED (synthetic samples, as tests/test_machine.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
from report_helpers import derived_run
from test_machine import gpu_samples
from test_machine_report import table_lines

from orchestrator.compare import compare
from orchestrator.machine import gpu
from orchestrator.machine.cell import CellProcess, owned_by
from orchestrator.machine.summary import MachineState, summarise
from orchestrator.report import render
from orchestrator.report.load import load_run
from orchestrator.report.machine import flags

pytest_plugins = ["report_fixtures"]


def with_others(samples: list[dict], others: dict[int, int]) -> list[dict]:
    """The samples, with `gpu_other_procs` = others[i] at sample i (0 elsewhere)."""
    return [{**s, "gpu_other_procs": others.get(i, 0)} for i, s in enumerate(samples)]


def test_another_process_in_the_timed_window_flags_gpu_shared() -> None:
    samples = with_others(gpu_samples(), {6: 1, 7: 2})  # t = 1003.0, 1003.5
    m = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_shared is True and m.gpu_other_procs == 2
    assert "GPU SHARED" in flags(m)


def test_another_process_outside_the_timed_window_does_not() -> None:
    samples = with_others(gpu_samples(), {0: 1, 20: 3})  # before and after the timed part only
    m = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_shared is False and m.gpu_other_procs == 0
    assert "GPU SHARED" not in flags(m)


def test_no_process_list_means_unknown_not_alone() -> None:
    m = summarise(gpu_samples(), [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.gpu_shared is None and m.gpu_other_procs is None
    old = MachineState(window="timed", window_s=1.0, period_s=0.5, samples=3)  # records before the field load
    assert old.gpu_shared is None


def test_the_sample_counts_the_processes_that_are_not_the_cells() -> None:
    procs = [SimpleNamespace(pid=10), SimpleNamespace(pid=11), SimpleNamespace(pid=99)]
    assert gpu.other_processes(procs, lambda pid: pid in (10, 11)) == 1
    assert gpu.other_processes(None, lambda pid: True) is None  # NVML could not list them: unknown
    assert gpu.from_nvml_units({"other_procs": 2})["gpu_other_procs"] == 2


def test_a_process_is_the_cells_when_it_shares_its_session_or_cgroup() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"], start_new_session=True)
    try:
        local = owned_by(CellProcess(pid=child.pid, own_cgroup=False))
        assert local(child.pid) and not local(os.getpid())
        container = owned_by(CellProcess(pid=child.pid, own_cgroup=True))
        assert container(child.pid) and container(os.getpid())  # same cgroup here: both the "container's"
        assert not local(2**22 + 7) and not container(2**22 + 7)  # a pid this host cannot see is another's
    finally:
        child.kill()
        child.wait()


def test_a_gpu_shared_cell_is_flagged_warned_and_exported(real_run: Path, tmp_path: Path) -> None:
    first = load_run(real_run).records[0]
    shared = summarise(with_others(gpu_samples(), {6: 1}), [1002.0, 1008.0], batches=50, period_s=0.5)
    marked = first.model_copy(update={"machine": shared})
    run = derived_run(real_run, tmp_path / "shared", replace={first.cell_id: marked})
    render(run)
    md = (run / "report.md").read_text()
    assert f"another process used the GPU during {first.label} hidden-{first.hidden}" in md
    assert "GPU SHARED" in table_lines(md, "Machine state during each cell")[0]
    csv = pd.read_csv(run / "results.csv")
    row = csv.set_index("cell_id").loc[first.cell_id]
    assert row["gpu_shared"] == True and row["gpu_energy_source"] == "counter"  # noqa: E712 (a numpy bool)
    assert "run B: 1 cell(s) shared their GPU with another process" in compare(real_run, run)
