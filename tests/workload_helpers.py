"""Shared helpers for the framework workload tests (test_workloads_a.py, test_workloads_b.py).

Each framework runs in its cached local environment (orchestrator.venvs.ensure_venv, the same one the local
runner uses) as `python -m workloads.<module> --params P --out R`, exactly as a cell would, and its result JSON is
compared with the NumPy reference computed in the test process.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frameworks import Framework, discover
from orchestrator.report.equivalence import TOLERANCES, UPDATE_TOLERANCES, update_deviations
from orchestrator.validity import judge
from orchestrator.venvs import VenvError, ensure_venv, requirements_file
from orchestrator.workload_result import UpdateFingerprint, WorkloadResult, parse_result
from tests.conftest import missing
from workloads import harness
from workloads.numpy_reference import NumpyLSTM

ROOT = Path(__file__).resolve().parent.parent
# Tiny cell; lr 0.5 so that one SGD update moves the loss well beyond float32 noise (the equivalence probe).
TINY: dict[str, Any] = {
    "hidden": 16, "batch": 4, "seq_len": 8, "vocab": 100, "classes": 5,
    "iters": 3, "warmup": 1, "device": "cpu", "lr": 0.5,
}
RESULT_KEYS = (
    "schema_version", "kind", "status", "message", "framework", "variant", "impl", "params", "versions", "device",
    "param_count", "param_count_expected", "loss_initial", "loss_after_one_step", "loss_final", "times_ms",
    "stats_ms", "peak_memory_bytes", "setup_s", "wall_s", "timed_wall_ms", "throughput_ms", "losses", "validity",
    "precision", "precision_effective", "precision_switches", "embedding_update", "update",
    "import_s", "build_s", "first_step_s", "to_first_step_s",
)
REL_TOL = TOLERANCES["fp32"]


def framework(name: str) -> Framework:
    found = discover(ROOT / "images")
    if name not in found:
        pytest.fail(f"no images/{name}/Dockerfile")
    return found[name]


def venv_python(name: str, variant: str | None = None) -> Path:
    """The Python of the framework's cached environment. When it cannot be installed here (a broken pin, an index
    outage) the test fails under CI and skips on a developer's machine, with the installer's reason either way."""
    fw = framework(name)
    try:
        return ensure_venv(fw, variant)
    except (VenvError, subprocess.TimeoutExpired, OSError) as exc:
        missing(f"{fw.row_label(variant)}: cannot install its CPU environment on this machine: {exc}")


def cell_params(name: str, variant: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {"framework": name, **({"variant": variant} if variant else {}), **TINY, **overrides}


def run_cell(
    name: str, tmp_path: Path, variant: str | None = None, **overrides: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One tiny cell in the framework's (variant's) cached environment: (result JSON, the params it ran with)."""
    params = cell_params(name, variant, **overrides)
    return run_workload(venv_python(name, variant), framework(name).workload_module, params, tmp_path), params


def run_workload(
    python: Path, module: str, params: dict[str, Any], workdir: Path, timeout_s: float = 600
) -> dict[str, Any]:
    """Run one cell the way the local runner does (GPUs hidden) and return its result JSON."""
    workdir.mkdir(parents=True, exist_ok=True)
    params_path, out_path = workdir / "params.json", workdir / "result.json"
    params_path.write_text(json.dumps(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    env.pop("KERAS_BACKEND", None)  # the workload must choose the backend from the variant alone
    proc = subprocess.run(
        [str(python), "-m", f"workloads.{module}", "--params", str(params_path), "--out", str(out_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s,
    )
    log = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, f"workloads.{module} exited {proc.returncode}:\n{log}"
    assert out_path.is_file(), f"workloads.{module} wrote no result:\n{log}"
    doc = json.loads(out_path.read_text())
    doc["_log"] = log
    return doc


def reference_losses(params: dict[str, Any]) -> tuple[float, float]:
    """(loss before any update, loss after one SGD step) of the NumPy oracle on the harness's first batch."""
    p = harness.Params.from_dict(params)
    model = NumpyLSTM(harness.make_weights(p), p.lr)
    tokens, labels = harness.make_batches(p)[0]
    return model.step(tokens, labels), model.step(tokens, labels)


def reference_update(params: dict[str, Any]) -> UpdateFingerprint:
    """The NumPy oracle's fingerprint of its first SGD update (harness.update_fingerprint)."""
    p = harness.Params.from_dict(params)
    initial = harness.make_weights(p)
    model = NumpyLSTM(initial, p.lr)
    tokens, labels = harness.make_batches(p)[0]
    model.step(tokens, labels)
    return UpdateFingerprint.model_validate(harness.update_fingerprint(initial, harness.Weights(**model.w), tokens))


def assert_ok_and_equivalent(doc: dict[str, Any], params: dict[str, Any]) -> None:
    """status ok, the contract's keys, the expected parameter count, the NumPy reference's two losses and its
    first SGD update, tensor by tensor."""
    assert doc["status"] == "ok", f"{doc['status']}: {doc['message']}\n{doc['_log']}"
    missing = [k for k in RESULT_KEYS if k not in doc]
    assert not missing, f"result lacks {missing}"
    assert doc["param_count"] == doc["param_count_expected"] == harness.expected_param_count(
        harness.Params.from_dict(params)
    )
    assert len(doc["times_ms"]) == params["iters"]
    assert doc["versions"].get("framework"), doc["versions"]
    assert doc["loss_final"] is not None and math.isfinite(doc["loss_final"])
    precision = params.get("precision", "fp32")
    # What the framework says it ran is what was asked, and the orchestrator accepts the result as it is.
    assert doc["precision_effective"] == precision, doc["precision_switches"]
    assert judge(as_result(doc)) is None, judge(as_result(doc))
    assert doc["embedding_update"] in ("sparse", "dense")
    assert doc["throughput_ms"] > 0 and len(doc["losses"]) == params["iters"]
    # Start-up, apart from the timed steps (their nesting is checked at the boundary, as_result below).
    assert doc["first_step_s"] > 0 and doc["build_s"] >= 0 and doc["to_first_step_s"] > doc["import_s"] > 0
    tol = TOLERANCES[precision]
    want_initial, want_after = reference_losses(params)
    assert want_initial != pytest.approx(want_after, rel=tol), "lr too small for the probe to mean anything"
    assert doc["loss_initial"] == pytest.approx(want_initial, rel=tol)
    assert doc["loss_after_one_step"] == pytest.approx(want_after, rel=tol)
    ours = as_result(doc).update
    assert ours is not None, "the workload reports no update fingerprint (canonical_weights)"
    devs = update_deviations(ours, reference_update(params))
    wrong = {k: v for k, v in devs.items() if not v <= UPDATE_TOLERANCES[precision]}
    assert not wrong, f"update differs from the reference's (relative to its norm): {wrong}"


def relative_deviation(doc: dict[str, Any], params: dict[str, Any]) -> float:
    """The larger relative deviation of the two probe losses from the NumPy reference (what the report shows)."""
    want = reference_losses(params)
    got = (doc["loss_initial"], doc["loss_after_one_step"])
    return max(abs(g - w) / abs(w) for g, w in zip(got, want, strict=True))


# Runs one cell in-process inside a framework's environment with set_precision replaced by one that sets every
# switch for fp32 while the params still ask for bf16: "bf16 requested, left off". Prints the result document.
SABOTAGE = """
import dataclasses, json, sys, time
from workloads import harness
from workloads.{module} import {cls} as Base

class LeftOff(Base):
    def set_precision(self):
        asked = self.params
        self.params = dataclasses.replace(asked, precision="fp32")
        try:
            super().set_precision()
        finally:
            self.params = asked

p = harness.Params.from_dict(json.loads(sys.argv[1]))
fw, m = LeftOff(p), harness.Measurement()
start = time.perf_counter()
harness.measure(fw, p, m)
print(json.dumps(harness.build_document(p, fw, m, "ok", None, time.perf_counter() - start), default=str))
"""


def run_left_off(python: Path, module: str, cls: str, params: dict[str, Any]) -> dict[str, Any]:
    """The result document of a bf16 cell whose workload set the fp32 switches instead (see SABOTAGE)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("KERAS_BACKEND", None)
    proc = subprocess.run(
        [str(python), "-c", SABOTAGE.format(module=module, cls=cls), json.dumps(params)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
def cpu_cases(images_dir: Path = ROOT / "images") -> list[tuple[str, str | None]]:
    """Every (framework, variant) under images/ that has CPU requirements for the local runner, found by discovery:
    a framework folder dropped in gets the CPU and equivalence tests (tests/test_workloads_discovered.py)."""
    cases: list[tuple[str, str | None]] = []
    for name, fw in discover(images_dir).items():
        for variant in fw.meta.variants or (None,):
            if requirements_file(fw, variant) is not None:
                cases.append((name, variant))
    return cases


def as_result(doc: dict[str, Any]) -> WorkloadResult:
    """A workload's JSON document through the orchestrator's boundary (what classify judges); the keys the tests
    add (`_log`) are not the workload's."""
    result, problem = parse_result(json.dumps({k: v for k, v in doc.items() if not k.startswith("_")}))
    assert result is not None, problem
    return result
