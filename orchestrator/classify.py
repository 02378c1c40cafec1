"""Outcome -> (Status, reason, workload JSON). Order of evidence, strongest first (docs/contract.md):
own timeout flag > OOMKilled > the workload's JSON > log patterns > exit code."""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.results import WORKLOAD_REPORTED, Status
from orchestrator.runners.base import Outcome
from orchestrator.validity import judge

WORKLOAD_SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "status", "framework", "params", "times_ms")
SIGKILL_EXIT = 137
_LOG_PATTERNS = (
    (Status.RECURSION, re.compile(r"RecursionError|maximum recursion depth")),
    (
        Status.OOM,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|RESOURCE_EXHAUSTED|ResourceExhaustedError|"
            r"CUDA_ERROR_OUT_OF_MEMORY|cudaMalloc retry failed|OOM when allocating|"
            r"CUDNN_STATUS_ALLOC_FAILED|CUBLAS_STATUS_ALLOC_FAILED|CUDNN_STATUS_INTERNAL_ERROR_\w*ALLOCATION_FAILED"
        ),
    ),
    (Status.HOST_OOM, re.compile(r"\bMemoryError\b|Cannot allocate memory")),
)


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def parse_workload_json(text: str) -> tuple[dict[str, Any] | None, str | None]:
    """The workload's document, or why it is not acceptable."""
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        return None, f"result JSON does not parse: {exc}"
    if not isinstance(doc, dict):
        return None, f"result JSON is a {type(doc).__name__}, expected an object"
    missing = [k for k in REQUIRED_KEYS if k not in doc]
    if missing:
        return None, f"result JSON lacks {', '.join(missing)}"
    if doc["schema_version"] != WORKLOAD_SCHEMA_VERSION:
        return None, f"result schema_version {doc['schema_version']!r}, expected {WORKLOAD_SCHEMA_VERSION}"
    if doc["status"] not in WORKLOAD_REPORTED:
        return None, f"result status {doc['status']!r} is not one of {sorted(WORKLOAD_REPORTED)}"
    times = doc["times_ms"]
    if not isinstance(times, list) or not all(isinstance(t, int | float) and t >= 0 for t in times):
        return None, "result times_ms is not a list of non-negative numbers"
    if doc["status"] == "ok" and not times:
        return None, "result says ok but has no timed batches"
    return doc, None


def classify(outcome: Outcome, timeout_s: float) -> tuple[Status, str | None, dict[str, Any] | None]:
    if outcome.timed_out:
        return Status.TIMEOUT, f"no result within {timeout_s:g} s; the cell was killed", None
    if outcome.oom_killed:
        return Status.HOST_OOM, "killed by the container's memory limit (OOMKilled)", None
    if outcome.error and outcome.result_text is None:
        return Status.CRASHED, outcome.error, None
    if outcome.result_text is not None:
        doc, problem = parse_workload_json(outcome.result_text)
        if doc is None:
            return Status.INVALID_OUTPUT, problem, None
        invalid = judge(doc)  # the precision read-back and the validity gates (orchestrator/validity.py)
        if invalid is not None:
            return Status.INVALID_OUTPUT, invalid, doc
        status = Status(doc["status"])
        return status, doc.get("message"), doc
    for status, pattern in _LOG_PATTERNS:
        if pattern.search(outcome.log_tail):
            return status, f"no result JSON; log shows {status.value}: {_tail(outcome.log_tail, 3)}", None
    if outcome.exit_code == SIGKILL_EXIT and outcome.memory_limited:
        # cgroup v2 does not always set OOMKilled; a SIGKILL we did not send is most likely the memory limit.
        return Status.HOST_OOM, "killed by SIGKILL with no result (most likely the memory limit)", None
    if outcome.exit_code == 0:
        return Status.INVALID_OUTPUT, "workload exited 0 without writing its result JSON", None
    return Status.CRASHED, f"exit code {outcome.exit_code}; stderr tail:\n{_tail(outcome.log_tail)}", None
