"""The small interface every runner implements (docker, local, ray): prepare environments, run one cell."""

from __future__ import annotations

import collections
import errno
import os
import re
import stat
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
# The only directory a workload may write (the container's /results): result.json and nothing else. Everything
# the orchestrator trusts (params.json, record.json, log.txt) lives beside it, out of the workload's reach.
IO_DIR = "io"
MAX_RESULT_BYTES = 64 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
# Terminal escape sequences (colours, cursor moves) that pip, docker and frameworks print: noise in a record.
ANSI_RE = re.compile(r"\x1b(?:\[[0-9;?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


@dataclass(frozen=True)
class Environment:
    """What a prepared framework environment is: an image, a virtualenv's Python, ... or why it failed."""

    key: tuple[str, str | None]
    ref: str | None  # image tag / interpreter path; None when the build failed
    details: dict[str, Any]
    error: str | None = None  # why the build failed: its first line names the failing step, then the log tail
    duration_s: float = 0.0
    log_tail: str | None = None  # the build's (or environment's) output tail when it failed


@dataclass(frozen=True)
class Outcome:
    """Raw facts about one finished cell, before classification (orchestrator/classify.py)."""

    exit_code: int | None
    timed_out: bool
    oom_killed: bool
    result_text: str | None  # the workload's JSON, verbatim, when a regular result file exists
    log_tail: str
    duration_s: float
    error: str | None = None  # the runner could not start or follow the cell
    memory_limited: bool = False  # a memory limit applied, so a bare SIGKILL most likely is the limit
    placement: str | None = None  # where the cell ran, when the runner chose it (Ray: node and GPU)
    started_at: str | None = None  # when the cell really started, when that is not when it was handed over
    result_problem: str | None = None  # why the result file could not be read (a FIFO, a link, too large, ...)
    stray: tuple[str, ...] = ()  # what else the workload left in its output directory
    unsupported: str | None = None  # the runner found, before starting it, that the cell cannot run here (why)
    # Wall clock (time.time()) just before the cell's process (container) started and just after it ended, on the
    # machine it ran on: the span the workload's timed_window must lie in (orchestrator/validity.py HostView).
    wall_span: tuple[float, float] | None = None


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
        return strip_ansi("\n".join(lines))[-self._chars :]


def io_dir(cell_dir: Path) -> Path:
    """The cell's output directory: the container's /results (the local runner's --out directory)."""
    return cell_dir / IO_DIR


@dataclass(frozen=True)
class ResultFile:
    text: str | None = None  # the file's content when it is a regular file of acceptable size
    problem: str | None = None  # otherwise what was found instead; both None: there is no result file
    stray: tuple[str, ...] = ()  # other entries in the output directory (sorted, at most a few)

    def outcome_fields(self) -> dict[str, Any]:
        return {"result_text": self.text, "result_problem": self.problem, "stray": self.stray}


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISLNK, "a symbolic link"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")):
        if test(mode):
            return word
    return "not a regular file"


def read_result(cell_dir: Path) -> ResultFile:
    """The workload's result file, read without trusting it: only a regular file (no link followed, never a
    blocking open or read), at most MAX_RESULT_BYTES; anything else is described, not read."""
    try:
        dir_fd = os.open(io_dir(cell_dir), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return ResultFile()
    except OSError as exc:
        return ResultFile(problem=f"the output directory cannot be read: {exc.strerror or exc}")
    try:
        stray = _stray(dir_fd)
        try:
            fd = os.open(RESULT_FILE, _READ_FLAGS, dir_fd=dir_fd)
        except FileNotFoundError:
            return ResultFile(stray=stray)
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # O_NOFOLLOW on a link
                return ResultFile(problem=f"{RESULT_FILE} is a symbolic link, not a regular file", stray=stray)
            return ResultFile(problem=f"{RESULT_FILE} cannot be opened: {exc.strerror or exc}", stray=stray)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                return ResultFile(problem=f"{RESULT_FILE} is {_kind(st.st_mode)}, not a regular file", stray=stray)
            if st.st_size > MAX_RESULT_BYTES:
                return ResultFile(problem=f"result JSON is {st.st_size} bytes, over the limit of "
                                          f"{MAX_RESULT_BYTES >> 20} MiB", stray=stray)
            data = _read_at_most(fd, MAX_RESULT_BYTES + 1)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)
    if len(data) > MAX_RESULT_BYTES:  # it grew after the fstat
        return ResultFile(problem=f"result JSON is over the limit of {MAX_RESULT_BYTES >> 20} MiB", stray=stray)
    return ResultFile(text=data.decode(errors="replace"), stray=stray)


def _read_at_most(fd: int, limit: int) -> bytes:
    chunks, size = [], 0
    while size < limit:
        chunk = os.read(fd, min(1 << 20, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _stray(dir_fd: int, show: int = 5) -> tuple[str, ...]:
    names = []
    with os.scandir(dir_fd) as entries:
        for entry in entries:
            if entry.name != RESULT_FILE:
                names.append(repr(entry.name[:60]))
                if len(names) > 1000:  # a flood of files: enough to say so
                    break
    names.sort()
    return tuple(names[:show]) + ((f"and {len(names) - show} more",) if len(names) > show else ())
