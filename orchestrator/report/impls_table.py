"""The report's "Impls" legend: what each implementation path of this run runs (framework.yaml impl_notes)."""

from __future__ import annotations

from orchestrator.report.analyze import Analysis
from orchestrator.report.tables import Table


def impls_table(a: Analysis) -> Table:
    """One line per framework/variant/impl in the run, labelled as the other tables label its row (without the
    precision and the batch size: every precision and batch size of an impl runs the same code)."""
    rows, seen = [], set()
    for row in a.rows:
        framework, variant, impl = row.key[:3]
        if (framework, variant, impl) in seen:
            continue
        seen.add((framework, variant, impl))
        rows.append([row.impl_label, impl, row.impl_note or "not described (framework.yaml has no impl_notes entry)"])
    intro = ("Which implementation path each row ran: the impl the record names, described by the framework's "
             "framework.yaml (impl_notes). Rows of one framework compare its paths on the same model and weights.")
    return Table("impls", "Impls: which implementation is which", ["row", "impl", "what it runs"], rows, intro)
