"""The run directory: one record per cell written atomically as the cell ends, a lock, resume, the manifest.

RUN/
  manifest.json         host, engine, GPUs, images, versions, git commit, matrix, state
  results.jsonl         one CellRecord per line, plan order (rewritten atomically after every cell)
  cells/<cell_id>/      params.json (in), result.json (the workload's), record.json (the truth), log.txt
  .lock                 held while a run writes here
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import InputError, OrchestrationError
from orchestrator.results import CellRecord

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
        """An empty directory for a cell about to run (leftovers of an interrupted attempt are removed)."""
        d = self.cell_dir(cell_id)
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        return d

    def save(self, record: CellRecord, order: list[str]) -> None:
        """Persist one finished cell, then refresh results.jsonl in plan order."""
        with self._write_lock:
            write_atomic(self.cell_dir(record.cell_id) / RECORD, record.model_dump_json(indent=1) + "\n")
            if self._saved is None:
                self._saved = {r.cell_id: r for r in self.records()}
            self._saved[record.cell_id] = record
            self._rewrite_jsonl(order)

    def _rewrite_jsonl(self, order: list[str]) -> None:
        records = list(self._saved.values()) if self._saved is not None else self.records()
        rank = {cid: i for i, cid in enumerate(order)}
        records.sort(key=lambda r: (rank.get(r.cell_id, len(rank)), r.cell_id))
        write_atomic(self.root / RESULTS, "".join(r.to_json_line() for r in records))

    def done_ids(self) -> set[str]:
        return {r.cell_id for r in self.records()}

    def records(self) -> list[CellRecord]:
        out = []
        for path in sorted((self.root / CELLS).glob(f"*/{RECORD}")):
            with contextlib.suppress(OSError, ValidationError, ValueError):
                out.append(CellRecord.model_validate_json(path.read_text()))
        return out

    # ------------------------------------------------------------------ manifest
    def read_manifest(self) -> dict[str, Any]:
        try:
            return json.loads((self.root / MANIFEST).read_text())
        except FileNotFoundError:
            return {}
        except json.JSONDecodeError as exc:
            raise OrchestrationError(f"{self.root / MANIFEST} is corrupt: {exc}") from None

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        write_json(self.root / MANIFEST, manifest)


def open_existing(root: Path) -> RunStore:
    """A run directory for reading (report, compare): it must hold results."""
    if not (root / RESULTS).is_file() and not (root / CELLS).is_dir():
        raise InputError(f"{root}: not a run directory (no {RESULTS} or {CELLS}/)")
    return RunStore(root)


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open() as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
