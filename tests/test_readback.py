"""A failing precision read-back after a fully measured cell (issue 18, item 14): the measurement is kept and the
host judges the unknown precision (`invalid-output` with the error), instead of the cell turning `crashed`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.classify import classify
from orchestrator.results import Status
from orchestrator.runners.base import Outcome
from tests.test_precision import run_harness
from workloads.numpy_reference import NumpyReference


class ReadbackFails(NumpyReference):
    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        raise RuntimeError("cudnn flags unreadable")


def test_a_failing_read_back_keeps_the_measured_cell(tmp_path: Path) -> None:
    doc = run_harness(ReadbackFails, tmp_path)
    assert doc["status"] == "ok" and len(doc["times_ms"]) == 8 and doc["throughput_ms"] > 0
    assert doc["precision_effective"] == "unknown"
    assert doc["precision_switches"]["readback_error"] == "RuntimeError: cudnn flags unreadable"
    outcome = Outcome(exit_code=0, timed_out=False, oom_killed=False, result_text=json.dumps(doc), log_tail="",
                      duration_s=1.0)
    status, reason, result = classify(outcome, 60, doc["params"])
    assert status == Status.INVALID_OUTPUT and result is not None and result.times_ms == doc["times_ms"]
    assert "precision read-back is 'unknown'" in (reason or "") and "cudnn flags unreadable" in (reason or "")
