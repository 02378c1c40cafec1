"""The run, as small steps: prepare environments -> run cells on slots -> classify -> store, one cell at a time.

A failing cell never stops the run; a finished cell is on disk before the next one is picked up; Ctrl-C
stops the cells in flight, keeps everything finished and marks the run interrupted.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from orchestrator.classify import classify
from orchestrator.machine.cell import CellSampling
from orchestrator.machine.summary import MachineState
from orchestrator.manifest import now_iso
from orchestrator.plan import Cell, Plan
from orchestrator.results import CellRecord, Status
from orchestrator.runners.base import LOG_FILE, PARAMS_FILE, Environment, Outcome, Runner
from orchestrator.scheduler import run_on_slots
from orchestrator.store import RunStore, write_atomic, write_json


class Events:
    """What the pipeline tells the user interface; the default says nothing (tests, library use)."""

    def build_started(self, key: tuple[str, str | None]) -> None: ...
    def build_line(self, key: tuple[str, str | None], line: str) -> None: ...
    def build_finished(self, env: Environment) -> None: ...
    def cells_planned(self, total: int, already_done: int) -> None: ...
    def cell_started(self, cell: Cell, slot: str | None) -> None: ...
    def cell_finished(self, record: CellRecord) -> None: ...


@dataclass
class RunSummary:
    records: list[CellRecord] = field(default_factory=list)
    interrupted: bool = False
    skipped_done: int = 0


def record_for(
    cell: Cell,
    label: str,
    run_id: str,
    device: str,
    slot: str | None,
    env: Environment,
    status: Status,
    reason: str | None,
    duration_s: float,
    outcome: Outcome | None,
    workload: dict[str, Any] | None,
    started_at: str | None = None,
    machine: MachineState | None = None,
) -> CellRecord:
    stats = (workload or {}).get("stats_ms") or {}
    return CellRecord(
        run_id=run_id,
        cell_id=cell.cell_id,
        framework=cell.framework,
        variant=cell.variant,
        impl=cell.impl,
        label=label,
        hidden=cell.hidden,
        repeat=cell.repeat,
        device=device,
        # A runner that places cells itself (Ray) says where the cell really ran.
        slot=(outcome.placement if outcome and outcome.placement else slot),
        status=status,
        reason=reason,
        duration_s=round(duration_s, 3),
        exit_code=outcome.exit_code if outcome else None,
        image=env.details or None,
        median_ms=stats.get("median") if status is Status.OK else None,
        mean_ms=stats.get("mean") if status is Status.OK else None,
        log_tail=outcome.log_tail[-4000:] if outcome and status is not Status.OK else None,
        workload=workload,
        # A runner that queues cells (Ray) knows when the cell really started; the hand-over time otherwise.
        started_at=(outcome.started_at if outcome and outcome.started_at else started_at),
        finished_at=now_iso(),
        machine=machine,
    )


def precise_now() -> str:
    """UTC with milliseconds: enough to order cells that share a slot one after another."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def prepare_environments(
    plan: Plan, runner: Runner, keys: list[tuple[str, str | None]], events: Events
) -> dict[tuple[str, str | None], Environment]:
    envs = {}
    for key in keys:
        name, variant = key
        events.build_started(key)
        env = runner.prepare(plan.frameworks[name], variant, lambda line, k=key: events.build_line(k, line))
        events.build_finished(env)
        envs[key] = env
    return envs


def run_one(
    plan: Plan,
    runner: Runner,
    store: RunStore,
    run_id: str,
    cell: Cell,
    env: Environment,
    slot: str | None,
    gpu_settle_c: float | None = None,
) -> CellRecord | None:
    """Run and classify one cell; None when it was aborted (so --resume runs it again).

    A runner whose cells run on this host (`host_sampling = True`) is handed `watch`, and the host samples the
    machine's state while the cell runs (orchestrator/machine/).
    """
    matrix = plan.matrix
    label = plan.frameworks[cell.framework].row_label(cell.variant)
    started_at = precise_now()
    if env.error is not None:
        return record_for(
            cell, label, run_id, matrix.device, slot, env, Status.BUILD_FAILED, env.error[-4000:], 0.0, None, None,
            started_at,
        )
    cell_dir = store.fresh_cell_dir(cell.cell_id)
    write_json(cell_dir / PARAMS_FILE, cell.params(matrix))
    sampling = CellSampling(matrix.device, slot) if getattr(runner, "host_sampling", False) is True else None
    try:
        if sampling is not None and gpu_settle_c is not None:
            sampling.settle(gpu_settle_c)
        watch = {"watch": sampling.watch} if sampling is not None else {}
        outcome = runner.run(cell, env, cell_dir, slot, matrix.timeout_s, **watch)
    finally:
        if sampling is not None:
            sampling.stop()
    if outcome.error == "aborted":
        return None
    write_atomic(cell_dir / LOG_FILE, outcome.log_tail)  # the output's tail, for every cell, ok ones too
    status, reason, workload = classify(outcome, matrix.timeout_s)
    machine = sampling.finish(workload, store.cell_dir(cell.cell_id)) if sampling is not None else None
    return record_for(
        cell, label, run_id, matrix.device, slot, env, status, reason, outcome.duration_s, outcome, workload,
        started_at, machine,
    )


def execute(
    plan: Plan,
    runner: Runner,
    store: RunStore,
    run_id: str,
    slots: list[str | None],
    events: Events,
    resume: bool = False,
    on_record: Callable[[CellRecord], None] | None = None,
    gpu_settle_c: float | None = None,
) -> RunSummary:
    summary = RunSummary()
    order = [c.cell_id for c in plan.cells]
    done = store.done_ids() if resume else set()
    todo = [c for c in plan.cells if c.cell_id not in done]
    summary.skipped_done = len(plan.cells) - len(todo)
    events.cells_planned(len(plan.cells), summary.skipped_done)
    if not todo:
        return summary

    keys = list(dict.fromkeys(c.image_key for c in todo))
    try:
        envs = prepare_environments(plan, runner, keys, events)
    except KeyboardInterrupt:
        runner.abort()
        summary.interrupted = True
        return summary

    stop = threading.Event()
    lock = threading.Lock()

    def work(cell: Cell, slot: str | None) -> None:
        events.cell_started(cell, slot)
        record = run_one(plan, runner, store, run_id, cell, envs[cell.image_key], slot, gpu_settle_c)
        if record is None:
            return
        store.save(record, order)
        with lock:
            summary.records.append(record)
        events.cell_finished(record)
        if on_record:
            on_record(record)

    # One cell per slot at a time: never two timed cells on one GPU.
    summary.interrupted = run_on_slots(todo, slots, work, stop, runner.abort)
    return summary
