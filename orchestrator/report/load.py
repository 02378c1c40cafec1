"""Reading a run directory: its manifest and its cell records (cells/*/record.json, in results.jsonl's order)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestrator.errors import InputError
from orchestrator.results import CellRecord
from orchestrator.store import MANIFEST, RESULTS, describe_error, open_existing

# Manifest keys the report reads, and the JSON type each must have when present.
_MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "run_id": str, "state": str, "started_at": str, "finished_at": str, "tool_version": str, "command": list,
    "host": dict, "runner": dict, "gpus": list, "git": dict, "matrix": dict, "environments": dict,
    "resumed_at": list, "build_args": dict, "images": dict,
}


@dataclass(frozen=True)
class LoadedRun:
    root: Path
    manifest: dict[str, Any]
    records: tuple[CellRecord, ...]
    warnings: tuple[str, ...] = ()  # record files left out (unreadable, or of another run)


def load_run(run_dir: Path) -> LoadedRun:
    """The manifest and the cell records of a run directory, in the index's (plan) order.

    The records (cells/*/record.json) are the truth; results.jsonl is their index, reconciled here and rewritten
    when no run holds the directory (a record without a line is added; a line without a record is dropped and
    said so in `warnings`). Records are read one at a time. A run directory is untrusted input: a malformed
    manifest is an InputError naming the file; an unreadable record, or one of another run, is left out and said
    so in `warnings`.
    """
    store = open_existing(run_dir)
    manifest = store.read_manifest()
    check_manifest(manifest, run_dir / MANIFEST)
    run_id = manifest.get("run_id")
    records: list[CellRecord] = []
    with store.lock_if_free() as free:
        try:
            try:
                found = store.reconcile(run_id, write=free, each=records.append)
            except OSError as exc:  # a read-only copy of a run: its index stays as it is
                if not free:
                    raise
                records.clear()
                found = store.reconcile(run_id, write=False, each=records.append)
                found.warnings.append(f"{RESULTS} could not be rewritten: {describe_error(exc)}")
        except OSError as exc:
            raise InputError(f"{run_dir}: cannot read its cell records: {describe_error(exc)}") from None
    return LoadedRun(run_dir, manifest, tuple(records), tuple(found.warnings))


def check_manifest(manifest: dict[str, Any], path: Path) -> None:
    for key, kind in _MANIFEST_TYPES.items():
        value = manifest.get(key)
        if value is not None and not isinstance(value, kind):
            raise InputError(f"{path}: {key} is a JSON {type(value).__name__}, not what a manifest holds there")
    for key in ("gpus",):
        if any(not isinstance(g, dict) for g in manifest.get(key) or []):
            raise InputError(f"{path}: {key} holds something other than objects")


def workload_times(record: CellRecord) -> list[float]:
    """The per-batch times of an ok cell; empty for anything else."""
    return record.times_ms


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n"
