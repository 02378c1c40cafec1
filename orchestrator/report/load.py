"""Reading a run directory: its manifest and cell records (results.jsonl, or cells/*/record.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import InputError
from orchestrator.results import CellRecord
from orchestrator.store import RESULTS, open_existing


@dataclass(frozen=True)
class LoadedRun:
    root: Path
    manifest: dict[str, Any]
    records: tuple[CellRecord, ...]


def load_run(run_dir: Path) -> LoadedRun:
    """The manifest and records of a run directory; results.jsonl (plan order) wins over the per-cell files."""
    store = open_existing(run_dir)
    manifest = store.read_manifest()
    jsonl = run_dir / RESULTS
    records: list[CellRecord] = []
    if jsonl.is_file():
        for n, line in enumerate(jsonl.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(CellRecord.model_validate_json(line))
            except (ValidationError, ValueError) as exc:
                raise InputError(f"{jsonl}:{n}: not a cell record: {_first_error(exc)}") from None
    else:
        records = store.records()
    return LoadedRun(run_dir, manifest, tuple(records))


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        return f"{'.'.join(str(p) for p in err['loc']) or '(record)'}: {err['msg']}"
    return str(exc).splitlines()[0]


def workload_times(record: CellRecord) -> list[float]:
    """The per-batch times of an ok cell; empty for anything else."""
    if record.workload is None:
        return []
    times = record.workload.get("times_ms") or []
    return [float(t) for t in times]


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n"
