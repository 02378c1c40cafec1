"""The per-cell cap on /results (the cell's io/): a watched quota, for every runner whose cells write on this host.

A bind mount has no size of its own and a host tmpfs needs root, so the orchestrator watches: while the cell runs,
io/ is measured every WATCH_INTERVAL_S (disk blocks, so a sparse file costs what it costs; entries counted too)
and the cell is stopped the moment it is over its cap; after the cell, io/ is measured once more. A cell over the
cap is `invalid-output` naming the sizes and its files are removed before the orchestrator writes anything, so a
cell that fills the disk costs the run that cell, not the run. Overshoot is bounded by the write rate times the
interval.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

WATCH_INTERVAL_S = 0.1
MAX_ENTRIES = 10_000  # io/ holds result.json alone: past this many entries it is over its cap whatever their size


@dataclass(frozen=True)
class Usage:
    bytes: int
    entries: int

    def over(self, cap: int) -> bool:
        return self.bytes > cap or self.entries > MAX_ENTRIES

    def describe(self, cap: int) -> str:
        what = (f"{self.bytes / (1 << 20):.1f} MiB" if self.entries <= MAX_ENTRIES
                else f"more than {MAX_ENTRIES} entries")
        return (f"the workload wrote {what} into /results, over its cap of {cap / (1 << 20):.0f} MiB (results_max_mb, "
                "or the run directory's free space when smaller); its files were removed")


def usage(path: Path) -> Usage:
    """Disk use of a tree, no link followed, no recursion; stops counting past MAX_ENTRIES."""
    total, entries, stack = 0, 0, [str(path)]
    while stack and entries <= MAX_ENTRIES:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for entry in it:
                entries += 1
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                total += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
                if entries > MAX_ENTRIES:
                    break
    return Usage(total, entries)


class Watch:
    """Measures io/ until stopped; calls `stop_cell` once when it is over `cap` (from its own thread)."""

    def __init__(self, path: Path, cap: int, stop_cell: Callable[[], None]) -> None:
        self.path, self.cap, self._stop_cell = path, cap, stop_cell
        self.seen: Usage | None = None  # what was over the cap when it fired
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"quota {path}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._done.wait(WATCH_INTERVAL_S):
            now = usage(self.path)
            if now.over(self.cap):
                self.seen = now
                self._stop_cell()
                return

    def stop(self) -> None:
        self._done.set()
        self._thread.join()
