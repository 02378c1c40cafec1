"""Outcome -> (Status, reason, workload JSON). Order of evidence, strongest first (docs/contract.md):
own timeout flag > OOMKilled > the workload's JSON > log patterns > exit code."""

from __future__ import annotations

import json
import re
from typing import Any

from orchestrator.frameworks import NAME_RE
from orchestrator.results import WORKLOAD_REPORTED, Status
from orchestrator.runners.base import Outcome, strip_ansi

WORKLOAD_SCHEMA_VERSION = 1
REQUIRED_KEYS = ("schema_version", "status", "framework", "params", "times_ms")
SIGKILL_EXIT = 137
_LOG_PATTERNS = (
    (Status.RECURSION, re.compile(r"RecursionError|maximum recursion depth")),
    (
        Status.OOM,
        re.compile(
            r"CUDA out of memory|OutOfMemoryError|RESOURCE_EXHAUSTED|ResourceExhaustedError|"
            r"CUDA_ERROR_OUT_OF_MEMORY|cudaMalloc retry failed|OOM when allocating"
        ),
    ),
    (Status.HOST_OOM, re.compile(r"\bMemoryError\b|Cannot allocate memory")),
)


# The line of a Python traceback that says what went wrong: "ModuleNotFoundError: No module named 'flax'".
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Warning|Failure)\b.*")


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def last_meaningful_line(text: str) -> str | None:
    """The line of an output tail that best says why a process died: the last exception line of a traceback,
    else the last non-blank line that is not an indented traceback frame or source line."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    for line in reversed(lines):
        if _EXCEPTION_LINE.match(line):
            return line
    plain = [line for line in lines if not line.startswith(("File ", "^", "~", "Traceback"))]
    return plain[-1] if plain else None


def impl_that_ran(requested: str, workload: dict[str, Any] | None) -> str:
    """The record's impl: the path the workload says actually ran (its result's `impl`), else the one asked for."""
    ran = (workload or {}).get("impl")
    return ran if isinstance(ran, str) and NAME_RE.match(ran) else requested


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
    # First line: the exit code and the one line that says why (what the console and the report show).
    why = last_meaningful_line(outcome.log_tail)
    head = f"exit code {outcome.exit_code}" + (f": {why}" if why else "; no output")
    return Status.CRASHED, f"{head}\nstderr tail:\n{_tail(outcome.log_tail)}", None
