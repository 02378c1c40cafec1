"""CPU-side reads: the host's load from /proc/stat and the cell's own CPU time and memory.

The cell is a container (its cgroup: cgroup v1 cpuacct/memory or v2 cpu.stat/memory.current) or, with the local
runner, a process (/proc/PID/stat, its threads and reaped children included). Only files are read: no docker
stats call, which costs the engine a second of its own sampling per answer.
"""

from __future__ import annotations

import os
from pathlib import Path

from orchestrator.machine.sampler import Sample

PROC = Path("/proc")
CGROUP_ROOT = Path("/sys/fs/cgroup")
TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
# /proc/stat columns after the name: user nice system idle iowait irq softirq steal (guest time is inside user).
_BUSY = (0, 1, 2, 5, 6, 7)  # steal too: time the hypervisor gave to someone else is time this cell did not get
_IDLE = (3, 4)


def parse_proc_stat(text: str) -> dict[int, tuple[int, int]]:
    """Per CPU: (busy ticks, total ticks) since boot."""
    out = {}
    for line in text.splitlines():
        name, _, rest = line.partition(" ")
        if not name.startswith("cpu") or name == "cpu":
            continue
        ticks = [int(x) for x in rest.split()]
        busy = sum(ticks[i] for i in _BUSY if i < len(ticks))
        out[int(name[3:])] = (busy, busy + sum(ticks[i] for i in _IDLE))
    return out


def parse_cpuset(text: str) -> set[int]:
    """ "0-3,6" -> {0, 1, 2, 3, 6}."""
    cpus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


class HostCpu:
    """Busy and total CPU seconds of the CPUs the cell may use (all of them when it is not pinned)."""

    name = "host"

    def __init__(self, cpus: set[int] | None = None, path: Path = PROC / "stat") -> None:
        self.cpus = cpus
        self.path = path

    def read(self) -> Sample:
        per_cpu = parse_proc_stat(self.path.read_text())
        chosen = [per_cpu[c] for c in (self.cpus or per_cpu) if c in per_cpu]
        if not chosen:
            raise ValueError(f"none of CPUs {sorted(self.cpus or [])} in {self.path}")
        return {
            "host_busy_s": sum(b for b, _ in chosen) * TICK_S,
            "host_total_s": sum(t for _, t in chosen) * TICK_S,
            "host_cpus": len(chosen),
        }


def cgroup_files(
    pid: int, must_name: str | None = None, proc: Path = PROC, root: Path = CGROUP_ROOT
) -> tuple[Path, Path | None, str]:
    """(CPU usage file, memory file, "v1"|"v2") of the cgroup that process `pid` lives in.

    `must_name` (a container id) must appear in the cgroup's path: the engine gives pids of its host's pid
    namespace, and an orchestrator in another namespace would otherwise measure some unrelated process.
    """
    text = (proc / str(pid) / "cgroup").read_text()
    if must_name and must_name not in text:
        raise LookupError(f"pid {pid} here is not container {must_name[:12]} (another pid namespace?)")
    lines = text.splitlines()
    v1: dict[str, str] = {}
    v2 = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":
            v2 = path
        for c in controllers.split(","):
            v1[c] = path
    if "cpuacct" in v1:
        base = root / ("cpu,cpuacct" if (root / "cpu,cpuacct").is_dir() else "cpuacct")
        cpu = base / v1["cpuacct"].lstrip("/") / "cpuacct.usage"
        memory = root / "memory" / v1["memory"].lstrip("/") / "memory.usage_in_bytes" if "memory" in v1 else None
        if cpu.is_file():
            return cpu, memory if memory and memory.is_file() else None, "v1"
    if v2 is not None:
        d = root / v2.lstrip("/")
        if (d / "cpu.stat").is_file():
            return d / "cpu.stat", (d / "memory.current") if (d / "memory.current").is_file() else None, "v2"
    raise FileNotFoundError(f"no readable cgroup CPU accounting for pid {pid} under {root}")


class CgroupCell:
    """A container's CPU seconds and memory, from its cgroup: the cell's processes and only them."""

    name = "cell"

    def __init__(self, pid: int, must_name: str | None = None) -> None:
        self.cpu_file, self.mem_file, self.version = cgroup_files(pid, must_name)

    def read(self) -> Sample:
        text = self.cpu_file.read_text()
        if self.version == "v1":
            cpu_s = int(text) / 1e9
        else:
            usage = next(line for line in text.splitlines() if line.startswith("usage_usec "))
            cpu_s = int(usage.split()[1]) / 1e6
        out: Sample = {"cell_cpu_s": cpu_s}
        if self.mem_file is not None:
            out["cell_mem_bytes"] = int(self.mem_file.read_text())
        return out


class ProcessCell:
    """A local cell's CPU seconds (its threads, and children it has waited for) and resident memory."""

    name = "cell"
    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self, pid: int, proc: Path = PROC) -> None:
        self.dir = proc / str(pid)
        self.read()  # fail now (no such process) rather than on the first tick

    def read(self) -> Sample:
        stat = (self.dir / "stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # the name may hold spaces and parentheses
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        rss_pages = int((self.dir / "statm").read_text().split()[1])
        return {"cell_cpu_s": (utime + stime + cutime + cstime) * TICK_S, "cell_mem_bytes": rss_pages * self._PAGE}
