"""The small interface every runner implements (docker, local, ray): prepare environments, run one cell."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from orchestrator.frameworks import Framework
from orchestrator.plan import Cell

LOG_TAIL_LINES = 60
LOG_TAIL_CHARS = 8000
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
LOG_FILE = "log.txt"
MAX_RESULT_BYTES = 64 << 20


@dataclass(frozen=True)
class Environment:
    """What a prepared framework environment is: an image, a virtualenv's Python, ... or why it failed."""

    key: tuple[str, str | None]
    ref: str | None  # image tag / interpreter path; None when the build failed
    details: dict[str, Any]
    error: str | None = None  # build log tail when the build failed
    duration_s: float = 0.0


@dataclass(frozen=True)
class Outcome:
    """Raw facts about one finished cell, before classification (orchestrator/classify.py)."""

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    result_text: str | None  # the workload's JSON, verbatim, when the file exists
    log_tail: str
    duration_s: float
    error: str | None = None  # the runner could not start or follow the cell
    memory_limited: bool = False  # a memory limit applied, so a bare SIGKILL most likely is the limit
    placement: str | None = None  # where the cell ran, when the runner chose it (Ray: node and GPU)
    started_at: str | None = None  # when the cell really started, when that is not when it was handed over


class Runner(Protocol):
    name: str

    def preflight(self) -> dict[str, Any]:
        """Check the runner can work at all (engine reachable, GPU runtime present); facts for the manifest."""
        ...

    def prepare(self, framework: Framework, variant: str | None, on_line: Any) -> Environment:
        """Build or find the environment for one framework variant. Never raises for a build failure."""
        ...

    def run(self, cell: Cell, env: Environment, cell_dir: Path, slot: str | None, timeout_s: float) -> Outcome:
        """Run one cell to completion (or timeout); the workload writes cell_dir/result.json.

        A runner whose cells run on this host sets `host_sampling = True` and takes a keyword `watch`: it calls
        watch(orchestrator.machine.cell.CellProcess) once the cell's process runs, so the host can sample it.
        """
        ...

    def abort(self) -> None:
        """Stop every cell in flight now (Ctrl-C); safe to call from a signal handler's thread."""
        ...


class LogTail:
    """Keeps only the last lines of a stream, so a workload that floods its output costs bounded memory."""

    def __init__(self, lines: int = LOG_TAIL_LINES, chars: int = LOG_TAIL_CHARS) -> None:
        self._lines: collections.deque[str] = collections.deque(maxlen=lines)
        self._partial = ""
        self._chars = chars
        self._lock = threading.Lock()

    def feed(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        with self._lock:
            text = self._partial + text
            *complete, self._partial = text.split("\n")
            for line in complete:
                self._lines.append(line[: self._chars])
            self._partial = self._partial[-self._chars :]

    def text(self) -> str:
        with self._lock:
            lines = list(self._lines) + ([self._partial] if self._partial else [])
        return "\n".join(lines)[-self._chars :]


def read_result(cell_dir: Path) -> str | None:
    """The workload's result file, at most MAX_RESULT_BYTES of it (a larger one cannot be valid; it fails to parse)."""
    path = cell_dir / RESULT_FILE
    try:
        with path.open("rb") as f:
            # Never the whole file: a runaway workload can write gigabytes into its results directory.
            return f.read(MAX_RESULT_BYTES).decode(errors="replace")
    except FileNotFoundError:
        return None
