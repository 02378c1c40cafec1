"""The one schema of a workload's result.json (docs/contract.md), validated once, where the file is read.

Everything a container writes is untrusted input. A result is accepted only if it parses into `WorkloadResult`
(strict types, finite numbers, bounded strings and lists, no unknown keys) and it is about the cell that ran:
framework, variant and every param echo the cell's own (`check_echo`). Everything downstream (records, report,
compare) reads the validated model, never the raw JSON.

Adding a result field: add it to `WorkloadResult` below with a bounded type (`Text`, `Name`, `Finite`, `Count`,
or a small nested model with `_STRICT`), default None when older workloads do not write it, and document it in
docs/contract.md. A new matrix axis that reaches params.json needs no change here: `params` is echoed key by key.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

# 2 adds `update` (the probe step's per-parameter fingerprint); results of schema 1 (records of older runs) still
# parse, without it, and their equivalence can only be n/a.
# 3 adds the start-up figures (STARTUP_FIELDS); results of schemas 1 and 2 parse without them (the report: n/a).
SCHEMA_VERSION = 3
RESULT_KIND = "lstm-bench.workload-result"
WORKLOAD_STATUSES = ("ok", "oom", "recursion", "crashed", "unsupported")  # workloads/harness.py WORKLOAD_STATUSES
MAX_TIMES = 2_000_000  # timed batches in one result (matrix.MAX_ITERS plus room)
MAX_BATCH_MS = 1e9  # one batch over 11 days is no measurement
MAX_STARTUP_S = 1e6  # nor 11 days before the first step (harness.MAX_PROCESS_AGE_S; a cell's timeout is at most 7)
# Schema 3: process start -> harness entry, build(), the first probe step, process start -> that step's loss read.
STARTUP_FIELDS = ("import_s", "build_s", "first_step_s", "to_first_step_s")
# The start-up parts are read from one monotonic clock (import_s from the kernel's process start, to a tick):
# slack for float rounding of sums, not for noise.
STARTUP_SLACK_S = 1e-6
MAX_TEXT = 8000
MAX_NAME = 200
MAX_KEYS = 64

_STRICT = ConfigDict(strict=True, extra="forbid", frozen=True)
Text = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
Name = Annotated[str, StringConstraints(max_length=MAX_NAME)]
Version = Annotated[str, StringConstraints(max_length=1000)]  # a version, or the harness's probe_error repr
Finite = Annotated[float, Field(allow_inf_nan=False, ge=-1e300, le=1e300)]
NonNegative = Annotated[float, Field(allow_inf_nan=False, ge=0, le=1e300)]
StartupS = Annotated[float, Field(allow_inf_nan=False, ge=0, le=MAX_STARTUP_S)]
BatchMs = Annotated[float, Field(allow_inf_nan=False, ge=0, le=MAX_BATCH_MS)]
Count = Annotated[int, Field(ge=0, le=1 << 62)]
Scalar = Annotated[int, Field(ge=-(1 << 62), le=1 << 62)] | Finite | bool | Name | None


class StatsMs(BaseModel):
    """The workload's own summary of times_ms (the orchestrator recomputes what it reports)."""

    model_config = _STRICT
    mean: NonNegative
    median: NonNegative
    std: NonNegative
    min: NonNegative
    max: NonNegative
    p95: NonNegative | None = None


class DeviceInfo(BaseModel):
    model_config = _STRICT
    kind: Literal["cpu", "gpu"]
    name: Name | None = None


class Validity(BaseModel):
    """The harness's validity gates (judged by orchestrator/validity.py)."""

    model_config = _STRICT
    loss_trend: Literal["decreasing", "increasing", "flat", "undetermined", "not-finite"]
    loss_trend_rel: Finite | None = None
    times_sum_over_wall: NonNegative | None = None
    throughput_over_latency: NonNegative | None = None


class TensorUpdate(BaseModel):
    """One parameter tensor's change in the first probe step (workloads/harness.py update_fingerprint)."""

    model_config = _STRICT
    delta_l2: NonNegative
    delta_sum: Finite
    delta_proj: Finite
    delta_l2_rows_not_looked_up: NonNegative | None = None  # the embedding only


class UpdateFingerprint(BaseModel):
    """Every parameter tensor of the canonical layout (harness.Weights), none missing, none added."""

    model_config = _STRICT
    embedding: TensorUpdate
    kernel: TensorUpdate
    recurrent_kernel: TensorUpdate
    bias: TensorUpdate
    dense_kernel: TensorUpdate
    dense_bias: TensorUpdate


Switch = Scalar | Annotated[list[Scalar], Field(max_length=MAX_KEYS)]


class WorkloadResult(BaseModel):
    """result.json, field by field (docs/contract.md "The result")."""

    model_config = _STRICT
    schema_version: Literal[1, 2, 3]
    kind: Literal["lstm-bench.workload-result"]
    status: Literal["ok", "oom", "recursion", "crashed", "unsupported"]
    message: Text | None = None
    framework: Name
    variant: Name | None = None
    impl: Name  # the implementation that ran (may differ from the requested params.impl)
    params: Annotated[dict[Name, Scalar], Field(max_length=MAX_KEYS)]  # echo of params.json, checked key by key
    versions: Annotated[dict[Name, Version | None], Field(max_length=MAX_KEYS)] = {}
    device: DeviceInfo
    param_count: Count | None = None
    param_count_expected: Count | None = None
    loss_initial: Finite | None = None
    loss_after_one_step: Finite | None = None
    loss_final: Finite | None = None
    times_ms: Annotated[list[BatchMs], Field(max_length=MAX_TIMES)]
    stats_ms: StatsMs | None = None
    timed_wall_ms: NonNegative | None = None  # wall time of the per-step (latency) loop
    throughput_ms: BatchMs | None = None  # steady state: the same steps queued back to back, one sync, / iters
    losses: Annotated[list[Finite | None], Field(max_length=MAX_TIMES)] = []  # every timed step's loss
    validity: Validity | None = None
    precision: Name | None = None  # asked for (also in params)
    precision_effective: Name | None = None  # what the framework's own switches read back amount to
    precision_switches: Annotated[dict[Name, Switch], Field(max_length=MAX_KEYS)] = {}
    embedding_update: Literal["sparse", "dense"] | None = None
    # Wall clock (time.time()) at the start and end of the timed loops: the window the host's machine sampler keeps.
    timed_window: Annotated[list[NonNegative], Field(min_length=2, max_length=2)] | None = None
    update: UpdateFingerprint | None = None  # schema 2: the first probe step's change, per parameter tensor
    peak_memory_bytes: Count | None = None
    setup_s: NonNegative | None = None
    # Schema 3, start-up apart from the timed steady state (docs/contract.md); null when not reached or not known.
    import_s: StartupS | None = None
    build_s: StartupS | None = None
    first_step_s: StartupS | None = None
    to_first_step_s: StartupS | None = None
    wall_s: NonNegative | None = None


def parse_result(text: str | bytes) -> tuple[WorkloadResult | None, str | None]:
    """The validated result, or why it is not acceptable (the first problem, naming its key)."""
    try:
        result = WorkloadResult.model_validate_json(text)
    except ValidationError as exc:
        return None, f"result JSON {first_error(exc)}"
    if result.status == "ok" and not result.times_ms:
        return None, "result says ok but has no timed batches"
    if problem := startup_problem(result):
        return None, problem
    return result, None


def startup_problem(result: WorkloadResult) -> str | None:
    """The start-up figures against their schema and each other: what cannot be true of one process's clock.

    harness.run() and measure() take them in this order, each span holding the next parts: process start, harness
    entry (import_s; wall_s starts), setup_s (build_s inside it), first_step_s (to_first_step_s ends), the end of
    wall_s. A part longer than the span that holds it was not measured."""
    given = {k: getattr(result, k) for k in STARTUP_FIELDS if getattr(result, k) is not None}
    if result.schema_version < 3:
        return f"result of schema {result.schema_version} has {', '.join(given)} (schema 3)" if given else None
    if result.status == "ok":
        lacking = [k for k in ("build_s", "first_step_s") if k not in given]
        if lacking:
            return f"an ok result without {', '.join(lacking)} (null): every ok cell built and took a first step"
    imp, build, first, total = (getattr(result, k) for k in STARTUP_FIELDS)
    setup, wall = result.setup_s, result.wall_s
    # (part, its name, what holds it, that span's name)
    nested = [
        (build, "build_s", setup, "setup_s"),
        (imp, "import_s", total, "to_first_step_s"),
        (_sum(imp, setup, first), "import_s + setup_s + first_step_s", total, "to_first_step_s"),
        (_sum(setup, first), "setup_s + first_step_s", wall, "wall_s"),
        (total - imp if total is not None and imp is not None else None, "to_first_step_s - import_s", wall, "wall_s"),
    ]
    for part, what, span, name in nested:
        if part is not None and span is not None and part > span * (1 + STARTUP_SLACK_S) + STARTUP_SLACK_S:
            return f"result {what} is {part:.6g} s, more than the {span:.6g} s of {name} that holds it"
    return None


def _sum(*parts: float | None) -> float | None:
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def first_error(exc: ValidationError) -> str:
    """'does not parse: ...' or 'key.path: what was expected' for the first error, in one short line."""
    err = exc.errors(include_url=False)[0]
    if err["type"] == "json_invalid":
        return f"does not parse: {err['msg']}"
    where = ".".join(str(p) for p in err["loc"]) or "(document)"
    return f"{where}: {err['msg']}"[:300]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def check_echo(result: WorkloadResult, params: dict[str, Any]) -> str | None:
    """None when the result is about this cell; otherwise which key differs from the cell's own params."""
    for key in ("framework", "variant"):
        if getattr(result, key) != params.get(key):
            return f"result {key} is {getattr(result, key)!r}, the cell's is {params.get(key)!r}"
    for key in sorted(set(params) | set(result.params)):
        mine, theirs = params.get(key, "(absent)"), result.params.get(key, "(absent)")
        if _canonical(mine) != _canonical(theirs):
            return f"result params.{key} is {theirs!r}, the cell's is {mine!r}"
    return None
