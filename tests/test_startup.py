"""Start-up and first-step cost (workload result schema 3): the process-start clock, real cells that record it, the
host's refusal of figures that cannot be true, and the report's column and table (docs/report.md "Start-up")."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_helpers import derived_run

from orchestrator.classify import classify
from orchestrator.report import render
from orchestrator.report.load import load_run
from orchestrator.report.startup import fmt_s
from orchestrator.results import Status
from orchestrator.runners.base import Outcome
from orchestrator.validity import HostView, judge
from orchestrator.workload_result import STARTUP_FIELDS
from tests.conftest import TINY, run_cli
from tests.workload_helpers import ROOT, as_result, cell_params, run_workload, venv_python
from workloads.harness import process_age_s

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)

TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")  # the kernel's resolution of a process's start
# A child that reads its own age twice around a sleep, with the same clock read right after each.
CHILD = """
import json, time
from workloads.harness import process_age_s
a1 = process_age_s(); b1 = time.clock_gettime(time.CLOCK_BOOTTIME)
time.sleep(0.2)
a2 = process_age_s(); b2 = time.clock_gettime(time.CLOCK_BOOTTIME)
print(json.dumps([a1, b1, a2, b2]))
"""


def test_process_age_of_a_real_child_lies_between_its_launch_and_its_read() -> None:
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120, check=True)
    a1, b1, a2, b2 = json.loads(proc.stdout)
    # The child started after `before` and read its age before b1; the kernel rounds the start down to a tick.
    assert 0 < a1 <= b1 - before + TICK_S
    assert 0 < a2 <= b2 - before + TICK_S
    # The same start, the same clock: the age grows by at least the sleep between the reads.
    assert a2 - a1 >= 0.2


def _stat(tmp_path: Path, start_ticks: int, comm: str = "python3") -> str:
    # Fields 3..21 (state, then 18 numbers unlike a boot-time tick count), 22 the start, then the rest.
    fields = ["S", *(str(i) for i in range(4, 22)), str(start_ticks), *(["0"] * 30)]
    path = tmp_path / "stat"
    path.write_text(f"4242 ({comm}) {' '.join(fields)}\n")
    return str(path)


def test_process_age_reads_field_22_after_a_command_name_with_parentheses_and_spaces(tmp_path: Path) -> None:
    hz = os.sysconf("SC_CLK_TCK")
    start_ticks = int((time.clock_gettime(time.CLOCK_BOOTTIME) - 5.0) * hz)
    path = _stat(tmp_path, start_ticks, comm="a) b) (c d")  # a process may name itself so (PR_SET_NAME)
    before = time.clock_gettime(time.CLOCK_BOOTTIME)
    age = process_age_s(path)
    after = time.clock_gettime(time.CLOCK_BOOTTIME)
    assert age is not None
    assert before - start_ticks / hz <= age <= after - start_ticks / hz


def test_process_age_is_none_where_there_is_no_true_figure(tmp_path: Path) -> None:
    future = int((time.clock_gettime(time.CLOCK_BOOTTIME) + 100.0) * os.sysconf("SC_CLK_TCK"))
    assert process_age_s(_stat(tmp_path, future)) is None  # another clock base: never a negative age
    assert process_age_s(str(tmp_path / "absent")) is None
    (tmp_path / "garbage").write_text("4242 (python3 S 1 2\n")
    assert process_age_s(str(tmp_path / "garbage")) is None


@pytest.fixture(scope="module")
def real_result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One real numpy-reference cell's result, run as the local runner runs it (this interpreter has NumPy)."""
    doc = run_workload(Path(sys.executable), "numpy_reference", cell_params("numpy-reference"),
                       tmp_path_factory.mktemp("cell"))
    assert doc["status"] == "ok", doc["_log"]
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def test_a_real_cell_records_its_start_up_nested_as_measured(real_result: dict[str, Any]) -> None:
    r = real_result
    assert r["schema_version"] == 3
    assert all(isinstance(r[k], float) and r[k] > 0 for k in STARTUP_FIELDS), {k: r[k] for k in STARTUP_FIELDS}
    assert r["build_s"] <= r["setup_s"]
    assert r["import_s"] + r["setup_s"] + r["first_step_s"] <= r["to_first_step_s"]
    assert r["to_first_step_s"] - r["import_s"] <= r["wall_s"]
    assert as_result(r).to_first_step_s == r["to_first_step_s"]  # accepted at the boundary as written


def _set(**changes: Any) -> Callable[[dict[str, Any]], dict[str, Any]]:
    return lambda d: {**d, **changes}


# Each edit of a real result, and the words the host's reason must hold (the key it found wrong).
HOSTILE: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any]], str]] = {
    "negative": (_set(import_s=-0.5), "import_s"),
    "absurd": (_set(first_step_s=1e7), "first_step_s"),
    "not finite": (_set(build_s=math.nan), "build_s"),
    "a string": (_set(to_first_step_s="0.5"), "to_first_step_s"),
    "a bool": (_set(first_step_s=True), "first_step_s"),
    "build outside setup": (lambda d: {**d, "build_s": d["setup_s"] + 1.0}, "build_s is"),
    "import after the first step": (lambda d: {**d, "import_s": d["to_first_step_s"] + 1.0}, "import_s is"),
    "parts longer than the whole": (lambda d: {**d, "first_step_s": d["to_first_step_s"]},
                                    "import_s + setup_s + first_step_s"),
    "longer than the harness ran": (lambda d: {**d, "to_first_step_s": d["import_s"] + d["wall_s"] + 1.0},
                                    "to_first_step_s - import_s"),
    "schema 2 with a schema 3 figure": (_set(schema_version=2), "result of schema 2 has import_s"),
    "ok without a first step": (_set(first_step_s=None), "without first_step_s"),
    "an unknown figure": (_set(compile_s=1.0), "compile_s"),
}


def _classify(doc: dict[str, Any], lifetime_s: float = 3600.0) -> tuple[Status, str | None]:
    status, reason, _ = classify(Outcome(exit_code=0, timed_out=False, oom_killed=False, log_tail="",
                                         result_text=json.dumps(doc), duration_s=lifetime_s), 600)
    return status, reason


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_start_up_figures_are_invalid_output_naming_the_key(real_result: dict[str, Any], name: str) -> None:
    edit, words = HOSTILE[name]
    status, reason = _classify(edit(real_result))
    assert status is Status.INVALID_OUTPUT and words in (reason or ""), (name, reason)


def test_results_without_the_figures_still_count(real_result: dict[str, Any]) -> None:
    assert _classify(real_result)[0] is Status.OK
    # A record of an older run: schema 2 had none of them.
    old = {k: v for k, v in real_result.items() if k not in STARTUP_FIELDS} | {"schema_version": 2}
    assert _classify(old)[0] is Status.OK
    # A platform without the process start: no import and no total, the rest as measured.
    assert _classify({**real_result, "import_s": None, "to_first_step_s": None})[0] is Status.OK


def test_a_first_step_longer_than_the_process_lived_is_refused(real_result: dict[str, Any]) -> None:
    result = as_result(real_result)
    lived = result.to_first_step_s / 2  # type: ignore[operator]
    problem = judge(result, HostView(lived))
    assert problem is not None and "to_first_step_s" in problem, problem
    assert judge(result, HostView(result.to_first_step_s + 1.0)) is None  # type: ignore[operator]


def md_table(md: str, heading: str) -> list[list[str]]:
    """Rows (header first) of the Markdown table under `## heading`."""
    lines = md.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0].splitlines()
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines
            if ln.startswith("|") and not ln.startswith("|---")]


def test_local_runner_cells_show_their_start_up_and_jax_its_compile(tmp_path: Path) -> None:
    venv_python("jax")  # the framework's cached environment, or why it cannot be made here
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "numpy-reference,jax", "--runner", "local", "--device", "cpu",
                    "--hidden", "16", "--out", str(out), "-q", *TINY], timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = {r.framework: r for r in load_run(out).records}
    for name, rec in records.items():
        w = rec.workload
        assert rec.status is Status.OK and w is not None, (name, rec.reason)
        assert all(getattr(w, k) is not None and getattr(w, k) > 0 for k in STARTUP_FIELDS), (name, w)
        assert w.import_s + w.setup_s + w.first_step_s <= w.to_first_step_s <= rec.duration_s + TICK_S
        assert w.build_s <= w.setup_s  # type: ignore[operator]
    # JAX traces and XLA-compiles the training step on its first call: seconds against a tiny step's fraction of a
    # millisecond (measured ~3900x on 2 cores). 20x leaves two orders of magnitude for a loaded machine.
    jax = records["jax"]
    assert jax.workload.first_step_s * 1000.0 > 20 * jax.median_ms, (jax.workload.first_step_s, jax.median_ms)

    md = (out / "report.md").read_text()
    detail = md_table(md, "Every cell in detail")
    column = detail[0].index("to first step s")
    shown = {row[0]: row[column] for row in detail[1:]}
    assert shown == {rec.label: fmt_s(rec.workload.to_first_step_s) for rec in records.values()}
    startup = md_table(md, "Start-up and first step")
    assert [row[0] for row in startup[1:]] == [records["numpy-reference"].label, "jax"]
    assert "to first step s" in (out / "report.html").read_text()
    csv = pd.read_csv(out / "results.csv").set_index("framework")
    for name, rec in records.items():
        for key in STARTUP_FIELDS:
            assert csv.loc[name, key] == pytest.approx(getattr(rec.workload, key)), key
    cells = {c["framework"]: c for c in json.loads((out / "report.json").read_text())["cells"]}
    assert cells["jax"]["startup_s"]["first_step_s"] == pytest.approx(jax.workload.first_step_s)


def test_records_of_an_older_schema_show_n_a(real_run: Path, tmp_path: Path) -> None:
    first, second = load_run(real_run).records
    assert first.workload is not None and second.workload is not None
    old = first.model_copy(update={"workload": first.workload.model_copy(
        update={"schema_version": 2, **dict.fromkeys(STARTUP_FIELDS)})})
    run = derived_run(real_run, tmp_path / "mixed", replace={first.cell_id: old})
    render(run)
    md = (run / "report.md").read_text()
    detail = md_table(md, "Every cell in detail")
    column = detail[0].index("to first step s")
    assert [row[column] for row in detail[1:]] == ["n/a", fmt_s(second.workload.to_first_step_s)]
    startup = md_table(md, "Start-up and first step")
    assert [row[2] for row in startup[1:]] == [str(second.hidden)]  # the old record has no row of figures


def test_seconds_read_without_an_exponent() -> None:
    assert [fmt_s(v) for v in (1.37e-05, 0.137, 2.41, 118.4, 1234.5, None)] == [
        "0.0000137", "0.137", "2.41", "118", "1234", "n/a"]
