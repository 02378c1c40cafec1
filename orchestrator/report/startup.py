"""The report's view of each cell's start-up (workload schema 3): import, build, the first step, and the time from
the process's start to the end of that step, apart from the timed steady state (docs/report.md "Start-up")."""

from __future__ import annotations

import statistics

import numpy as np

from orchestrator.report.analyze import Analysis, Group
from orchestrator.report.tables import Table
from orchestrator.results import CellRecord, Status
from orchestrator.workload_result import STARTUP_FIELDS

NA = "n/a"  # not recorded: an older workload schema, no process start on this platform, or not reached


def fmt_s(v: float | None) -> str:
    """Seconds, three significant digits and never an exponent (0.0000137, 0.137, 2.41, 118), whole seconds from
    1000 on."""
    if v is None:
        return NA
    return f"{v:.0f}" if v >= 999.5 else np.format_float_positional(v, precision=3, fractional=False, trim="-")


def first_step_ratio(rec: CellRecord) -> float | None:
    """The first step's time as a multiple of the record's median timed step: the one-off cost of the first call
    (tracing, JIT compilation, lazy allocation) in steps."""
    w = rec.workload
    if w is None or w.first_step_s is None or not rec.median_ms or rec.status is not Status.OK:
        return None
    return w.first_step_s * 1000.0 / rec.median_ms


def fmt_ratio(v: float | None) -> str:
    if v is None:
        return ""
    return f"{v:.0f}×" if v >= 9.95 else f"{v:.1f}×"


def pooled(g: Group, key: str) -> float | None:
    """The median of one start-up figure over the cell's ok repeats (each a fresh process); None if none has it."""
    values = [getattr(r.workload, key) for r in g.records
              if r.status is Status.OK and r.workload is not None and getattr(r.workload, key) is not None]
    return statistics.median(values) if values else None


def to_first_step_text(g: Group) -> str:
    """The detail table's column: blank for a cell with no ok repeat (like its timings), else seconds or n/a."""
    if not any(r.status is Status.OK for r in g.records):
        return ""
    return fmt_s(pooled(g, "to_first_step_s"))


def _records(a: Analysis) -> list[tuple[str, str, CellRecord]]:
    return [(row.label, g.precision, r) for row in a.rows for h in a.hidden if (g := a.group(row, h))
            for r in g.records
            if r.workload is not None and any(getattr(r.workload, k) is not None for k in STARTUP_FIELDS)]


def startup_table(a: Analysis) -> Table:
    headers = ["framework", "precision", "hidden", "repeat", "status", "import s", "set-up s", "of it build s",
               "first step s", "first step ÷ median", "to first step s"]
    rows = []
    for label, precision, rec in _records(a):
        w = rec.workload
        assert w is not None  # _records keeps only records with a result
        rows.append([label, precision, str(rec.hidden), str(rec.repeat), rec.status.value, fmt_s(w.import_s),
                     fmt_s(w.setup_s), fmt_s(w.build_s), fmt_s(w.first_step_s), fmt_ratio(first_step_ratio(rec)),
                     fmt_s(w.to_first_step_s)])
    intro = (
        "Before the timed steps, per process (repeat), in seconds; none of it is in the per-batch times. Import: "
        "from the process's start to the harness's entry (the interpreter, the framework's and the workload's "
        "imports; from the kernel's process start time, to 10 ms). Set-up: device check, precision switches, build "
        "and data upload (a framework that imports its back-end lazily, as Keras does, imports it here). Build: the "
        "framework's build() alone, within set-up (Theano and pytensor compile their functions here). First step: "
        "the first forward + backward + update and its loss read (JAX, TensorFlow's tf.function and torch.compile "
        "trace and compile here); ÷ median: as a multiple of the process's median timed step. To first step: from "
        "the process's start to the end of the first step (import, set-up, the first step). The detail table's "
        "\"to first step s\" is the median of the ok repeats."
    )
    notes = [f"{NA}: not recorded (a result of workload schema 1 or 2, written before these figures; for import and "
             "to first step, a platform without the process start time; or the cell stopped before it)."]
    return Table("startup", "Start-up and first step", headers, rows, intro, notes if rows else [])
