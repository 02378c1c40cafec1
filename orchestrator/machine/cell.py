"""The pipeline's side of sampling: one CellSampling per cell, from just before it starts to just after it ends.

    sampling = CellSampling(device, slot)            # before the cell; optionally sampling.settle(...)
    runner.run(..., watch=sampling.watch)            # the runner calls watch(CellProcess) once the cell started
    summary = sampling.finish(workload, record_dir)  # raw samples -> record_dir/machine.jsonl, summary -> record
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.machine import gpu
from orchestrator.machine.cpu import PROC, CgroupCell, HostCpu, ProcessCell
from orchestrator.machine.sampler import PERIOD_S, Sampler, first_line
from orchestrator.machine.summary import MachineState, summarise
from orchestrator.store import write_atomic
from orchestrator.workload_result import WorkloadResult

SAMPLES_FILE = "machine.jsonl"
# --gpu-settle: a GPU counts as idle at or below this utilisation; waiting stops after SETTLE_TIMEOUT_S.
SETTLE_IDLE_PCT = 5.0
SETTLE_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class CellProcess:
    """What a runner tells the sampler once the cell's process runs on this host."""

    pid: int
    own_cgroup: bool  # a container: measure its cgroup; False: measure the process (local runner)
    cpus: frozenset[int] | None = None  # the CPUs it may use (its cpuset); None: all of them
    cgroup_must_name: str | None = None  # the container id: its cgroup path names it, or the pid is not ours here


def _cgroup(pid: int) -> str | None:
    try:
        return (PROC / str(pid) / "cgroup").read_text()
    except OSError:
        return None


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None


def owned_by(proc: CellProcess) -> Callable[[int], bool]:
    """Whether a pid (from NVML's process list) is the cell's: in its container's cgroup, or (local runner, which
    starts each cell in its own session) in its session. A pid this host cannot read is not the cell's."""
    if proc.own_cgroup:
        mine = _cgroup(proc.pid)
        return lambda pid: mine is not None and _cgroup(pid) == mine
    session = _session(proc.pid)
    return lambda pid: session is not None and _session(pid) == session


class CellSampling:
    def __init__(self, device: str, slot: str | None, period_s: float = PERIOD_S) -> None:
        self.device = device
        self.slot = slot
        self.sampler = Sampler(period_s=period_s)
        self.settled: str | None = None
        self._gpu: gpu.NvmlGpu | None = None
        self._stopped = False

    def settle(self, max_temp_c: float) -> None:
        """--gpu-settle: wait for this cell's GPU to be idle and cool; only reads, never changes a setting."""
        if self.device != "gpu" or self.slot is None:
            self.settled = "unavailable: not a GPU cell"
            return
        self.settled = gpu.settle(self.slot, max_temp_c, SETTLE_IDLE_PCT, SETTLE_TIMEOUT_S)

    def watch(self, proc: CellProcess) -> None:
        """Called on the runner's thread as the cell starts: choose the sources and start sampling. Never raises."""
        try:
            self.sampler.add(HostCpu(set(proc.cpus) if proc.cpus else None))
            if proc.own_cgroup:
                self._add("cell", lambda: CgroupCell(proc.pid, proc.cgroup_must_name))
            else:
                self._add("cell", lambda: ProcessCell(proc.pid))
            if self.device == "gpu" and self.slot is not None:
                self._gpu = self._add("gpu", lambda: gpu.NvmlGpu(str(self.slot), owned_by(proc)))
                if self._gpu is not None and self._gpu.note:  # a MIG device: the figures are its whole GPU's
                    self.sampler.unavailable["gpu_own"] = f"unavailable: {self._gpu.note}"
            self.sampler.start()
        except Exception as exc:  # sampling must never cost a cell its result
            self.sampler.unavailable["sampler"] = f"unavailable: {first_line(exc)}"

    def _add(self, name: str, make: Any) -> Any:
        try:
            source = make()
        except Exception as exc:
            text = first_line(exc)
            self.sampler.unavailable[name] = text if text.startswith("unavailable:") else f"unavailable: {text}"
            return None
        self.sampler.add(source)
        return source

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self.sampler.stop()
            if self._gpu is not None:
                self._gpu.close()

    def finish(self, workload: WorkloadResult | None, record_dir: Path) -> MachineState | None:
        """Stop, keep the raw samples next to the record (orchestrator-owned), and summarise the timed part."""
        self.stop()
        samples = self.sampler.samples
        if samples:
            text = "".join(json.dumps(s, separators=(",", ":")) + "\n" for s in samples)
            write_atomic(record_dir / SAMPLES_FILE, text)
        # The window holds both timed loops: the per-step one and, when it ran, the back-to-back one (as many steps).
        batches = None
        if workload is not None:
            batches = len(workload.times_ms) * (2 if workload.throughput_ms is not None else 1)
        return summarise(
            samples,
            workload.timed_window if workload is not None else None,
            batches,
            self.sampler.period_s,
            self.sampler.unavailable,
            self.sampler.cpu_s,
            self.settled,
        )
