"""The run directory: one record per cell written atomically as the cell ends, a lock, resume, the manifest.

RUN/
  manifest.json         run id, host, engine, GPUs, images, build args, versions, git commit, matrix, state
  results.jsonl         the index: one CellRecord per line, derived from the records. A cell's line is appended
                        (O(1)) once its record.json is on disk; --resume, the end of a run and `report`
                        reconcile it with the records (a record without a line is added, a line without a
                        record is dropped with a warning) and rewrite it in plan order, one record at a time
  cells/<cell_id>/      the orchestrator's, never mounted into a container:
    params.json           the cell's parameters (mounted read-only as /params.json)
    record.json           the truth: the classified CellRecord, written atomically when the cell ended
    log.txt               the tail of the cell's output
    io/                   the workload's only writable place (its /results): result.json and nothing else;
                          read once without trusting it (runners/base.py read_result), then removed
  .lock                 held while a run writes here

Run dirs of schema 1 (the container's /results was the cell directory itself, so a workload could plant a
record.json) are refused by --resume: their cell records cannot be told from planted ones.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import InputError, OrchestrationError
from orchestrator.results import CellRecord
from orchestrator.runners.base import IO_DIR

RUN_DIR_SCHEMA = 2  # manifest.json "run_dir_schema": the cell-directory layout above
MANIFEST = "manifest.json"
RESULTS = "results.jsonl"
CELLS = "cells"
RECORD = "record.json"
LOCK = ".lock"
# Room every run needs before the first cell: results, logs and the report are small, but not nothing.
MIN_FREE_BYTES = 20 << 20


def write_atomic(path: Path, text: str) -> None:
    """Write-to-temp, fsync, rename: a reader (or a crash) sees the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: Path, doc: Any) -> None:
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=False, default=str) + "\n")


class RunStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock_fd: int | None = None
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ opening
    def open_for_run(self) -> None:
        """Create the directory, take the lock, remove what an interrupted cell left in its io/ (it may have filled
        the disk), and prove the directory writable with room to spare."""
        try:
            (self.root / CELLS).mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise OrchestrationError(f"output directory {self.root} is not writable: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                holder = (self.root / LOCK).read_text().strip() or "another process"
                raise OrchestrationError(
                    f"output directory {self.root} is in use by another run ({holder}); "
                    "wait for it or choose another --out"
                ) from None
            raise
        self._lock_fd = fd
        try:
            for cell in (self.root / CELLS).iterdir():
                remove_tree(cell / IO_DIR)  # io/ is never kept: any here is an interrupted cell's
            probe = self.root / ".write-probe"
            write_atomic(probe, "x" * 4096)
            probe.unlink()
            os.ftruncate(fd, 0)
            os.write(fd, f"pid {os.getpid()}".encode())
        except OSError as exc:
            self.close()
            raise OrchestrationError(f"output directory {self.root} is not writable: {exc.strerror or exc}") from None
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            self.close()
            raise OrchestrationError(
                f"output directory {self.root} has only {free >> 20} MiB free; need at least {MIN_FREE_BYTES >> 20} MiB"
            )

    @contextlib.contextmanager
    def lock_if_free(self) -> Iterator[bool]:
        """The run lock when no run holds it (True), else nothing (False): for a reader that may also write."""
        try:
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            yield False
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def close(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # ------------------------------------------------------------------ cells
    def cell_dir(self, cell_id: str) -> Path:
        return self.root / CELLS / cell_id

    def fresh_cell_dir(self, cell_id: str) -> Path:
        """An empty cell directory with an empty io/ (leftovers of an interrupted attempt are removed)."""
        d = self.cell_dir(cell_id)
        remove_tree(d)
        (d / IO_DIR).mkdir(parents=True)
        return d

    def save(self, record: CellRecord) -> None:
        """Persist one finished cell: its record (the truth), then its index line, appended. O(1) per cell: a crash
        between the two leaves a record without a line, which the next reconcile adds."""
        with self._write_lock:
            write_atomic(self.cell_dir(record.cell_id) / RECORD, record.model_dump_json(indent=1) + "\n")
            crash_point("record")
            append_line(self.root / RESULTS, record.to_json_line())
            crash_point("index")

    def reconcile(
        self, run_id: str | None, order: list[str] | None = None, write: bool = True,
        each: Callable[[CellRecord], None] | None = None,
    ) -> Reconciled:
        """Rebuild the index from the records, one record in memory at a time.

        Records go in `order` (the plan's), else in the index's order; any other record after them by name.
        `each` sees every record kept. With `write`, results.jsonl is replaced atomically by the rebuilt index
        (a record without a line is added; a line without a readable record of this run is dropped, said so).
        """
        out = Reconciled()
        listed = index_heads(self.root / RESULTS, out.warnings)
        ranked = order if order is not None else list(dict.fromkeys(cid for _, cid in listed))
        rank = {cid: i for i, cid in enumerate(ranked)}
        cells = self.root / CELLS
        present = [p.name for p in cells.iterdir() if (p / RECORD).is_file()] if cells.is_dir() else []
        names = sorted(present, key=lambda n: (rank.get(n, len(rank)), n))
        tmp = None
        if write:
            fd, tmp = tempfile.mkstemp(prefix=f".{RESULTS}.", suffix=".tmp", dir=self.root)
            sink = os.fdopen(fd, "w")
        try:
            for name in names:
                record, problem = self.read_record(name, run_id)
                if problem is not None:
                    out.warnings.append(problem)
                if record is None:
                    continue
                out.ids.append(record.cell_id)
                if write:
                    sink.write(record.to_json_line())
                if each is not None:
                    each(record)
                del record  # one record in memory at a time
            kept = set(out.ids)
            for n, cid in listed:
                if cid not in kept:
                    out.warnings.append(f"{RESULTS} line {n} ({cid}) has no readable {CELLS}/{cid}/{RECORD} of this "
                                        "run; dropped from the index")
            if write:
                sink.flush()
                os.fsync(sink.fileno())
                sink.close()
                crash_point("reconciled")
                os.replace(tmp, self.root / RESULTS)
                tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    sink.close()
                    os.unlink(tmp)
        return out

    def read_record(self, name: str, run_id: str | None) -> tuple[CellRecord | None, str | None]:
        """cells/<name>/record.json, or None and one line saying why it was left out."""
        where = f"{CELLS}/{name}/{RECORD}"
        try:
            record = CellRecord.model_validate_json(read_capped(self.cell_dir(name) / RECORD))
        except (OSError, ValidationError, ValueError) as exc:
            return None, f"{where} is unreadable and was left out: {describe_error(exc)}"
        if run_id is not None and record.run_id != run_id:
            return None, f"{where} belongs to run {record.run_id!r}, not this one; left out"
        if record.cell_id != name:
            return None, f"{where} is the record of {record.cell_id!r}, not of this cell; left out"
        batch = record.batch_problem()
        if batch is not None:
            return None, f"{where} {batch}; left out"
        return record, None

    def records(self, run_id: str | None = None) -> list[CellRecord]:
        """The readable cell records (of `run_id` when given), whole: for small runs and tests."""
        return self.scan_records(run_id)[0]

    def summaries(self, run_id: str | None = None) -> list[CellRecord]:
        """The readable cell records without their per-batch series: what a summary needs, bounded in memory."""
        out: list[CellRecord] = []
        self.reconcile(run_id, write=False, each=lambda r: out.append(slim(r)))
        return out

    def scan_records(self, run_id: str | None = None) -> tuple[list[CellRecord], list[str]]:
        """Cell records in cell order, and one line per record file that was unreadable or of another run."""
        out: list[CellRecord] = []
        found = self.reconcile(run_id, write=False, each=out.append)
        return out, [w for w in found.warnings if not w.startswith(RESULTS)]

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict[str, Any]:
        """The manifest, {} when there is none; InputError (one line naming the file) when it is not one."""
        path = self.root / MANIFEST
        try:
            doc = json.loads(read_capped(path))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, RecursionError) as exc:
            raise InputError(f"{path} is not a readable manifest: {describe_error(exc)}") from None
        if not isinstance(doc, dict):
            raise InputError(f"{path} is not a manifest: a JSON {type(doc).__name__}, expected an object")
        return doc

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.root / MANIFEST, manifest)


def open_existing(root: Path) -> RunStore:
    """A run directory for reading (report, compare): it must hold results."""
    if not (root / RESULTS).is_file() and not (root / CELLS).is_dir():
        raise InputError(f"{root}: not a run directory (no {RESULTS} or {CELLS}/)")
    return RunStore(root)


MAX_FILE_BYTES = 1 << 30  # no run file is larger; a bigger one is not read


def read_capped(path: Path) -> str:
    """A run file as UTF-8 text: a regular file (no link followed) of at most MAX_FILE_BYTES; OSError or
    UnicodeDecodeError (a ValueError) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, over {MAX_FILE_BYTES >> 20} MiB")
        return f.read(MAX_FILE_BYTES).decode("utf-8")


def describe_error(exc: BaseException) -> str:
    """One short line for a read or parse error (no traceback, no multi-line pydantic dump)."""
    if isinstance(exc, ValidationError):
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"]) or "(record)"
        return f"{where}: {err['msg']}"[:300]
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 (byte {exc.start})"
    if isinstance(exc, OSError):
        return str(exc.strerror or exc)
    return (str(exc).splitlines() or [type(exc).__name__])[0][:300]


def remove_tree(path: Path) -> None:
    """Remove a directory tree of any depth without recursion (shutil.rmtree recurses: a 3000-deep tree a
    workload made raises RecursionError) and without following links; at most two descriptors open."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags)
    names: list[str] = []  # the way down from `path`, one name per level
    try:
        while True:
            child = None
            with os.scandir(fd) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        child = entry.name
                        break
                    os.unlink(entry.name, dir_fd=fd)
            if child is not None:
                with contextlib.suppress(OSError):  # a workload may leave a directory without permissions
                    os.chmod(child, 0o700, dir_fd=fd)
                down = os.open(child, flags, dir_fd=fd)
                os.close(fd)
                fd = down
                names.append(child)
                continue
            if not names:
                break
            up = os.open("..", flags, dir_fd=fd)
            os.close(fd)
            fd = up
            os.rmdir(names.pop(), dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


@dataclass
class Reconciled:
    ids: list[str] = field(default_factory=list)  # the cells with a readable record of this run, index order
    warnings: list[str] = field(default_factory=list)


def slim(record: CellRecord) -> CellRecord:
    """The record without its per-batch series (times, losses): a summary of it, small whatever the cell ran."""
    if record.workload is None:
        return record
    return record.model_copy(update={"workload": record.workload.model_copy(update={"times_ms": [], "losses": []})})


def append_line(path: Path, line: str) -> None:
    """One line appended and on disk: O_APPEND writes of one process never interleave."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        data = line.encode()
        while data:
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


_CELL_ID = re.compile(rb'"cell_id":\s*"([A-Za-z0-9_.+-]{1,200})"')
_HEAD = 4096  # a line's cell_id is in its first fields (CellRecord's order)
_CHUNK = 1 << 20


def index_heads(path: Path, warnings: list[str]) -> list[tuple[int, str]]:
    """(line number, cell_id) of each index line, read in bounded chunks (a line may be 30 MB, or 1 GiB of
    garbage); a line without a cell id, or torn by a crash, is a warning."""
    out: list[tuple[int, str]] = []
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return out
    except OSError as exc:
        warnings.append(f"{RESULTS} is unreadable ({describe_error(exc)}); rebuilt from the cell records")
        return out
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            warnings.append(f"{RESULTS} is not a regular file; rebuilt from the cell records")
            return out
        n, head, blank = 1, b"", True

        def finish(torn: bool) -> None:
            match = _CELL_ID.search(head)
            if blank:
                return
            if match is None or torn:
                what = "torn (cut off by a crash)" if torn else "not a cell record"
                warnings.append(f"{RESULTS} line {n} is {what}; rebuilt from the cell records")
            else:
                out.append((n, match.group(1).decode()))

        while chunk := f.read(_CHUNK):
            start = 0
            while (nl := chunk.find(b"\n", start)) >= 0:
                if len(head) < _HEAD:
                    head += chunk[start:nl][: _HEAD - len(head)]
                blank = blank and not chunk[start:nl].strip()
                finish(False)
                n, head, blank = n + 1, b"", True
                start = nl + 1
            rest = chunk[start:]
            if len(head) < _HEAD:
                head += rest[: _HEAD - len(head)]
            blank = blank and not rest.strip()
        finish(True)
    return out


CRASH_AT = "LSTM_BENCH_CRASH_AT"  # test hook (tests/test_crash.py): SIGKILL this process at a named point


def crash_point(name: str) -> None:
    """Tests prove crash consistency by dying exactly here: `LSTM_BENCH_CRASH_AT=record` kills the orchestrator
    right after a cell's record is on disk, before its index line."""
    if os.environ.get(CRASH_AT) == name:
        os.kill(os.getpid(), signal.SIGKILL)
