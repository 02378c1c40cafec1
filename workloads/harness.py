"""The shared side of the container contract (docs/contract.md), used by every framework's workload.

A framework module subclasses `Framework` (the methods below; docs/adding-a-framework.md says what each must do,
`python -m orchestrator new NAME` writes them as stubs) and ends with
`if __name__ == "__main__": raise SystemExit(run(MyFramework))`. Everything that must be identical across
frameworks lives here: argument parsing, seeded data and initial weights, the timing loop with device
synchronisation, statistics, failure classification and the atomic JSON writer.

This file must import with the standard library and NumPy alone: it is copied into every image.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

# 2: adds `update` (the fingerprint of the probe step's change of every parameter tensor).
# 3: adds the start-up figures `import_s`, `build_s`, `first_step_s`, `to_first_step_s` (compile and first-step cost).
SCHEMA_VERSION = 3
RESULT_KIND = "lstm-bench.workload-result"
# Gate order of the LSTM weights handed to every framework: input, forget, cell candidate, output
# (PyTorch, Keras, TensorFlow and MXNet all use this order, so no framework has to permute blocks).
GATE_ORDER = ("i", "f", "g", "o")
# Workload-side statuses; the orchestrator adds the ones only it can see (timeout, host-oom, ...).
WORKLOAD_STATUSES = ("ok", "oom", "recursion", "crashed", "unsupported")
# Arithmetic a cell asks for (docs/matrix.md, "precision"): true IEEE float32 with TF32 off; float32 storage with
# TF32 tensor-core matmuls (Ampere and later); bfloat16 compute with float32 master weights (mixed precision).
PRECISIONS = ("fp32", "tf32", "bf16")
# Relative change of a batch's loss between its first and last timed visit below which the trend is "flat":
# the lr is too small (or the run too short) to tell a learning model from a stuck one at this precision.
LOSS_TREND_NOISE = {"fp32": 1e-5, "tf32": 1e-4, "bf16": 1e-2}


@dataclass(frozen=True)
class Params:
    """One cell's parameters, as the orchestrator writes them to params.json."""

    framework: str
    hidden: int
    variant: str | None = None
    impl: str = "default"
    batch: int = 128
    seq_len: int = 64
    vocab: int = 10000
    classes: int = 5
    lr: float = 0.001
    warmup: int = 2
    iters: int = 50
    seed: int = 0
    device: str = "gpu"
    data_batches: int = 4
    precision: str = "fp32"

    @property
    def embed(self) -> int:
        return self.hidden  # the original benchmark: embedding dim = hidden size

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Params:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown parameter(s) in params: {', '.join(unknown)}")
        return cls(**raw)


# A process older than this at harness entry is no cell's (the host's timeout ends cells long before).
MAX_PROCESS_AGE_S = 1e6


def process_age_s(stat_path: str = "/proc/self/stat") -> float | None:
    """Seconds since this process started, from the kernel's record of its start (Linux: field 22 of
    /proc/self/stat, clock ticks since boot, against CLOCK_BOOTTIME, the clock it is counted on). The process
    starts at its fork, before the interpreter and every import: a framework imported at a workload module's top
    is counted. Whole ticks (1/SC_CLK_TCK, 10 ms on Linux), rounded down, so the age is up to one tick long.
    None where there is no such record (not Linux, no /proc): never an estimate."""
    try:
        now = time.clock_gettime(time.CLOCK_BOOTTIME)
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        with open(stat_path, "rb") as f:
            raw = f.read(4096)
        # Field 2 (the command name, in parentheses) may hold spaces and ')': count fields after its last ')'.
        start_ticks = int(raw[raw.rindex(b")") + 1:].split()[19])  # field 3 is index 0 there: field 22 is 19
    except (AttributeError, OSError, ValueError, IndexError):
        return None
    age = now - start_ticks / ticks_per_s
    # Another clock base (a time namespace that offsets one and not the other): no figure rather than a wrong one.
    return age if 0.0 <= age < MAX_PROCESS_AGE_S else None


def expected_param_count(p: Params) -> int:
    """Embedding + one LSTM layer with a single bias vector + Dense(classes)."""
    e, h = p.embed, p.hidden
    return p.vocab * e + 4 * h * (e + h) + 4 * h + h * p.classes + p.classes


@dataclass(frozen=True)
class Weights:
    """Initial parameters in the canonical layout (x @ kernel convention, gates in GATE_ORDER)."""

    embedding: np.ndarray  # [vocab, embed]
    kernel: np.ndarray  # [embed, 4*hidden]
    recurrent_kernel: np.ndarray  # [hidden, 4*hidden]
    bias: np.ndarray  # [4*hidden]
    dense_kernel: np.ndarray  # [hidden, classes]
    dense_bias: np.ndarray  # [classes]

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# The fingerprint of one SGD update (update_fingerprint): the statistics of each tensor's change, in float64.
# `delta_proj` projects the change D [rows, cols] on a fixed pseudo-random rank-one direction a b^T (a^T D b, entries
# of a and b of unit variance, seeded per tensor from FINGERPRINT_SEED by NumPy's PCG64 bit generator, whose raw
# stream is stable across NumPy versions): for any error E its expected square is |E|^2, as for a dense random
# direction, so it sees a change that went to the wrong elements (swapped gates, wrong rows), which a norm cannot;
# and it costs one matrix-vector product instead of a random number per element.
FINGERPRINT_SEED = 2016
FINGERPRINT_CHUNK = 1 << 20  # elements at a time: bounded memory for a hidden-2048 embedding (20M elements)


def update_fingerprint(before: Weights, after: Weights, tokens: np.ndarray) -> dict[str, dict[str, float | None]]:
    """Per parameter tensor (canonical layout), in float64: `delta_l2`, `delta_sum`, `delta_proj` of the change
    after - before. The embedding also has `delta_l2_rows_not_looked_up`:
    the change of the rows that `tokens` did not look up (zero for plain SGD, sparse or dense)."""
    out: dict[str, dict[str, float | None]] = {}
    for index, (name, w0) in enumerate(before.as_dict().items()):
        w1 = np.asarray(getattr(after, name))
        if w1.shape != w0.shape:
            raise ValueError(f"canonical_weights(): {name} has shape {w1.shape}, the canonical layout's is {w0.shape}")
        # A vector is one column: its direction is a alone (a random b of one entry would scale the whole check).
        old, new = (w.reshape(w.shape[0], -1) for w in (w0, w1))
        unused = np.ones(old.shape[0], dtype=bool)  # the embedding's rows not looked up
        if name == "embedding":
            unused[np.unique(tokens)] = False
        a = _direction(index, 0, old.shape[0])
        b = _direction(index, 1, old.shape[1]) if w0.ndim > 1 else np.ones(1)
        sq = unused_sq = total = proj = 0.0
        step = max(1, FINGERPRINT_CHUNK // old.shape[1])
        for start in range(0, old.shape[0], step):
            rows = slice(start, start + step)
            d = np.subtract(new[rows], old[rows], dtype=np.float64)  # exact: both float32 (or narrower)
            flat = d.reshape(-1)
            sq += float(flat @ flat)
            total += float(flat.sum())
            proj += float(a[rows] @ (d @ b))
            if name == "embedding":
                gone = d[unused[rows]].reshape(-1)
                unused_sq += float(gone @ gone)
        out[name] = {"delta_l2": math.sqrt(sq), "delta_sum": total, "delta_proj": proj,
                     "delta_l2_rows_not_looked_up": math.sqrt(unused_sq) if name == "embedding" else None}
    return out


def update_rounding(before: Weights, tokens: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per parameter tensor, how far two correct float32 SGD steps may differ in (`delta_l2`, `delta_proj`) through
    rounding alone. Each updated weight is rounded to float32 once per application of its update, by at most one
    float32 spacing near its value (doubled: the new value may cross into the next binade); an embedding row is
    applied once per occurrence in `tokens` by frameworks that scatter-add each looked-up row, once in all by those
    that sum first. At lr 0.001 a weight moves by only tens of spacings, so this is not negligible next to the
    change itself (measured: 2-4e-3 of it in delta_proj at hidden 32-64, vocab 1000)."""
    out: dict[str, tuple[float, float]] = {}
    for index, (name, w0) in enumerate(before.as_dict().items()):
        old = np.asarray(w0).reshape(w0.shape[0], -1)
        applied = (np.bincount(tokens.reshape(-1), minlength=old.shape[0])[: old.shape[0]] if name == "embedding"
                   else np.ones(old.shape[0], dtype=np.int64))
        a = np.abs(_direction(index, 0, old.shape[0]))
        b = np.abs(_direction(index, 1, old.shape[1])) if w0.ndim > 1 else np.ones(1)
        sq = proj = 0.0
        step = max(1, FINGERPRINT_CHUNK // old.shape[1])
        for start in range(0, old.shape[0], step):
            rows = slice(start, start + step)
            if not applied[rows].any():
                continue
            s = np.spacing(np.abs(old[rows])).astype(np.float64) * (2.0 * applied[rows, None])
            sq += float((s * s).sum())
            proj += float(a[rows] @ (s @ b))  # |aᵀEb| <= |a|ᵀ S |b| when every |E_ij| <= S_ij
        out[name] = (math.sqrt(sq), proj)
    return out


def _direction(tensor: int, axis: int, size: int) -> np.ndarray:
    """Entries uniform in [-sqrt(3), sqrt(3)) (unit variance), from PCG64's raw stream (stable across versions)."""
    raw = np.random.PCG64([FINGERPRINT_SEED, tensor, axis]).random_raw(size)
    unit = (raw >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))
    return (unit * 2.0 - 1.0) * math.sqrt(3.0)


def make_weights(p: Params) -> Weights:
    """Seeded initial weights, identical in every framework (float32)."""
    rng = np.random.default_rng(p.seed)
    h, e = p.hidden, p.embed
    s = 1.0 / math.sqrt(h)

    def uniform(shape: tuple[int, ...], scale: float) -> np.ndarray:
        return rng.uniform(-scale, scale, size=shape).astype(np.float32)

    return Weights(
        embedding=uniform((p.vocab, e), 0.1),
        kernel=uniform((e, 4 * h), s),
        recurrent_kernel=uniform((h, 4 * h), s),
        bias=uniform((4 * h,), s),
        dense_kernel=uniform((h, p.classes), s),
        dense_bias=uniform((p.classes,), s),
    )


def make_batches(p: Params) -> list[tuple[np.ndarray, np.ndarray]]:
    """A small pool of seeded batches (token ids int32 [batch, seq_len], labels int32 [batch])."""
    rng = np.random.default_rng(p.seed + 1)
    return [
        (
            rng.integers(0, p.vocab, size=(p.batch, p.seq_len), dtype=np.int32),
            rng.integers(0, p.classes, size=(p.batch,), dtype=np.int32),
        )
        for _ in range(max(1, p.data_batches))
    ]


# Allocation failures of the CUDA libraries, whatever framework relays them (usually as a generic RuntimeError or
# InternalError): cuDNN's and cuBLAS's ALLOC_FAILED, cuDNN 9's sub-codes, the driver's and the runtime's codes.
LIBRARY_OOM_MARKERS = (
    "CUDNN_STATUS_ALLOC_FAILED",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED",
    "CUDNN_STATUS_INTERNAL_ERROR_HOST_ALLOCATION_FAILED",
    "CUDA_ERROR_OUT_OF_MEMORY",
    "cudaErrorMemoryAllocation",
)


class Unsupported(Exception):
    """Raised by a framework when this cell cannot run here (e.g. no kernel for this GPU); status 'unsupported'."""


class NotImplementedYet(Unsupported):
    """A method of a new framework (python -m orchestrator new NAME) still to be written: status 'unsupported'.

    Not NotImplementedError: a framework's own NotImplementedError (an op missing on a device) is a real crash.
    """


def tf32_override_env(precision: str) -> dict[str, str | None]:
    """NVIDIA_TF32_OVERRIDE for a precision: "0" forbids TF32 in cuBLAS and cuDNN (whatever the framework asks),
    absent lets the framework decide. Read by the CUDA libraries when they initialise: set it before any GPU work.
    Returns the variable as now set, for the read-back."""
    if precision == "tf32":
        os.environ.pop("NVIDIA_TF32_OVERRIDE", None)
    else:
        os.environ["NVIDIA_TF32_OVERRIDE"] = "0"
    return {"NVIDIA_TF32_OVERRIDE": os.environ.get("NVIDIA_TF32_OVERRIDE")}


def mode_from(tf32: bool, bf16: bool) -> str:
    """The precision a set of read-back switches amounts to (bf16 compute wins over the float32 matmul mode)."""
    return "bf16" if bf16 else ("tf32" if tf32 else "fp32")


class Framework:
    """What a framework file implements: build, param_count, step and check_device (the default refuses a GPU), and
    where the framework needs them prepare, sync, loss_value, versions, device_name, peak_memory_bytes and the OOM
    recognisers. Nothing else: the harness owns data, weights, timing and the result."""

    name = "unknown"
    # Exception types that mean "the device ran out of memory"; matched with isinstance.
    oom_types: tuple[type[BaseException], ...] = ()
    # Substrings that mark an OOM in exceptions whose type is too generic to match on (e.g. MXNetError).
    oom_markers: tuple[str, ...] = ()
    # How the embedding table is updated: "sparse" (only the looked-up rows) or "dense" (a [vocab, E] gradient).
    # Plain SGD makes both the same maths; the cost differs (docs/contract.md, "embedding_update").
    embedding_update = "dense"

    def __init__(self, params: Params) -> None:
        self.params = params
        self.impl_used = params.impl

    def versions(self) -> dict[str, str | None]:
        """Framework version and, where known, CUDA and cuDNN versions."""
        return {}

    def device_name(self) -> str | None:
        return None

    def check_device(self) -> None:
        """Raise Unsupported when params.device cannot be used here. Default: CPU only."""
        if self.params.device != "cpu":
            raise Unsupported(f"{self.name} workload has no {self.params.device} support")

    def set_precision(self) -> None:
        """Set every switch that decides the arithmetic of params.precision, explicitly, before build().

        Raise Unsupported when the framework cannot run that precision here. Default: float32 only (a framework
        with no TF32 or bfloat16 path, e.g. NumPy).
        """
        if self.params.precision != "fp32":
            raise Unsupported(f"{self.name} workload computes in float32 only; no {self.params.precision} path")

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        """What the framework says it is running, read from the framework (not from params) after the timed steps:
        (the mode it amounts to, one of PRECISIONS; the raw switches and dtypes read)."""
        return "fp32", {}

    def build(self, weights: Weights) -> None:
        raise NotImplementedYet(f"{self.name}: build() not implemented yet")

    def canonical_weights(self) -> Weights | None:
        """The current parameters as float NumPy arrays in the canonical layout of `Weights` (build()'s layout
        conversion, inverted; float32 master weights where the framework keeps them). Called once, untimed,
        after the first probe step: the harness fingerprints the update (update_fingerprint) and the host checks
        it against the reference, tensor by tensor. None: not reported (the equivalence check says n/a)."""
        return None

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        """Move one batch to the device; called before timing starts."""
        return tokens, labels

    def step(self, batch: Any) -> Any:
        """One forward, one backward and one SGD update. Returns the pre-update loss (may stay on device)."""
        raise NotImplementedYet(f"{self.name}: step() not implemented yet")

    def sync(self) -> None:
        """Block until all queued device work is done (the last step's update included)."""

    def loss_value(self, loss: Any) -> float:
        return float(loss)

    def param_count(self) -> int:
        raise NotImplementedYet(f"{self.name}: param_count() not implemented yet")

    def peak_memory_bytes(self) -> int | None:
        return None

    def is_oom(self, exc: BaseException) -> bool:
        if self.oom_types and isinstance(exc, self.oom_types):
            return True
        text = f"{type(exc).__name__}: {exc}"
        return any(marker in text for marker in (*self.oom_markers, *LIBRARY_OOM_MARKERS))


def summarize(times_ms: list[float]) -> dict[str, float]:
    a = np.asarray(times_ms, dtype=np.float64)
    return {
        "mean": float(a.mean()),
        "median": float(np.median(a)),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min": float(a.min()),
        "max": float(a.max()),
        "p95": float(np.percentile(a, 95)),
    }


@dataclass
class Measurement:
    """Everything the timing loop learns; becomes part of the result JSON."""

    loss_initial: float | None = None
    loss_after_one_step: float | None = None
    loss_final: float | None = None
    times_ms: list[float] = field(default_factory=list)
    losses: list[float | None] = field(default_factory=list)
    timed_wall_ms: float | None = None
    throughput_ms: float | None = None
    precision_effective: str | None = None
    precision_switches: dict[str, Any] = field(default_factory=dict)
    param_count: int | None = None
    peak_memory_bytes: int | None = None
    setup_s: float | None = None
    # Start-up, apart from the timed steady state (docs/report.md "Start-up and first step"):
    import_s: float | None = None  # process start -> harness entry: interpreter, framework and workload imports
    build_s: float | None = None  # fw.build() alone (where Theano and pytensor compile their functions)
    first_step_s: float | None = None  # the first probe step and its loss read (where JIT frameworks compile)
    to_first_step_s: float | None = None  # process start -> the first probe step's loss read
    entered: float | None = None  # perf_counter() at harness entry (run()); not part of the result
    timed_window: list[float] | None = None  # wall clock (time.time()) at the timed loops' start and end
    update: dict[str, dict[str, float | None]] | None = None  # update_fingerprint of the first probe step


def measure(fw: Framework, p: Params, m: Measurement) -> None:
    """Build, probe equivalence, warm up and time. Fills `m` as it goes so a failure keeps what was learnt."""
    t0 = time.perf_counter()
    if p.precision not in PRECISIONS:
        raise Unsupported(f"unknown precision {p.precision!r}; expected one of {', '.join(PRECISIONS)}")
    if p.precision == "tf32" and p.device != "gpu":
        raise Unsupported("TF32 is a mode of NVIDIA tensor cores (Ampere and later); a CPU cell has no TF32")
    # The library-level TF32 switch, before any framework touches cuBLAS/cuDNN; each framework then sets its own.
    tf32_override_env(p.precision)
    fw.check_device()
    fw.set_precision()
    # Kept apart from what build() gets: a framework may adopt those arrays' memory (torch.from_numpy) and update it.
    initial = make_weights(p)
    copies = Weights(**{name: w.copy() for name, w in initial.as_dict().items()})
    built = time.perf_counter()
    fw.build(copies)
    m.build_s = time.perf_counter() - built
    m.param_count = fw.param_count()
    data = make_batches(p)
    batches = [fw.prepare(t, y) for t, y in data]
    fw.sync()
    m.setup_s = time.perf_counter() - t0

    # Two untimed probe steps on the first batch: the loss before any update and after exactly one, and between
    # them the fingerprint of that one update, which every framework must reproduce (the equivalence check).
    # The first call is where a JIT framework traces and compiles (XLA, TorchInductor, tf.function): timed on its own,
    # up to its loss read (which waits for the step), and never among the timed steps.
    first = time.perf_counter()
    m.loss_initial = fw.loss_value(fw.step(batches[0]))
    done = time.perf_counter()
    m.first_step_s = done - first
    if m.import_s is not None and m.entered is not None:
        m.to_first_step_s = m.import_s + (done - m.entered)
    updated = fw.canonical_weights()
    if updated is not None:
        m.update = update_fingerprint(initial, updated, data[0][0])
    m.loss_after_one_step = fw.loss_value(fw.step(batches[0]))
    for i in range(p.warmup):
        fw.step(batches[i % len(batches)])
    fw.sync()

    # Per-step latency: step, sync, read the clock. The losses stay where the framework left them (reading one
    # would add a device-to-host copy to the step) and are read after the loop.
    losses: list[Any] = []
    # Wall clock, shared with the host: its machine sampler summarises this window (both timed loops).
    window_start = time.time()
    loop_start = time.perf_counter()
    for i in range(p.iters):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        loss = fw.step(batch)
        fw.sync()
        m.times_ms.append((time.perf_counter() - start) * 1000.0)
        losses.append(loss)
    m.timed_wall_ms = (time.perf_counter() - loop_start) * 1000.0
    m.losses = [_finite(fw.loss_value(x)) for x in losses]
    if m.losses:
        m.loss_final = fw.loss_value(losses[-1])

    # Steady-state throughput: the same steps queued back to back, as a training loop runs them, then one sync
    # and one read of the last loss, which depends on every queued step. A sync that misses queued work makes
    # the latency loop look faster than this one (validity "throughput_over_latency").
    start = time.perf_counter()
    for i in range(p.iters):
        loss = fw.step(batches[i % len(batches)])
    fw.sync()
    fw.loss_value(loss)
    m.throughput_ms = (time.perf_counter() - start) * 1000.0 / p.iters
    m.timed_window = [window_start, time.time()]
    m.peak_memory_bytes = fw.peak_memory_bytes()
    try:
        mode, switches = fw.precision_readback()
    except Exception as exc:  # the cell is measured: keep it; the host then judges the unknown precision
        mode, switches = "unknown", {"readback_error": f"{type(exc).__name__}: {exc}"[:200]}
    switches.setdefault("NVIDIA_TF32_OVERRIDE", os.environ.get("NVIDIA_TF32_OVERRIDE"))
    m.precision_effective, m.precision_switches = mode, switches


def loss_trend(losses: list[float | None], data_batches: int, precision: str) -> tuple[str, float | None]:
    """Does training lower the loss over the timed steps? Compares each batch's loss at its first and last timed
    visit (batches cycle, so this compares like with like), relative to the loss.

    "decreasing", "increasing", "flat" (the change is below the precision's noise: lr too small to tell),
    "undetermined" (no batch was visited twice) or "not-finite".
    """
    if any(x is None for x in losses):
        return "not-finite", None
    n = max(1, data_batches)
    # Batch b is used at timed steps b, b + n, b + 2n, ...: its first and its last visit.
    visits = [(losses[b], losses[b + n * ((len(losses) - 1 - b) // n)]) for b in range(min(n, len(losses)))]
    twice = [(a, z) for b, (a, z) in enumerate(visits) if len(losses) - 1 - b >= n]
    if not twice:
        return "undetermined", None
    first = sum(float(a) for a, _ in twice)  # type: ignore[arg-type]
    last = sum(float(z) for _, z in twice)  # type: ignore[arg-type]
    rel = (last - first) / abs(first) if first else last - first
    if abs(rel) <= LOSS_TREND_NOISE.get(precision, LOSS_TREND_NOISE["fp32"]):
        return "flat", rel
    return ("decreasing" if rel < 0 else "increasing"), rel


def validity(p: Params, m: Measurement) -> dict[str, Any] | None:
    """The per-cell validity gates (judged by the orchestrator, docs/contract.md "validity")."""
    if not m.times_ms:
        return None
    trend, rel = loss_trend(m.losses, p.data_batches, p.precision)
    latency_mean = sum(m.times_ms) / len(m.times_ms)
    return {
        "loss_trend": trend,
        "loss_trend_rel": rel,
        "times_sum_over_wall": sum(m.times_ms) / m.timed_wall_ms if m.timed_wall_ms else None,
        "throughput_over_latency": m.throughput_ms / latency_mean if m.throughput_ms and latency_mean else None,
    }


def classify(fw: Framework | None, exc: BaseException) -> str:
    if isinstance(exc, Unsupported):
        return "unsupported"
    if isinstance(exc, RecursionError):
        return "recursion"
    if fw is not None and fw.is_oom(exc):
        return "oom"
    return "crashed"


def write_json_atomic(path: str, doc: dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".result-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=1, allow_nan=False, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(x: float | None) -> float | None:
    return x if x is None or math.isfinite(x) else None


def build_document(
    p: Params, fw: Framework | None, m: Measurement, status: str, message: str | None, wall_s: float
) -> dict[str, Any]:
    versions: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__}
    device_name = None
    if fw is not None:
        try:
            versions.update(fw.versions())
            device_name = fw.device_name()
        except Exception as exc:  # version probing must never hide the real outcome
            versions["probe_error"] = repr(exc)
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": RESULT_KIND,
        "status": status,
        "message": message,
        "framework": p.framework,
        "variant": p.variant,
        "impl": fw.impl_used if fw is not None else p.impl,
        "params": asdict(p),
        "versions": versions,
        "device": {"kind": p.device, "name": device_name},
        "param_count": m.param_count,
        "param_count_expected": expected_param_count(p),
        "loss_initial": _finite(m.loss_initial),
        "loss_after_one_step": _finite(m.loss_after_one_step),
        "loss_final": _finite(m.loss_final),
        "times_ms": m.times_ms,
        "stats_ms": summarize(m.times_ms) if m.times_ms else None,
        "timed_wall_ms": m.timed_wall_ms,
        "throughput_ms": m.throughput_ms,
        "losses": m.losses,
        "validity": validity(p, m),
        "precision": p.precision,
        "precision_effective": m.precision_effective,
        "precision_switches": m.precision_switches,
        "embedding_update": fw.embedding_update if fw is not None else None,
        "peak_memory_bytes": m.peak_memory_bytes,
        "setup_s": m.setup_s,
        "import_s": m.import_s,
        "build_s": m.build_s,
        "first_step_s": m.first_step_s,
        "to_first_step_s": m.to_first_step_s,
        "timed_window": m.timed_window,
        "update": m.update,
        "wall_s": wall_s,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Run one LSTM benchmark cell (see docs/contract.md).")
    ap.add_argument("--params", required=True, help="path of the cell's params.json")
    ap.add_argument("--out", required=True, help="where to write the result JSON")
    return ap.parse_args(argv)


def run(framework_cls: type[Framework], argv: list[str] | None = None) -> int:
    """Entry point of every workload. Exit 0 whenever the result JSON was written, whatever it says."""
    # First of all: the workload module's imports (the framework's) have run, nothing of the harness yet.
    imported = process_age_s()
    start = time.perf_counter()
    args = parse_args(argv)
    try:
        with open(args.params) as f:
            p = Params.from_dict(json.load(f))
    except Exception as exc:  # a bad params file is the orchestrator's bug; say so and fail loudly
        print(f"lstm-bench harness: cannot read params {args.params}: {exc}", file=sys.stderr)
        return 3

    fw: Framework | None = None
    m = Measurement(import_s=imported, entered=start)
    status, message = "ok", None
    try:
        fw = framework_cls(p)
        measure(fw, p, m)
        bad = [i for i, x in enumerate(m.losses) if x is None]
        if bad or (m.loss_final is not None and not math.isfinite(m.loss_final)):
            status, message = "crashed", f"loss is not finite after training (timed steps {bad[:5]})"
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        status = classify(fw, exc)
        message = f"{type(exc).__name__}: {exc}"[:4000]
        traceback.print_exc(file=sys.stderr)
    doc = build_document(p, fw, m, status, message, time.perf_counter() - start)
    try:
        write_json_atomic(args.out, doc)
    except Exception as exc:
        print(f"lstm-bench harness: cannot write {args.out}: {exc}", file=sys.stderr)
        return 4
    return 0
