"""Real run directories for the report and compare tests: the numpy-reference workload run through the pipeline.

Every timing number the report tests see comes from here (a real subprocess timing a real NumPy LSTM step),
never from a literal in a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.frameworks import discover
from orchestrator.manifest import initial_manifest, now_iso
from orchestrator.matrix import parse_matrix
from orchestrator.pipeline import Events, execute
from orchestrator.plan import expand
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
    import yaml

    return yaml.safe_dump(doc)


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hidden sizes, one repeat each."""
    return make_real_run(tmp_path_factory.mktemp("run-a"), run_id="run-a")


@pytest.fixture(scope="session")
def real_run_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same matrix again: a second, independent run to compare against run A."""
    return make_real_run(tmp_path_factory.mktemp("run-b"), run_id="run-b")


@pytest.fixture(scope="session")
def repeated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hidden size, three repeats (fresh processes) to pool."""
    return make_real_run(tmp_path_factory.mktemp("run-rep"), hidden=(8,), repeats=3, run_id="run-rep")
