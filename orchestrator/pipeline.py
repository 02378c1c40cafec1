"""The run, as small steps: prepare environments -> run cells on slots -> classify -> store, one cell at a time.

A failing cell never stops the run (any exception while handling one cell becomes that cell's classified
record); a finished cell is on disk before the next one is picked up; Ctrl-C stops the cells in flight, keeps
everything finished and marks the run interrupted.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from orchestrator.classify import classify, impl_that_ran
from orchestrator.machine.cell import CellSampling
from orchestrator.machine.summary import MachineState
from orchestrator.manifest import now_iso
from orchestrator.plan import Cell, Plan
from orchestrator.results import CellRecord, Status
from orchestrator.rootcause import keep_first_line
from orchestrator.runners.base import LOG_FILE, PARAMS_FILE, Environment, Outcome, Runner, io_dir
from orchestrator.runners.quota import Watch, usage
from orchestrator.scheduler import run_on_slots
from orchestrator.store import MIN_FREE_BYTES, RunStore, describe_error, remove_tree, slim, write_atomic, write_json
from orchestrator.workload_result import WorkloadResult

# Errors of the run directory's storage, not of one cell: they stop the run (cli.py says so in one line).
RUN_LEVEL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}


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
    workload: WorkloadResult | None,
    started_at: str | None = None,
    params: dict[str, Any] | None = None,
    machine: MachineState | None = None,
) -> CellRecord:
    # Our own statistics of the validated times, not the workload's summary of them.
    times = np.asarray(workload.times_ms if workload and status is Status.OK else [], dtype=np.float64)
    return CellRecord(
        run_id=run_id,
        cell_id=cell.cell_id,
        framework=cell.framework,
        variant=cell.variant,
        impl=impl_that_ran(cell.impl, workload),
        label=label,
        hidden=cell.hidden,
        repeat=cell.repeat,
        precision=cell.precision,
        batch=cell.batch,
        device=device,
        # A runner that places cells itself (Ray) says where the cell really ran.
        slot=(outcome.placement if outcome and outcome.placement else slot),
        status=status,
        reason=reason,
        duration_s=round(duration_s, 3),
        exit_code=outcome.exit_code if outcome else None,
        image=env.details or None,
        params=params,
        median_ms=float(np.median(times)) if times.size else None,
        mean_ms=float(times.mean()) if times.size else None,
        # A failed build has no outcome: its log tail is the build's.
        log_tail=None if status is Status.OK else (outcome.log_tail if outcome else env.log_tail or "")[-4000:] or None,
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

    Whatever goes wrong while handling the cell (an OSError on what the workload left, a cleanup that fails)
    becomes this cell's record: it never reaches the other cells or the run. A runner whose cells run on this host
    (`host_sampling = True`) is handed `watch`, and the host samples the machine's state while the cell runs
    (orchestrator/machine/).
    """
    label = plan.frameworks[cell.framework].row_label(cell.variant)
    started_at = precise_now()
    params = cell.params(plan.matrix)
    try:
        return _run_one(plan, runner, store, run_id, cell, env, slot, label, started_at, params, gpu_settle_c)
    except OSError as exc:
        if exc.errno in RUN_LEVEL_ERRNOS:
            raise  # the run directory's disk, not this cell: the run stops with one line, as for any cell
        return _unhandled(plan, store, run_id, cell, env, slot, label, started_at, params, exc)
    except Exception as exc:
        return _unhandled(plan, store, run_id, cell, env, slot, label, started_at, params, exc)


def _unhandled(
    plan: Plan, store: RunStore, run_id: str, cell: Cell, env: Environment, slot: str | None, label: str,
    started_at: str, params: dict[str, Any], exc: Exception,
) -> CellRecord:
    why = f"the orchestrator could not handle this cell's output: {type(exc).__name__}: {describe_error(exc)}"
    with contextlib.suppress(Exception):
        remove_tree(io_dir(store.cell_dir(cell.cell_id)))
    return record_for(cell, label, run_id, plan.matrix.device, slot, env, Status.INVALID_OUTPUT, why, 0.0,
                      None, None, started_at, params)


def _run_one(
    plan: Plan, runner: Runner, store: RunStore, run_id: str, cell: Cell, env: Environment, slot: str | None,
    label: str, started_at: str, params: dict[str, Any], gpu_settle_c: float | None,
) -> CellRecord | None:
    matrix = plan.matrix
    if env.error is not None:
        return record_for(
            cell, label, run_id, matrix.device, slot, env, Status.BUILD_FAILED, keep_first_line(env.error, 4000),
            0.0, None, None, started_at, params,
        )
    cell_dir = store.fresh_cell_dir(cell.cell_id)
    write_json(cell_dir / PARAMS_FILE, params)
    sampling = CellSampling(matrix.device, slot) if getattr(runner, "host_sampling", False) is True else None
    # The cap, or the run directory's free space less the room the run keeps, when that is smaller: the watch then
    # stops a disk-filling cell before the disk is full.
    cap = min(matrix.results_max_mb << 20, max(shutil.disk_usage(cell_dir).free - MIN_FREE_BYTES, 1 << 20))
    stop_cell = getattr(runner, "stop_cell", None)  # runners whose cells write io/ on this host watch its size
    quota = Watch(io_dir(cell_dir), cap, lambda: stop_cell(cell.cell_id)) if callable(stop_cell) else None
    try:
        if sampling is not None and gpu_settle_c is not None:
            sampling.settle(gpu_settle_c)
        watch = {"watch": sampling.watch} if sampling is not None else {}
        outcome = runner.run(cell, env, cell_dir, slot, matrix.timeout_s, **watch)
    finally:
        if sampling is not None:
            sampling.stop()
        if quota is not None:
            quota.stop()
    if outcome.error == "aborted":
        return None
    used = usage(io_dir(cell_dir))
    # Read once (the outcome holds the result); what the workload left goes before the orchestrator writes anything,
    # so a cell that filled the disk costs this cell, not the run.
    remove_tree(io_dir(cell_dir))
    write_atomic(cell_dir / LOG_FILE, outcome.log_tail)  # the output's tail, for every cell, ok ones too
    over = quota.seen if quota is not None and quota.seen is not None else used
    if over.over(cap):
        return record_for(cell, label, run_id, matrix.device, slot, env, Status.INVALID_OUTPUT, over.describe(cap),
                          outcome.duration_s, outcome, None, started_at, params)
    status, reason, workload = classify(outcome, matrix.timeout_s, params)
    machine = sampling.finish(workload, cell_dir) if sampling is not None else None
    return record_for(
        cell, label, run_id, matrix.device, slot, env, status, reason, outcome.duration_s, outcome, workload,
        started_at, params, machine,
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
    check_environments: Callable[[dict[tuple[str, str | None], Environment]], None] | None = None,
    gpu_settle_c: float | None = None,
) -> RunSummary:
    """Run the plan's cells not yet done. `check_environments` sees the prepared environments before any cell
    runs (--resume: refuse an image that changed under cells already measured) and may raise InputError."""
    summary = RunSummary()
    order = [c.cell_id for c in plan.cells]
    # The records are the truth: the index gets what a crash between a record and its line left out.
    done = set(store.reconcile(run_id, order).ids) if resume else set()
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
    if check_environments is not None:
        check_environments(envs)

    stop = threading.Event()
    lock = threading.Lock()

    def work(cell: Cell, slot: str | None) -> None:
        events.cell_started(cell, slot)
        record = run_one(plan, runner, store, run_id, cell, envs[cell.image_key], slot, gpu_settle_c)
        if record is None:
            return
        store.save(record)
        with lock:
            summary.records.append(slim(record))  # memory bounded by one cell's series, whatever the run's size
        events.cell_finished(record)
        if on_record:
            on_record(record)

    # One cell per slot at a time: never two timed cells on one GPU.
    summary.interrupted = run_on_slots(todo, slots, work, stop, runner.abort)
    store.reconcile(run_id, order)  # once per run, one record at a time: the index in plan order
    return summary
