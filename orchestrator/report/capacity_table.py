"""The report's "largest hidden (or batch) that fits" table, from the run's capacity.json (orchestrator/capacity.py)."""

from __future__ import annotations

from orchestrator.capacity import load_capacity
from orchestrator.report.analyze import Analysis
from orchestrator.report.tables import Table
from orchestrator.results import Status


def _word(status: str | None) -> str:
    """The 2016 table's word for a failing status ("out of mem", "recursion depth"...), the status itself if unknown."""
    try:
        return Status(status).word if status else ""
    except ValueError:
        return status or ""


def capacity_table(a: Analysis) -> Table:
    found = load_capacity(a.run.root)
    if found is None:
        return Table("capacity", "Largest hidden that fits", [], [])
    by_batch = found.axis == "batch"
    rows = []
    for s in found.series:
        if s.ended:
            fails = f"no boundary: {_word(s.ended)}"
        elif s.smallest_failed is None:
            fails = f"none up to {found.ceiling}"
        else:
            fails = f"{s.smallest_failed} ({_word(s.failed_status)})"
        ok = str(s.largest_ok) if s.largest_ok is not None else "none"
        where = [str(s.hidden)] if by_batch else []
        rows.append([s.label, s.impl, s.precision, *where, ok, fails, str(len(s.cells))])
    intro = (f"Capacity search on the {found.axis} axis: multiples of {found.step}, doubling from {found.first_probe} "
             f"until a probe fails, then binary search; each probe is a cell of this run (capacity.json).")
    if by_batch:
        intro += (" One series per hidden size of the matrix; in the other tables each probe is a row of its own, "
                  "labelled with its batch size where it is not the matrix's.")
    notes = [] if found.complete else ["The search was interrupted: finish it with `capacity --resume`."]
    headers = ["framework", "impl", "precision", *(["hidden"] if by_batch else []), f"largest {found.axis} ok",
               "smallest failing (status)", "probes"]
    return Table("capacity", f"Largest {found.axis} that fits", headers, rows, intro, notes)
