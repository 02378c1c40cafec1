"""Real run directories for the report and compare tests: the numpy-reference workload run through the pipeline,
and plain-data edits of such runs (a failure, a relabelled cell).

Every timing number the report tests see comes from here (a real subprocess timing a real NumPy LSTM step),
never from a literal in a test.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from orchestrator import PROJECT_ROOT
from orchestrator.frameworks import discover
from orchestrator.manifest import initial_manifest, now_iso
from orchestrator.matrix import parse_matrix
from orchestrator.pipeline import Events, execute
from orchestrator.plan import expand
from orchestrator.report.load import load_run
from orchestrator.results import CellRecord, Status
from orchestrator.runners.local import LocalRunner
from orchestrator.store import RunStore

TINY = {"batch": 4, "seq_len": 8, "vocab": 100, "iters": 5, "warmup": 1, "device": "cpu"}


def make_real_run(root: Path, hidden: tuple[int, ...] = (8, 16), repeats: int = 1, run_id: str = "test-run",
                  **overrides: object) -> Path:
    """Run numpy-reference for real on the CPU into `root` and return it (a complete run directory)."""
    doc = {"name": run_id, "frameworks": ["numpy-reference"], "hidden": list(hidden), "repeats": repeats,
           **TINY, **overrides}
    matrix = parse_matrix(_yaml(doc), "<report-fixture>")
    plan = expand(matrix, discover(PROJECT_ROOT / "images"))
    runner = LocalRunner(device="cpu", python="current")
    store = RunStore(root)
    store.open_for_run()
    try:
        manifest = initial_manifest(run_id, matrix.model_dump(mode="json"), runner.preflight(), ["pytest"])
        store.write_manifest(manifest)
        summary = execute(plan, runner, store, run_id, [None], Events())
        manifest.update(state="finished", finished_at=now_iso())
        store.write_manifest(manifest)
    finally:
        store.close()
    assert not summary.interrupted and len(summary.records) == len(plan.cells)
    return root


def _yaml(doc: dict[str, object]) -> str:
    return yaml.safe_dump(doc)


def derived_run(src: Path, dst: Path, replace: dict[str, CellRecord] | None = None,
                extra: list[CellRecord] | None = None, manifest: dict[str, object] | None = None) -> Path:
    """A copy of a real run with some records replaced or added (plain data: a failure, a relabelled cell, ...).

    Timing numbers are never invented here: replacements reuse the times of real records.
    """
    shutil.copytree(src, dst)
    store = RunStore(dst)
    records = [(replace or {}).get(r.cell_id, r) for r in load_run(dst).records] + list(extra or [])
    for old, new in (replace or {}).items():
        if new.cell_id != old:  # the records are the run's truth: a replaced cell's own record goes
            shutil.rmtree(dst / "cells" / old)
    for rec in records:
        (dst / "cells" / rec.cell_id).mkdir(parents=True, exist_ok=True)
        (dst / "cells" / rec.cell_id / "record.json").write_text(rec.model_dump_json(indent=1))
    (dst / "results.jsonl").write_text("".join(r.to_json_line() for r in records))
    if manifest is not None:
        store.write_manifest({**store.read_manifest(), **manifest})
    return dst


def as_framework(rec: CellRecord, framework: str, label: str, **changes: object) -> CellRecord:
    """The same real measurement filed under another framework (e.g. to fill a 2016 row)."""
    cell_id = rec.cell_id.replace(rec.framework, framework, 1)
    return rec.model_copy(update={"framework": framework, "label": label, "cell_id": cell_id, **changes})


def failed(rec: CellRecord, status: Status, reason: str, **changes: object) -> CellRecord:
    """A failure record shaped like the pipeline's: no workload JSON, no times."""
    return rec.model_copy(update={"status": status, "reason": reason, "workload": None, "median_ms": None,
                                  "mean_ms": None, "exit_code": 1, **changes})
