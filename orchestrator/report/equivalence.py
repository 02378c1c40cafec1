"""Does a cell compute the benchmark's maths? Its two probe losses and its first SGD update against the NumPy
reference (NumpyLSTM).

Every workload reports the loss of the first batch before any update (loss_initial) and after exactly one SGD
step (loss_after_one_step), from the same seeded weights and data (workloads/harness.py), and between the two the
fingerprint of that one update, per parameter tensor (`update`: norm, sum and a fixed random projection of each
tensor's change, harness.update_fingerprint). At the benchmark's lr (0.001) the one-step loss change is a
second-order signal: a tensor left un-updated moves the loss by well under the loss tolerance, so the verdict
also compares each tensor's change with the reference's, relative to the change's own norm.

The reference comes from a numpy-reference cell of the same parameters in the run when there is one (with its
update fingerprint), otherwise from NumpyLSTM on this host, cached per parameters. For GPU cells it is computed at
every size (a hidden-2048 probe costs the host about one float32 training step); for CPU cells only while cheap
(at most the work of the benchmark's hidden-512 step), beyond that the column says n/a.

The tolerances depend on the cell's precision (TOLERANCES, UPDATE_TOLERANCES, docs/report.md "Equivalence"): the
reference is always float32, and TF32 (10-bit mantissa) and bfloat16 (8-bit) round every product's inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from orchestrator.report.flops import flops_for_params, training_step_flops
from orchestrator.results import CellRecord, Status
from orchestrator.workload_result import TensorUpdate, UpdateFingerprint
from workloads import harness
from workloads.numpy_reference import NumpyLSTM

# Relative, on each of the two losses. fp32: summation order only. tf32: inputs of every product rounded to 10
# mantissa bits (2^-11 relative), float32 accumulation. bf16: activations and products in 8 mantissa bits (2^-9),
# over 64 recurrent steps; measured on CPU at 4e-5..2e-3 (docs/report.md), so 1e-2 leaves room for hidden 2048.
TOLERANCES = {"fp32": 1e-4, "tf32": 1e-3, "bf16": 1e-2}
TOLERANCE = TOLERANCES["fp32"]
# Relative to the norm of the reference's change of the tensor, on each of that change's norm and its projection
# (and, for the embedding, the change of the rows not looked up, which is zero). Measured fp32 (torch CPU against
# NumpyLSTM, hidden 16 and 128, lr 0.001 and 0.5): at most 1.1e-5; the margin covers other reduction orders and the
# float32 rounding of updated weights whose change is a few ulps at lr 0.001 (docs/report.md). tf32 and bf16 follow
# the loss tolerances' ratio to their mantissas. A tensor left un-updated deviates by 1, an update scaled by s by
# |s - 1|.
UPDATE_TOLERANCES = {"fp32": 1e-3, "tf32": 1e-2, "bf16": 1e-1}
# Parameters the two probe losses depend on (the first batch only: data_batches, iters, warmup do not matter).
KEY_FIELDS = ("hidden", "batch", "seq_len", "vocab", "classes", "lr", "seed")
REFERENCE_FRAMEWORK = "numpy-reference"
DEFAULT_MAX_FLOPS = training_step_flops(128, 64, 512)

_HOST_CACHE: dict[tuple[Any, ...], tuple[float, float, UpdateFingerprint]] = {}
_ROUNDING_CACHE: dict[tuple[Any, ...], dict[str, tuple[float, float]]] = {}


@dataclass(frozen=True)
class Reference:
    loss_initial: float
    loss_after_one_step: float
    source: str  # "host" or the cell id it was taken from
    update: UpdateFingerprint | None = None


@dataclass(frozen=True)
class Equivalence:
    verdict: str  # "ok", "mismatch" or "n/a"
    tolerance: float = TOLERANCE  # of the cell's precision
    rel_dev: float | None = None  # the larger relative deviation of the two losses
    delta_ratio: float | None = None  # (our one-step loss change) / (the reference's): 1.0 when the update matches
    why: str | None = None  # for n/a: why not checked; for a mismatch: what differs
    update_tolerance: float = UPDATE_TOLERANCES["fp32"]
    update_dev: dict[str, float] | None = None  # per parameter tensor: its update's deviation (UPDATE_TOLERANCES)
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

    @property
    def mismatched(self) -> list[str]:
        """The parameter tensors whose update is not the reference's."""
        return [k for k, v in (self.update_dev or {}).items() if not v <= self.update_tolerance]

    def as_dict(self) -> dict[str, Any]:
        ref = self.reference
        return {
            "verdict": self.verdict,
            "tolerance": self.tolerance,
            "rel_dev": self.rel_dev,
            "delta_ratio": self.delta_ratio,
            "why": self.why,
            "update_tolerance": self.update_tolerance,
            "update_dev": self.update_dev,
            "mismatched_parameters": self.mismatched,
            "reference_loss_initial": ref.loss_initial if ref else None,
            "reference_loss_after_one_step": ref.loss_after_one_step if ref else None,
            "reference_source": ref.source if ref else None,
            "param_count": self.param_count,
            "param_count_expected": self.param_count_expected,
            "params_ok": self.params_ok,
        }


def params_key(params: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(params.get(k) for k in KEY_FIELDS)


def reference_losses(params: dict[str, Any]) -> tuple[float, float, UpdateFingerprint]:
    """NumpyLSTM's loss before and after one SGD step on the first seeded batch, and that step's update fingerprint
    (cached per parameters)."""
    key = params_key(params)
    if key not in _HOST_CACHE:
        p = _params(params)
        tokens, labels = harness.make_batches(p)[0]
        initial = harness.make_weights(p)
        model = NumpyLSTM(initial, p.lr)
        before = model.step(tokens, labels)
        update = UpdateFingerprint.model_validate(
            harness.update_fingerprint(initial, harness.Weights(**model.w), tokens))
        after = model.forward(tokens, labels)[0]
        _HOST_CACHE[key] = (before, after, update)
    return _HOST_CACHE[key]


def update_deviations(ours: UpdateFingerprint, ref: UpdateFingerprint,
                      rounding: dict[str, tuple[float, float]] | None = None) -> dict[str, float]:
    """Per parameter tensor: the largest deviation of our change from the reference's beyond what float32 rounding
    of the updated weights explains (`rounding`: harness.update_rounding), relative to the norm of the reference's
    change (its norm, its projection and, for the embedding, the rows not looked up, which plain SGD leaves exact)."""
    out = {}
    for name in UpdateFingerprint.model_fields:
        a: TensorUpdate = getattr(ours, name)
        b: TensorUpdate = getattr(ref, name)
        l2_slack, proj_slack = (rounding or {}).get(name, (0.0, 0.0))
        diffs = [max(0.0, abs(a.delta_l2 - b.delta_l2) - l2_slack),
                 max(0.0, abs(a.delta_proj - b.delta_proj) - proj_slack)]
        if b.delta_l2_rows_not_looked_up is not None:
            # None on our side where the reference has it: a result that does not say cannot pass.
            ours_rows = a.delta_l2_rows_not_looked_up
            diffs.append(math.inf if ours_rows is None else abs(ours_rows - b.delta_l2_rows_not_looked_up))
        scale = b.delta_l2
        out[name] = max(diffs) / scale if scale > 0 else (0.0 if max(diffs) == 0 else math.inf)
    return out


def update_rounding(params: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """harness.update_rounding for a cell's first batch and initial weights (cached per parameters)."""
    key = params_key(params)
    if key not in _ROUNDING_CACHE:
        p = _params(params)
        _ROUNDING_CACHE[key] = harness.update_rounding(harness.make_weights(p), harness.make_batches(p)[0][0])
    return _ROUNDING_CACHE[key]


def _params(params: dict[str, Any]) -> harness.Params:
    known = {f.name for f in fields(harness.Params)}
    return harness.Params.from_dict({k: v for k, v in params.items() if k in known})


class Oracle:
    """Reference losses for the cells of one run."""

    def __init__(self, records: Iterable[CellRecord], max_flops: int = DEFAULT_MAX_FLOPS) -> None:
        self.max_flops = max_flops
        self.in_run: dict[tuple[Any, ...], Reference] = {}
        for rec in records:
            w, params = rec.workload, rec.cell_params
            if (rec.framework == REFERENCE_FRAMEWORK and w and params and w.update is not None
                    and _finite(w.loss_initial, w.loss_after_one_step)):
                self.in_run.setdefault(
                    params_key(params),
                    Reference(w.loss_initial, w.loss_after_one_step, rec.cell_id, w.update),  # type: ignore[arg-type]
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
        before, after, update = reference_losses(params)
        return Reference(before, after, "host", update)

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
                               param_count_expected=counts[1],
                               update_tolerance=update_tolerance_for(records[0].precision))
        params = probed[0].cell_params or {}  # the cell's own, never the echo
        precision = params.get("precision") or probed[0].precision
        tolerance, update_tolerance = tolerance_for(precision), update_tolerance_for(precision)
        ref = self.reference(params)
        if isinstance(ref, str):
            return Equivalence("n/a", tolerance, why=ref, param_count=counts[0], param_count_expected=counts[1],
                               update_tolerance=update_tolerance)
        dev, ratio = 0.0, None
        update_dev: dict[str, float] | None = {}
        for rec in probed:
            w = rec.workload
            assert w is not None and w.loss_initial is not None and w.loss_after_one_step is not None
            ours = (float(w.loss_initial), float(w.loss_after_one_step))
            dev = max(dev, _rel(ours[0], ref.loss_initial), _rel(ours[1], ref.loss_after_one_step))
            ref_delta = ref.loss_after_one_step - ref.loss_initial
            if ref_delta != 0 and ratio is None:
                ratio = (ours[1] - ours[0]) / ref_delta
            if w.update is None or ref.update is None or update_dev is None:
                update_dev = None
            else:
                for name, d in update_deviations(w.update, ref.update, update_rounding(params)).items():
                    update_dev[name] = max(update_dev.get(name, 0.0), d)
        result = Equivalence("ok", tolerance, dev, ratio, reference=ref, param_count=counts[0],
                             param_count_expected=counts[1], update_tolerance=update_tolerance, update_dev=update_dev)
        problems = []
        if dev > tolerance:
            problems.append(f"losses differ by {dev:.2e} (relative; tolerance {tolerance:g})")
        if result.mismatched:
            problems.append("update of " + ", ".join(
                f"{k} off by {update_dev[k]:.2e}" for k in result.mismatched  # type: ignore[index]
            ) + f" (relative to the reference's change; tolerance {update_tolerance:g})")
        if problems:
            return replace(result, verdict="mismatch", why="; ".join(problems))
        if update_dev is None:
            return replace(result, verdict="n/a", why="the losses match, but the workload reports no update "
                                                      "fingerprint (canonical_weights) to check its SGD step by")
        return result


def tolerance_for(precision: str | None) -> float:
    return TOLERANCES.get(precision or "fp32", TOLERANCE)


def update_tolerance_for(precision: str | None) -> float:
    return UPDATE_TOLERANCES.get(precision or "fp32", UPDATE_TOLERANCES["fp32"])


def _rel(ours: float, ref: float) -> float:
    return abs(ours - ref) / abs(ref) if ref != 0 else abs(ours - ref)


def _finite(*values: Any) -> bool:
    return all(isinstance(v, int | float) and math.isfinite(v) for v in values)
