"""Does a cell compute the benchmark's maths? Its two probe losses against the NumPy reference (NumpyLSTM).

Every workload reports the loss of the first batch before any update (loss_initial) and after exactly one SGD
step (loss_after_one_step), from the same seeded weights and data (workloads/harness.py). The reference values
come from a numpy-reference cell of the same parameters in the run when there is one, otherwise from NumpyLSTM
on this host (the two probe losses only), cached per parameters. For GPU cells it is computed at every size (a
hidden-2048 probe costs the host about one float32 training step); for CPU cells only while cheap (at most the
work of the benchmark's hidden-512 step), beyond that the column says n/a.

The tolerance depends on the cell's precision (TOLERANCES, docs/report.md "Equivalence"): the reference is always
float32, and TF32 (10-bit mantissa) and bfloat16 (8-bit) round every product's inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import Any

from orchestrator.report.flops import flops_for_params, training_step_flops
from orchestrator.results import CellRecord, Status
from workloads import harness
from workloads.numpy_reference import NumpyLSTM

# Relative, on each of the two losses. fp32: summation order only. tf32: inputs of every product rounded to 10
# mantissa bits (2^-11 relative), float32 accumulation. bf16: activations and products in 8 mantissa bits (2^-9),
# over 64 recurrent steps; measured on CPU at 4e-5..2e-3 (docs/report.md), so 1e-2 leaves room for hidden 2048.
TOLERANCES = {"fp32": 1e-4, "tf32": 1e-3, "bf16": 1e-2}
TOLERANCE = TOLERANCES["fp32"]
# Parameters the two probe losses depend on (the first batch only: data_batches, iters, warmup do not matter).
KEY_FIELDS = ("hidden", "batch", "seq_len", "vocab", "classes", "lr", "seed")
REFERENCE_FRAMEWORK = "numpy-reference"
DEFAULT_MAX_FLOPS = training_step_flops(128, 64, 512)

_HOST_CACHE: dict[tuple[Any, ...], tuple[float, float]] = {}


@dataclass(frozen=True)
class Reference:
    loss_initial: float
    loss_after_one_step: float
    source: str  # "host" or the cell id it was taken from


@dataclass(frozen=True)
class Equivalence:
    verdict: str  # "ok", "mismatch" or "n/a"
    tolerance: float = TOLERANCE  # of the cell's precision
    rel_dev: float | None = None  # the larger relative deviation of the two losses
    delta_ratio: float | None = None  # (our one-step loss change) / (the reference's): 1.0 when the update matches
    why: str | None = None  # for n/a: why not checked
    reference: Reference | None = None
    param_count: int | None = None
    param_count_expected: int | None = None

    @property
    def symbol(self) -> str:
        return {"ok": "✓", "mismatch": "✗"}.get(self.verdict, "n/a")

    @property
    def params_ok(self) -> bool | None:
        if self.param_count is None or self.param_count_expected is None:
            return None
        return self.param_count == self.param_count_expected

    def as_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "verdict": self.verdict,
            "tolerance": self.tolerance,
            "rel_dev": self.rel_dev,
            "delta_ratio": self.delta_ratio,
            "why": self.why,
            "reference_loss_initial": ref.loss_initial if ref else None,
            "reference_loss_after_one_step": ref.loss_after_one_step if ref else None,
            "reference_source": ref.source if ref else None,
            "param_count": self.param_count,
            "param_count_expected": self.param_count_expected,
            "params_ok": self.params_ok,
        }


def params_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(k) for k in KEY_FIELDS)


def reference_losses(params: dict[str, Any]) -> tuple[float, float]:
    """NumpyLSTM's loss before and after one SGD step on the first seeded batch (cached per parameters)."""
    key = params_key(params)
    if key not in _HOST_CACHE:
        known = {f.name for f in fields(harness.Params)}
        p = harness.Params.from_dict({k: v for k, v in params.items() if k in known})
        tokens, labels = harness.make_batches(p)[0]
        model = NumpyLSTM(harness.make_weights(p), p.lr)
        before = model.step(tokens, labels)
        after = model.forward(tokens, labels)[0]
        _HOST_CACHE[key] = (before, after)
    return _HOST_CACHE[key]


class Oracle:
    """Reference losses for the cells of one run."""

    def __init__(self, records: Iterable[CellRecord], max_flops: int = DEFAULT_MAX_FLOPS) -> None:
        self.max_flops = max_flops
        self.in_run: dict[tuple[Any, ...], Reference] = {}
        for rec in records:
            w, params = rec.workload, rec.cell_params
            if rec.framework == REFERENCE_FRAMEWORK and w and params and _finite(w.loss_initial, w.loss_after_one_step):
                self.in_run.setdefault(
                    params_key(params), Reference(w.loss_initial, w.loss_after_one_step, rec.cell_id)  # type: ignore[arg-type]
                )

    def reference(self, params: dict[str, Any]) -> Reference | str:
        """The reference losses, or why there are none."""
        found = self.in_run.get(params_key(params))
        if found is not None:
            return found
        if any(params.get(k) is None for k in KEY_FIELDS):
            return "the cell's params lack " + ", ".join(k for k in KEY_FIELDS if params.get(k) is None)
        if params.get("device") != "gpu" and flops_for_params(params) > self.max_flops:
            return (f"too large to compute on the host (hidden {params['hidden']}); "
                    "add numpy-reference at this size to the run to check it")
        before, after = reference_losses(params)
        return Reference(before, after, "host")

    def check(self, records: list[CellRecord]) -> Equivalence:
        """One verdict for the repeats of a cell: the worst deviation among those that reported their losses."""
        probed = [r for r in records if r.workload and r.cell_params
                  and _finite(r.workload.loss_initial, r.workload.loss_after_one_step)]
        counts = next(((r.workload.param_count, r.workload.param_count_expected)
                       for r in records if r.workload), (None, None))
        if not probed:
            failed = next((r for r in records if r.status is not Status.OK), None)
            why = f"no probe losses: {failed.status.value} before the probe" if failed else "no probe losses"
            return Equivalence("n/a", tolerance_for(records[0].precision), why=why, param_count=counts[0],
                               param_count_expected=counts[1])
        params = probed[0].cell_params or {}  # the cell's own, never the echo
        tolerance = tolerance_for(params.get("precision") or probed[0].precision)
        ref = self.reference(params)
        if isinstance(ref, str):
            return Equivalence("n/a", tolerance, why=ref, param_count=counts[0], param_count_expected=counts[1])
        dev, ratio = 0.0, None
        for rec in probed:
            w = rec.workload
            assert w is not None and w.loss_initial is not None and w.loss_after_one_step is not None
            ours = (float(w.loss_initial), float(w.loss_after_one_step))
            dev = max(dev, _rel(ours[0], ref.loss_initial), _rel(ours[1], ref.loss_after_one_step))
            ref_delta = ref.loss_after_one_step - ref.loss_initial
            if ref_delta != 0 and ratio is None:
                ratio = (ours[1] - ours[0]) / ref_delta
        verdict = "ok" if dev <= tolerance else "mismatch"
        return Equivalence(verdict, tolerance, dev, ratio, None, ref, counts[0], counts[1])


def tolerance_for(precision: str | None) -> float:
    return TOLERANCES.get(precision or "fp32", TOLERANCE)


def _rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / abs(ref) if ref != 0 else abs(ours - ref)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)
