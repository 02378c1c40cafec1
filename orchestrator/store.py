"""The run directory: one record per cell written atomically as the cell ends, a lock, resume, the manifest.

RUN/
  manifest.json         run id, host, engine, GPUs, images, build args, versions, git commit, matrix, state
  results.jsonl         one CellRecord per line, plan order (rewritten atomically after every cell)
  cells/<cell_id>/      the orchestrator's, never mounted into a container:
    params.json           the cell's parameters (mounted read-only as /params.json)
    record.json           the truth: the classified CellRecord, written when the cell ended
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
import shutil
import stat
import tempfile
import threading
from collections.abc import Iterator
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
        self._saved: dict[str, CellRecord] | None = None  # records on disk, read once, then kept current

    # ------------------------------------------------------------------ opening
    def open_for_run(self) -> None:
        """Create the directory, prove it writable with room to spare, and take the lock."""
        try:
            (self.root / CELLS).mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-probe"
            write_atomic(probe, "x" * 4096)
            probe.unlink()
        except OSError as exc:
            raise OrchestrationError(f"output directory {self.root} is not writable: {exc.strerror or exc}") from None
        free = shutil.disk_usage(self.root).free
        if free < MIN_FREE_BYTES:
            raise OrchestrationError(
                f"output directory {self.root} has only {free >> 20} MiB free; need at least {MIN_FREE_BYTES >> 20} MiB"
            )
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
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
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

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

    def save(self, record: CellRecord, order: list[str]) -> None:
        """Persist one finished cell, then refresh results.jsonl in plan order."""
        with self._write_lock:
            write_atomic(self.cell_dir(record.cell_id) / RECORD, record.model_dump_json(indent=1) + "\n")
            if self._saved is None:
                self._saved = {r.cell_id: r for r in self.records(record.run_id)}
            self._saved[record.cell_id] = record
            self._rewrite_jsonl(order)

    def _rewrite_jsonl(self, order: list[str]) -> None:
        records = list(self._saved.values()) if self._saved is not None else self.records()
        rank = {cid: i for i, cid in enumerate(order)}
        records.sort(key=lambda r: (rank.get(r.cell_id, len(rank)), r.cell_id))
        write_atomic(self.root / RESULTS, "".join(r.to_json_line() for r in records))

    def done_ids(self, run_id: str) -> set[str]:
        return {r.cell_id for r in self.records(run_id)}

    def records(self, run_id: str | None = None) -> list[CellRecord]:
        """The readable cell records (of `run_id` when given); see `scan_records` for what was left out."""
        return self.scan_records(run_id)[0]

    def scan_records(self, run_id: str | None = None) -> tuple[list[CellRecord], list[str]]:
        """Cell records in cell order, and one line per record file that was unreadable or of another run."""
        out, problems = [], []
        for path in sorted((self.root / CELLS).glob(f"*/{RECORD}")):
            where = f"{CELLS}/{path.parent.name}/{RECORD}"
            try:
                record = CellRecord.model_validate_json(read_capped(path))
            except (OSError, ValidationError, ValueError) as exc:
                problems.append(f"{where} is unreadable and was left out: {describe_error(exc)}")
                continue
            if run_id is not None and record.run_id != run_id:
                problems.append(f"{where} belongs to run {record.run_id!r}, not this one; left out")
                continue
            out.append(record)
        return out, problems

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


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
