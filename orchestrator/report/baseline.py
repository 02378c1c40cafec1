"""The 2016 GTX 980 table as data, its caveats, and which of our rows continues which 2016 row."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from orchestrator.frameworks import Framework


@dataclass(frozen=True)
class BaselineCell:
    row: str
    hidden: int
    ms: float | None  # None when the 2016 table has a word instead of a number
    word: str | None
    ms_alt: float | None = None  # a conflicting value from another revision of the 2016 README


@dataclass(frozen=True)
class Baseline:
    rows: tuple[str, ...]  # canonical row names, in the 2016 table's order
    labels: dict[str, str]  # canonical row -> label as printed in 2016
    cells: dict[tuple[str, int], BaselineCell]
    caveats: dict[str, list[str]]
    meta: dict[str, Any] = field(default_factory=dict)

    def cell(self, row: str | None, hidden: int) -> BaselineCell | None:
        return self.cells.get((row, hidden)) if row else None


def normalize(label: str) -> str:
    """'Keras (TensorFlow)', 'keras-tensorflow' -> 'keras tensorflow': how labels are matched to 2016 rows."""
    return " ".join(re.sub(r"[^a-z0-9.]+", " ", label.lower()).split())


def _data(name: str) -> str:
    return resources.files("orchestrator.report").joinpath("data").joinpath(name).read_text(encoding="utf-8")


@cache
def load_baseline() -> Baseline:
    rows: list[str] = []
    labels: dict[str, str] = {}
    cells: dict[tuple[str, int], BaselineCell] = {}
    for rec in csv.DictReader(_data("baseline_2016.csv").splitlines()):
        row = rec["row"]
        if row not in labels:
            rows.append(row)
            labels[row] = rec["label_2016"]
        hidden = int(rec["hidden"])
        cells[(row, hidden)] = BaselineCell(
            row=row,
            hidden=hidden,
            ms=float(rec["ms"]) if rec["ms"] else None,
            word=rec["word"] or None,
            ms_alt=float(rec["ms_alt"]) if rec["ms_alt"] else None,
        )
    meta = yaml.safe_load(_data("baseline_2016.yaml"))
    caveats = {row: list(meta.get("rows", {}).get(row, [])) for row in rows}
    return Baseline(tuple(rows), labels, cells, caveats, {k: v for k, v in meta.items() if k != "rows"})


def original_row_for(label: str, framework: Framework | None, variant: str | None, baseline: Baseline) -> str | None:
    """The 2016 row one of our rows continues: its label names it, or its framework.yaml says `original_row`.

    `original_row` of a framework with variants applies only to the variant it names in parentheses, so that
    "keras (jax)" does not claim the "keras (tensorflow)" row.
    """
    by_norm = {normalize(r): r for r in baseline.rows}
    by_norm.update({normalize(baseline.labels[r]): r for r in baseline.rows})
    own = normalize(label)
    if own in by_norm:
        return by_norm[own]
    if framework is not None and framework.meta.original_row:
        wanted = normalize(framework.meta.original_row)
        if wanted in by_norm and (not framework.meta.variants or wanted.endswith(" " + normalize(variant or ""))):
            return by_norm[wanted]
    return None
