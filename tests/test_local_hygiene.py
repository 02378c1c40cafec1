"""Local runner process hygiene (issue 17), with the chaos fixture framework run for real by the local runner: a
child the workload forks ends with its cell, a SIGKILLed orchestrator leaves nothing running (the workload by its
death signal, its children by `clean`), and a relative --out works from any directory.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import default_signals, run_cli
from tests.test_faults import SMALL, assert_nothing_corrupt, project  # noqa: F401 (project: the fixture)


def processes_naming(text: str) -> list[int]:
    """Live (not zombie) processes whose command line contains `text`."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            state = Path(f"/proc/{entry.name}/stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def wait_until(condition, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def local_args(matrix: Path, out: str, variant: str) -> list[str]:
    return [str(matrix), "--runner", "local", "--out", out, "-q", "--no-report", *SMALL,
            "--only", f"chaos:{variant}", "--hidden", "16", "--set", "timeout_s=300"]


def test_a_forked_child_ends_with_its_cell_and_a_relative_out_works_from_elsewhere(
    project: Path, tmp_path: Path  # noqa: F811
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator", *local_args(project / "matrix.yaml", "relrun", "forkchild")],
        cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True,
        timeout=600, preexec_fn=default_signals,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    out = elsewhere / "relrun"
    cell = assert_nothing_corrupt(out)["chaos-forkchild-h16-r0"]
    assert cell["exit_code"] == 0 and cell["status"] != "crashed", cell  # params read, result written
    assert processes_naming(str(out / "cells")) == []  # the forked child did not outlive its cell


def test_a_sigkilled_orchestrator_leaves_no_local_process_after_clean(
    project: Path, tmp_path: Path  # noqa: F811
) -> None:
    out = tmp_path / "run"
    logs = (tmp_path / "stderr").open("wb")
    orchestrator = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *local_args(project / "matrix.yaml", str(out), "forkhang")],
        cwd=project, env={**os.environ, "PYTHONPATH": str(project)}, stdout=subprocess.DEVNULL, stderr=logs,
        preexec_fn=default_signals,
    )
    marker = str(out / "cells")
    # The workload and its forked child both run (the child's command line names the cell's --out).
    wait_until(lambda: len(processes_naming(marker)) >= 2 or orchestrator.poll() is not None, "the cell never ran")
    assert orchestrator.poll() is None, (tmp_path / "stderr").read_text()
    orchestrator.send_signal(signal.SIGKILL)
    orchestrator.wait()
    # The workload dies with the orchestrator (its death signal); the child it forked is an orphan until clean.
    wait_until(lambda: len(processes_naming(marker)) <= 1, "the workload outlived its orchestrator")
    cleaned = run_cli(["clean"], cwd=project)
    assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
    assert "killed 1 local process(es)" in cleaned.stdout
    wait_until(lambda: processes_naming(marker) == [], "clean left a local process running")
