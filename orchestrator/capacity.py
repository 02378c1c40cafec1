"""Capacity search: per framework series (framework, variant, impl, precision), the largest value of one axis (the
hidden size, or the batch size) that trains `ok` and the smallest that fails, found with few probe cells.

Each probe is a normal cell of the run directory (the pipeline's `execute`, one round of probes at a time, one
probe per unfinished series), so resume, report and compare work on it. The search is deterministic: the next probe
depends only on the records of the probes before it, so `capacity --resume` replays it from the stored records and
runs only the probes that have none.

The grid is the multiples of the axis's step (64 for hidden, 8 for batch) up to the matrix's size bound: exponential
(doubling from the first probe) until a probe fails, then binary search between the largest `ok` and the smallest
failure until they are one step apart. A status that does not depend on the size (the image did not build, the
framework cannot run on the device) ends its series without a boundary.

By batch, a series is also one hidden size of the matrix (what fits in memory depends on both, and the matrix, or
`--hidden N`, already names the sizes one cares about); each probe is a cell with a batch of its own (plan.Cell.batch,
its id `...-h512-b256-r0`), so probes of one hidden size never share an id and the report never pools two batch sizes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from orchestrator.errors import InputError
from orchestrator.matrix import MAX_SIZE
from orchestrator.pipeline import Events, RunSummary, execute
from orchestrator.plan import Cell, Plan
from orchestrator.results import Status
from orchestrator.store import RunStore, describe_error, read_capped, write_json

CAPACITY_FILE = "capacity.json"
STEP = 64  # hidden sizes on the grid are multiples of this (the sizes GPUs' kernels like)
BATCH_STEP = 8  # batch sizes: multiples of 8, as fine as a GPU's kernels tile a batch, coarse enough for few probes
STEPS = {"hidden": STEP, "batch": BATCH_STEP}
Axis = Literal["hidden", "batch"]
# Statuses that say nothing about the size: the series ends without a boundary.
SIZE_INDEPENDENT = {Status.BUILD_FAILED, Status.UNSUPPORTED, Status.SKIPPED}


def next_probe(ok: int | None, failed: int | None, start: int, ceiling: int, step: int = STEP) -> int | None:
    """The next size to probe on the grid step, 2*step, ... <= ceiling; None when the boundary is found."""
    if failed is None:  # exponential phase
        if ok is None:
            return start
        return min(ok * 2, ceiling) if ok < ceiling else None
    lo = ok or 0
    if failed - lo <= step:
        return None
    return max((lo + failed) // 2 // step * step, lo + step)


def first_probe(sizes: tuple[int, ...], step: int = STEP) -> int:
    """The smallest of the matrix's sizes on the axis, rounded up onto the grid."""
    return -(-min(sizes) // step) * step


def axis_start(plan: Plan, axis: Axis) -> int:
    """The first probe: the matrix's smallest hidden size, or its batch, on the axis's grid."""
    return first_probe(plan.matrix.hidden if axis == "hidden" else (plan.matrix.batch,), STEPS[axis])


@dataclass
class Series:
    """One framework series being searched, and what its probes found so far."""

    template: Cell
    axis: Axis = "hidden"
    ok: int | None = None
    failed: int | None = None
    failed_status: str | None = None
    ended: str | None = None  # why the search stopped without a boundary (a size-independent status)
    cells: list[str] = field(default_factory=list)

    def probe(self, value: int) -> Cell:
        if self.axis == "batch":
            return replace(self.template, batch=value, repeat=0)
        return replace(self.template, hidden=value, repeat=0)

    def learn(self, value: int, status: Status, cell_id: str) -> None:
        self.cells.append(cell_id)
        if status is Status.OK:
            self.ok = value if self.ok is None else max(self.ok, value)
        elif status in SIZE_INDEPENDENT:
            self.ended = status.value
        elif self.failed is None or value < self.failed:
            self.failed, self.failed_status = value, status.value

    def entry(self, label: str) -> dict[str, Any]:
        t = self.template
        where = {"hidden": t.hidden} if self.axis == "batch" else {}  # the hidden axis's files stay as they were
        return {"framework": t.framework, "variant": t.variant, "impl": t.impl, "precision": t.precision,
                "label": label, "axis": self.axis, **where, "largest_ok": self.ok, "smallest_failed": self.failed,
                "failed_status": self.failed_status, "ended": self.ended, "cells": list(self.cells)}


def series_of(plan: Plan, axis: Axis = "hidden") -> list[Series]:
    """One series per framework, variant, impl and precision of the plan (its hidden sizes and repeats aside);
    by batch, one per hidden size of each of those too."""
    if axis == "batch":
        seen = dict.fromkeys(replace(c, repeat=0) for c in plan.cells)
    else:
        seen = dict.fromkeys(replace(c, hidden=0, repeat=0) for c in plan.cells)
    return [Series(c, axis) for c in seen]


def search(
    plan: Plan, store: RunStore, run_id: str, ceiling: int,
    run_round: Callable[[Plan], RunSummary], axis: Axis = "hidden",
) -> tuple[list[Series], bool]:
    """Drive the search round by round; each round's probes run through `run_round` (the pipeline). Returns the
    series and whether the run was interrupted."""
    start = axis_start(plan, axis)
    all_series = series_of(plan, axis)
    while True:
        probes: dict[str, tuple[Series, int]] = {}
        for s in all_series:
            if s.ended is None:
                value = next_probe(s.ok, s.failed, start, ceiling, STEPS[axis])
                if value is not None:
                    probes[s.probe(value).cell_id] = (s, value)
        if not probes:
            return all_series, False
        summary = run_round(Plan(plan.matrix, plan.frameworks, tuple(s.probe(v) for s, v in probes.values())))
        for cell_id, (s, value) in probes.items():
            record, _ = store.read_record(cell_id, run_id)
            if record is None:  # interrupted before this probe ended: --resume runs it
                return all_series, True
            s.learn(value, record.status, cell_id)
        if summary.interrupted:
            return all_series, True


def drive(plan: Plan, ceiling: int, gpu_settle_c: float | None, axis: Axis = "hidden") -> Callable[..., RunSummary]:
    """The capacity search as the CLI's run step: same arguments and result as one `execute`, plus capacity.json."""

    def run(runner: Any, store: RunStore, run_id: str, slots: list[str | None], events: Events,
            check: Callable[..., None]) -> RunSummary:
        total = RunSummary()

        def one_round(round_plan: Plan) -> RunSummary:
            # resume=True for every round: a probe whose record exists (an earlier round, or `capacity --resume`)
            # is read, not run again.
            got = execute(round_plan, runner, store, run_id, slots, events, True, check_environments=check,
                          gpu_settle_c=gpu_settle_c)
            total.records += got.records
            total.skipped_done += got.skipped_done
            return got

        found, total.interrupted = search(plan, store, run_id, ceiling, one_round, axis)
        doc = {"axis": axis, "step": STEPS[axis], "first_probe": axis_start(plan, axis), "ceiling": ceiling,
               "complete": not total.interrupted,
               "series": [s.entry(plan.frameworks[s.template.framework].row_label(s.template.variant)) for s in found]}
        write_json(store.root / CAPACITY_FILE, doc)
        return total

    return run


# ---------------------------------------------------------------------------------------------- reading it back
class CapacitySeries(BaseModel):
    """One series of capacity.json, validated: the run directory is untrusted input for the report."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    framework: str = Field(max_length=200)
    variant: str | None = Field(default=None, max_length=200)
    impl: str = Field(max_length=200)
    precision: str = Field(max_length=50)
    label: str = Field(max_length=300)
    axis: Axis
    hidden: int | None = Field(default=None, gt=0, le=MAX_SIZE)  # by batch: the series' hidden size
    largest_ok: int | None = Field(default=None, gt=0, le=MAX_SIZE)
    smallest_failed: int | None = Field(default=None, gt=0, le=MAX_SIZE)
    failed_status: str | None = Field(default=None, max_length=50)
    ended: str | None = Field(default=None, max_length=50)
    cells: list[str] = Field(default_factory=list, max_length=10_000)


class Capacity(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    axis: Axis
    step: int = Field(gt=0, le=MAX_SIZE)
    first_probe: int = Field(gt=0, le=MAX_SIZE)
    ceiling: int = Field(gt=0, le=MAX_SIZE)
    complete: bool
    series: list[CapacitySeries] = Field(max_length=10_000)

    @model_validator(mode="after")
    def _one_axis(self) -> Capacity:
        for s in self.series:
            if s.axis != self.axis:
                raise ValueError(f"series {s.label!r} is on the {s.axis} axis, the file on the {self.axis} axis")
            if (s.hidden is None) == (self.axis == "batch"):
                raise ValueError(f"series {s.label!r}: a hidden size belongs to each series by batch, and only there")
        return self


def load_capacity(run_dir: Path) -> Capacity | None:
    """The run's capacity.json, None when it has none; InputError (one line naming the file) when malformed."""
    path = run_dir / CAPACITY_FILE
    try:
        return Capacity.model_validate_json(read_capped(path))
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError) as exc:
        raise InputError(f"{path} is not a readable capacity file: {describe_error(exc)}") from None
