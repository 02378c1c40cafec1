"""Crash consistency (issue 17): the orchestrator SIGKILLed at the exact points where a cell is half stored, then
--resume: every finished cell is in every output (report.md, results.csv, results.jsonl, report.json).

The points are hit deterministically with the store's test hook (store.CRASH_AT): "record" is after a cell's
record.json and before its index line, "index" after both, "reconciled" while the index is being rewritten.
"""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import pytest

from orchestrator.store import CRASH_AT
from tests.conftest import run_cli
from tests.test_faults import SMALL, project, run_args  # noqa: F401 (project: the fixture)

pytestmark = pytest.mark.docker

CELLS = ["chaos-ok-h16-r0", "chaos-ok-h24-r0"]
ARGS = ["--only", "chaos:ok", "--hidden", "16,24"]


def outputs_hold(out: Path, cells: list[str]) -> None:
    """Each of the four outputs names exactly `cells`, every one ok."""
    indexed = [json.loads(line)["cell_id"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(indexed) == sorted(cells)
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["cell_id"] for r in rows) == sorted(cells) and {r["status"] for r in rows} == {"ok"}
    doc = json.loads((out / "report.json").read_text())
    assert sorted(c for g in doc["cells"] for c in g["cells"]) == sorted(cells)
    # The ms-per-batch table's row: a number under each hidden size, no "not run".
    row = next(line for line in (out / "report.md").read_text().splitlines() if line.startswith("| chaos (ok) |"))
    assert [float(v) for v in row.split("|")[2:2 + len(cells)]], row


@pytest.mark.parametrize("point", ["record", "index", "reconciled"])
def test_sigkill_at_each_storing_point_then_resume_keeps_every_finished_cell(
    base_image: str, project: Path, tmp_path: Path, point: str  # noqa: F811
) -> None:
    out = tmp_path / "run"
    killed = run_cli(run_args(out, *ARGS), cwd=project, env={CRASH_AT: point})
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    first = (out / "cells" / CELLS[0] / "record.json").read_text()
    json.loads((out / "manifest.json").read_text())

    resumed = run_cli(run_args(out, *ARGS, "--resume"), cwd=project)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    reported = run_cli(["report", str(out)], cwd=project)
    assert reported.returncode == 0, reported.stdout[-2000:] + reported.stderr[-2000:]
    outputs_hold(out, CELLS)
    assert (out / "cells" / CELLS[0] / "record.json").read_text() == first  # kept, not run again
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"
