"""Reading a run directory: its manifest and cell records (results.jsonl, or cells/*/record.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from orchestrator.errors import InputError
from orchestrator.results import CellRecord
from orchestrator.store import MANIFEST, RESULTS, describe_error, open_existing, read_capped

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
    """The manifest and records of a run directory; results.jsonl (plan order) wins over the per-cell files.

    A run directory is untrusted input: anything malformed in the manifest or results.jsonl is an InputError
    naming the file (and line); an unreadable cells/*/record.json, or a record of another run, is left out
    and said so in `warnings`.
    """
    store = open_existing(run_dir)
    manifest = store.read_manifest()
    check_manifest(manifest, run_dir / MANIFEST)
    run_id = manifest.get("run_id")
    per_cell, warnings = store.scan_records(run_id)
    jsonl = run_dir / RESULTS
    if not jsonl.is_file():
        return LoadedRun(run_dir, manifest, tuple(per_cell), tuple(warnings))
    try:
        text = read_capped(jsonl)
    except (OSError, ValueError) as exc:
        raise InputError(f"{jsonl}: unreadable: {describe_error(exc)}") from None
    records: list[CellRecord] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = CellRecord.model_validate_json(line)
        except (ValidationError, ValueError) as exc:
            raise InputError(f"{jsonl}:{n}: not a cell record: {describe_error(exc)}") from None
        if run_id is not None and record.run_id != run_id:
            warnings.append(f"{RESULTS} line {n} ({record.cell_id}) belongs to run {record.run_id!r}, not this one; "
                            "left out")
            continue
        records.append(record)
    return LoadedRun(run_dir, manifest, tuple(records), tuple(warnings))


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
