"""The shared side of the container contract (docs/contract.md), used by every framework's workload.

A framework module subclasses `Framework` (model, step, sync and little else) and ends with
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

SCHEMA_VERSION = 1
RESULT_KIND = "lstm-bench.workload-result"
# Gate order of the LSTM weights handed to every framework: input, forget, cell candidate, output
# (PyTorch, Keras, TensorFlow and MXNet all use this order, so no framework has to permute blocks).
GATE_ORDER = ("i", "f", "g", "o")
# Workload-side statuses; the orchestrator adds the ones only it can see (timeout, host-oom, ...).
WORKLOAD_STATUSES = ("ok", "oom", "recursion", "crashed", "unsupported")


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


class Unsupported(Exception):
    """Raised by a framework when this cell cannot run here (e.g. no kernel for this GPU); status 'unsupported'."""


class Framework:
    """What a framework file implements. Keep subclasses to model, step and sync."""

    name = "unknown"
    # Exception types that mean "the device ran out of memory"; matched with isinstance.
    oom_types: tuple[type[BaseException], ...] = ()
    # Substrings that mark an OOM in exceptions whose type is too generic to match on (e.g. MXNetError).
    oom_markers: tuple[str, ...] = ()

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

    def build(self, weights: Weights) -> None:
        raise NotImplementedError

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        """Move one batch to the device; called before timing starts."""
        return tokens, labels

    def step(self, batch: Any) -> Any:
        """One forward, one backward and one SGD update. Returns the pre-update loss (may stay on device)."""
        raise NotImplementedError

    def sync(self) -> None:
        """Block until all queued device work is done."""

    def loss_value(self, loss: Any) -> float:
        return float(loss)

    def param_count(self) -> int:
        raise NotImplementedError

    def peak_memory_bytes(self) -> int | None:
        return None

    def is_oom(self, exc: BaseException) -> bool:
        if self.oom_types and isinstance(exc, self.oom_types):
            return True
        text = f"{type(exc).__name__}: {exc}"
        return any(marker in text for marker in self.oom_markers)


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
    param_count: int | None = None
    peak_memory_bytes: int | None = None
    setup_s: float | None = None
    timed_window: list[float] | None = None  # wall clock (time.time()) at the timed loop's start and end


def measure(fw: Framework, p: Params, m: Measurement) -> None:
    """Build, probe equivalence, warm up and time. Fills `m` as it goes so a failure keeps what was learnt."""
    t0 = time.perf_counter()
    fw.check_device()
    fw.build(make_weights(p))
    m.param_count = fw.param_count()
    batches = [fw.prepare(t, y) for t, y in make_batches(p)]
    fw.sync()
    m.setup_s = time.perf_counter() - t0

    # Two untimed probe steps on the first batch: the loss before any update and after exactly one,
    # which every framework must reproduce (the equivalence check).
    m.loss_initial = fw.loss_value(fw.step(batches[0]))
    m.loss_after_one_step = fw.loss_value(fw.step(batches[0]))
    for i in range(p.warmup):
        fw.step(batches[i % len(batches)])
    fw.sync()

    loss = None
    window_start = time.time()  # wall clock, shared with the host: its machine sampler keeps this window
    for i in range(p.iters):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        loss = fw.step(batch)
        fw.sync()
        m.times_ms.append((time.perf_counter() - start) * 1000.0)
    m.timed_window = [window_start, time.time()]
    if loss is not None:
        m.loss_final = fw.loss_value(loss)
    m.peak_memory_bytes = fw.peak_memory_bytes()


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
        "peak_memory_bytes": m.peak_memory_bytes,
        "setup_s": m.setup_s,
        "timed_window": m.timed_window,
        "wall_s": wall_s,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="Run one LSTM benchmark cell (see docs/contract.md).")
    ap.add_argument("--params", required=True, help="path of the cell's params.json")
    ap.add_argument("--out", required=True, help="where to write the result JSON")
    return ap.parse_args(argv)


def run(framework_cls: type[Framework], argv: list[str] | None = None) -> int:
    """Entry point of every workload. Exit 0 whenever the result JSON was written, whatever it says."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        with open(args.params) as f:
            p = Params.from_dict(json.load(f))
    except Exception as exc:  # a bad params file is the orchestrator's bug; say so and fail loudly
        print(f"lstm-bench harness: cannot read params {args.params}: {exc}", file=sys.stderr)
        return 3

    fw: Framework | None = None
    m = Measurement()
    status, message = "ok", None
    try:
        fw = framework_cls(p)
        measure(fw, p, m)
        if m.loss_final is not None and not math.isfinite(m.loss_final):
            status, message = "crashed", f"loss is not finite after training: {m.loss_final}"
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
