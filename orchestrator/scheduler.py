"""Slots: what a cell holds while it runs (a GPU id, a CPU slot, a Ray cluster's share), one cell per slot.

The pipeline decides what a cell is; this module only decides when and where cells run: `slots_for` turns the
matrix (and the runner) into slots, `run_on_slots` runs work items on them with at most one item per slot at a time
and stops cleanly on Ctrl-C.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from orchestrator import gpus
from orchestrator.errors import InputError
from orchestrator.matrix import Matrix

T = TypeVar("T")
Slot = str | None
# How often the main thread looks up from waiting: short, so Ctrl-C is handled at once.
POLL_S = 0.2


def slots_for(matrix: Matrix, runner: Any = None, client_factory: Callable[[], Any] | None = None) -> list[Slot]:
    """One slot per GPU id on a GPU run, `slots` anonymous CPU slots on a CPU run, or what the runner offers.

    A runner with its own capacity (Ray: the cluster's slot resources) says so with a `slots()` method.
    """
    if runner is not None and callable(getattr(runner, "slots", None)):
        return list(runner.slots())
    if matrix.device == "cpu":
        return [f"cpu{i}" for i in range(matrix.slots)]
    found = gpus.discover(client_factory)
    if getattr(runner, "name", None) == "local":  # cells are our children: they inherit a scheduler's allocation
        pci_order = os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID"
        found = gpus.visible(found, os.environ.get("CUDA_VISIBLE_DEVICES"), pci_order)
    return list(gpus.select(matrix.gpus, found))


def cpusets(slots: Sequence[Slot], cpus: Sequence[int] | None = None) -> dict[str, str]:
    """Split the CPUs this process may use evenly among CPU slots: slot -> cpuset string ("0-3").

    Every slot gets the same number of cores, so cells are comparable whichever slot they land on; the
    remainder stays unused. Fewer CPUs than slots is an input error (cells would share cores anyway).
    """
    names = [s for s in slots if s is not None]
    available = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
    per = len(available) // max(1, len(names))
    if per < 1:
        raise InputError(f"--pin-cpus: {len(names)} slots but only {len(available)} CPUs; use fewer --slots")
    out = {}
    for i, slot in enumerate(names):
        mine = available[i * per : (i + 1) * per]
        out[slot] = ",".join(str(c) for c in mine)
    return out


class SlotPool:
    """Free slots; `hold()` blocks until one is free and gives it back however the holder ends."""

    def __init__(self, slots: Sequence[Slot]) -> None:
        if not slots:
            raise ValueError("at least one slot is needed")
        self.size = len(slots)
        self._free: queue.Queue[Slot] = queue.Queue()
        for slot in slots:
            self._free.put(slot)

    @contextlib.contextmanager
    def hold(self) -> Iterator[Slot]:
        slot = self._free.get()
        try:
            yield slot
        finally:
            self._free.put(slot)


def run_on_slots(
    items: Sequence[T],
    slots: Sequence[Slot],
    work: Callable[[T, Slot], None],
    stop: threading.Event,
    on_interrupt: Callable[[], None],
) -> bool:
    """Run work(item, slot) for every item in order of submission, one item per slot at a time.

    Returns True when Ctrl-C interrupted the run: `stop` is set (no new item starts), `on_interrupt` is
    called (the runner kills what is in flight) and this returns once every started item has ended.
    """
    pool = SlotPool(slots)

    def one(item: T) -> None:
        if stop.is_set():
            return
        with pool.hold() as slot:
            if not stop.is_set():
                work(item, slot)

    executor = cf.ThreadPoolExecutor(max_workers=pool.size, thread_name_prefix="cell")
    futures = [executor.submit(one, item) for item in items]
    interrupted = False
    try:
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=POLL_S, return_when=cf.FIRST_EXCEPTION)
            for fut in finished:
                fut.result()
    except KeyboardInterrupt:
        interrupted = True
        stop.set()
        on_interrupt()
    except BaseException:
        stop.set()  # e.g. the store failed: start nothing more, let running cells end
        raise
    finally:
        for fut in futures:
            fut.cancel()
        executor.shutdown(wait=True, cancel_futures=True)
    return interrupted
