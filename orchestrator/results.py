"""The one Status enum and the versioned, immutable record of one cell (docs/results-schema.md)."""

from __future__ import annotations

import enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.machine.summary import MachineState
from orchestrator.plan import ID_TAIL
from orchestrator.workload_result import Scalar, WorkloadResult

# 2: the cell's own params and a validated workload result; records of schema 1 still load for the report.
RECORD_SCHEMA_VERSION = 2


class Status(str, enum.Enum):
    OK = "ok"
    OOM = "oom"  # the device ran out of memory, reported by the workload
    HOST_OOM = "host-oom"  # the container was killed by its memory limit
    RECURSION = "recursion"  # Python's recursion limit (the 2016 table's "recursion depth")
    TIMEOUT = "timeout"  # the orchestrator's per-cell timeout fired
    BUILD_FAILED = "build-failed"  # the framework's image (or environment) could not be built
    CRASHED = "crashed"  # any other failure: exit code and stderr tail in the reason
    INVALID_OUTPUT = "invalid-output"  # the result JSON is missing fields, unparsable or of another schema
    UNSUPPORTED = "unsupported"  # cannot run on this device, checked at start-up ("didn't run")
    SKIPPED = "skipped"  # not run on purpose (e.g. --resume found it done elsewhere, or filtered)

    @property
    def word(self) -> str:
        """What the report's table shows in place of a number (the 2016 table's vocabulary)."""
        return _WORDS[self]


_WORDS = {
    Status.OK: "",
    Status.OOM: "out of mem",
    Status.HOST_OOM: "host out of mem",
    Status.RECURSION: "recursion depth",
    Status.TIMEOUT: "timeout",
    Status.BUILD_FAILED: "build failed",
    Status.CRASHED: "crashed",
    Status.INVALID_OUTPUT: "invalid output",
    Status.UNSUPPORTED: "didn't run",
    Status.SKIPPED: "skipped",
}


class CellRecord(BaseModel):
    """One line of results.jsonl. Immutable. `params` are the cell's own (what the report and FLOPs use);
    `workload` is the workload's result, validated against its schema and the cell, when it was accepted."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_enum_values=False)

    schema_version: int = RECORD_SCHEMA_VERSION
    run_id: str
    cell_id: str
    framework: str
    variant: str | None
    impl: str
    label: str
    hidden: int
    repeat: int
    precision: str = "fp32"  # the arithmetic asked for (fp32, tf32, bf16); absent in records of older runs
    # The cell's own batch size (a capacity search by batch); None: the run's matrix batch, and in older records.
    batch: int | None = Field(default=None, gt=0)
    device: str
    slot: str | None = None
    status: Status
    reason: str | None = None
    duration_s: float
    exit_code: int | None = None
    image: dict[str, Any] | None = None  # the environment it ran in: docker tag and image id, or the interpreter
    params: dict[str, Scalar] | None = None  # absent in records of schema 1
    median_ms: float | None = None
    mean_ms: float | None = None
    log_tail: str | None = None
    workload: WorkloadResult | None = None
    started_at: str | None = None  # UTC, milliseconds; absent in records of older runs
    machine: MachineState | None = None  # what the host saw during the timed part (orchestrator/machine/)
    finished_at: str

    @property
    def cell_params(self) -> dict[str, Any] | None:
        """The cell's own params; records of schema 1 lack them and fall back to the workload's echo."""
        if self.params is not None:
            return dict(self.params)
        return dict(self.workload.params) if self.workload is not None else None

    def batch_apart(self, default: Any) -> int | None:
        """The batch size when it is the cell's own and differs from the run's `default` (its matrix's batch), else
        None: what sets cells of another batch size apart in the report and compare (never pooled with the rest)."""
        return self.batch if self.batch is not None and self.batch != default else None

    def batch_problem(self) -> str | None:
        """None when the record's batch agrees with the cell it claims to be (its id) and with its own params."""
        found = ID_TAIL.search(self.cell_id)
        said = int(found[2]) if found and found[2] else None
        if said != self.batch:
            mine, theirs = (self.batch or "the matrix's"), (said or "the matrix's")
            return f"is of batch {mine}, but its cell id {self.cell_id!r} says {theirs}"
        if self.batch is not None and self.params is not None and self.params.get("batch") != self.batch:
            return f"is of batch {self.batch}, but its params say {self.params.get('batch')!r}"
        return None

    @property
    def times_ms(self) -> list[float]:
        """The per-batch times of an ok cell; empty for anything else."""
        return list(self.workload.times_ms) if self.workload is not None and self.status is Status.OK else []

    def to_json_line(self) -> str:
        return self.model_dump_json() + "\n"
