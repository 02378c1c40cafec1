"""reports/example-cpu/ (linked from README.md) is made by the current tool: scripts/make-example-report.sh
regenerates it; these tests fail when its records, workload results or manifest are of an older schema than the
tool writes now, or when a framework the script runs is missing from it (e.g. one added since)."""

from __future__ import annotations

import json
import subprocess

from orchestrator.manifest import MANIFEST_SCHEMA_VERSION
from orchestrator.results import RECORD_SCHEMA_VERSION
from orchestrator.store import RUN_DIR_SCHEMA
from orchestrator.workload_result import SCHEMA_VERSION as WORKLOAD_SCHEMA_VERSION
from tests.conftest import ROOT

EXAMPLE = ROOT / "reports" / "example-cpu"
SCRIPT = ROOT / "scripts" / "make-example-report.sh"


def _records() -> list[dict]:
    return [json.loads(line) for line in (EXAMPLE / "results.jsonl").read_text().splitlines()]


def test_the_example_records_are_of_the_current_schema() -> None:
    records = _records()
    assert records
    old = sorted({r["cell_id"] for r in records if r.get("schema_version") != RECORD_SCHEMA_VERSION})
    assert not old, f"reports/example-cpu has records older than schema {RECORD_SCHEMA_VERSION} ({old[:3]}...): " \
                    "run scripts/make-example-report.sh"
    workloads = [r["workload"] for r in records if r.get("workload")]
    assert workloads and all(w.get("schema_version") == WORKLOAD_SCHEMA_VERSION for w in workloads)
    manifest = json.loads((EXAMPLE / "manifest.json").read_text())
    assert manifest.get("schema_version") == MANIFEST_SCHEMA_VERSION
    assert manifest.get("run_dir_schema") == RUN_DIR_SCHEMA
    assert manifest.get("state") == "complete"


def test_the_example_has_every_framework_the_script_runs() -> None:
    wanted = {p.parent.name for p in (ROOT / "images").glob("*/requirements-cpu*.txt")}
    assert wanted <= {r["framework"] for r in _records()}


def test_the_script_runs_the_local_runner_at_tiny_sizes_into_the_example() -> None:
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    text = SCRIPT.read_text()
    for part in ("--runner local", "--device cpu", "--out \"$out\"", "out=reports/example-cpu", "--hidden 16,32,64"):
        assert part in text, part
    command = json.loads((EXAMPLE / "manifest.json").read_text())["command"]
    assert command[1:3] == ["-m", "orchestrator"] and "--runner" in command and "reports/example-cpu" in command
