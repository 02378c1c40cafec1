"""Outcome -> (Status, reason, validated workload result). Order of evidence, strongest first (docs/contract.md):
own timeout flag > OOMKilled > the workload's JSON > log patterns > exit code."""

from __future__ import annotations

import re
from typing import Any

from orchestrator.frameworks import NAME_RE
from orchestrator.results import Status
from orchestrator.runners.base import Outcome, strip_ansi
from orchestrator.validity import HostView, judge
from orchestrator.workload_result import WorkloadResult, check_echo, parse_result

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


def impl_that_ran(requested: str, workload: WorkloadResult | None) -> str:
    """The record's impl: the path the workload says actually ran (its result's `impl`), else the one asked for."""
    ran = workload.impl if workload is not None else None
    return ran if isinstance(ran, str) and NAME_RE.match(ran) else requested


def classify(
    outcome: Outcome, timeout_s: float, params: dict[str, Any] | None = None
) -> tuple[Status, str | None, WorkloadResult | None]:
    """The cell's status, why, and the validated result when one was accepted (about this cell: `params`)."""
    if outcome.unsupported is not None:  # never started: e.g. the engine cannot give its container the GPU
        return Status.UNSUPPORTED, outcome.unsupported, None
    if outcome.timed_out:
        return Status.TIMEOUT, f"no result within {timeout_s:g} s; the cell was killed", None
    if outcome.oom_killed:
        return Status.HOST_OOM, "killed by the container's memory limit (OOMKilled)", None
    if outcome.error and outcome.result_text is None:
        return Status.CRASHED, outcome.error, None
    if outcome.result_problem is not None:
        return Status.INVALID_OUTPUT, outcome.result_problem, None
    if outcome.result_text is not None:
        result, problem = parse_result(outcome.result_text)
        if result is None:
            return Status.INVALID_OUTPUT, problem, None
        problem = check_echo(result, params) if params is not None else None
        if problem is None and outcome.stray:
            problem = f"the output directory holds {', '.join(outcome.stray)} besides the result; only it may be there"
        if problem is not None:
            return Status.INVALID_OUTPUT, problem, None
        # The precision read-back, the validity gates and the workload's times against the host's own clocks
        # (orchestrator/validity.py): the runner's duration is an upper bound of the process's lifetime.
        span = tuple(outcome.wall_span) if outcome.wall_span is not None else None
        invalid = judge(result, HostView(outcome.duration_s, span))  # type: ignore[arg-type]
        if invalid is not None:
            return Status.INVALID_OUTPUT, invalid, result
        return Status(result.status), result.message, result
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
