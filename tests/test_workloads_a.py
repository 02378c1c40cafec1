"""torch, jax and keras (tensorflow/jax/torch backends): their impl paths, OOM recognition and GPU checks, run for
real in their cached CPU environments.

Every case is a subprocess `python -m workloads.<module>` with GPUs hidden, compared with the NumPy oracle.
The first run installs the environments (torch ~4 GB); later runs reuse them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.workload_helpers import (
    ROOT,
    assert_ok_and_equivalent,
    cell_params,
    framework,
    reference_losses,
    run_workload,
    venv_python,
)

# The tiny CPU cell and the GPU-less check of every framework: tests/test_workloads_discovered.py.


def _run(name: str, variant: str | None, tmp_path: Path, **overrides: object) -> dict:
    python = venv_python(name, variant)
    params = cell_params(name, variant, **overrides)
    return run_workload(python, framework(name).workload_module, params, tmp_path)


def test_torch_loop_and_fused_give_the_same_losses(tmp_path: Path) -> None:
    fused = _run("torch", None, tmp_path / "fused", impl="fused")
    loop = _run("torch", None, tmp_path / "loop", impl="loop")
    assert (fused["impl"], loop["impl"]) == ("fused", "loop")
    for key in ("loss_initial", "loss_after_one_step", "loss_final"):
        assert loop[key] == pytest.approx(fused[key], rel=1e-5), key
    assert_ok_and_equivalent(loop, cell_params("torch", impl="loop"))


@pytest.mark.parametrize("variant", ["tensorflow", "jax", "torch"])
def test_keras_fused_on_cpu_records_the_loop_that_ran(variant: str, tmp_path: Path) -> None:
    # No cuDNN on a CPU: the fused request must fall back and say so, not claim "fused".
    fused = _run("keras", variant, tmp_path / "fused", impl="fused")
    loop = _run("keras", variant, tmp_path / "loop", impl="loop")
    assert (fused["impl"], loop["impl"]) == ("loop", "loop")
    assert fused["versions"]["backend"] == variant
    for key in ("loss_initial", "loss_after_one_step", "loss_final"):
        assert loop[key] == pytest.approx(fused[key], rel=1e-5), key


@pytest.mark.parametrize("variant", ["tensorflow", "jax", "torch"])
def test_keras_cudnn_probe_refuses_a_model_that_runs_the_loop(variant: str) -> None:
    # On this CPU the cuDNN path cannot run, so the probe must refuse; the torch backend would fall back silently.
    got = _in_venv("keras", variant, f"""
import json
import numpy as np
from workloads import harness
from workloads.keras_lstm import KerasLSTM
p = harness.Params(framework="keras", variant="{variant}", hidden=8, batch=2, seq_len=3, vocab=20, device="cpu")
fw = KerasLSTM(p)
fw.check_device()
model = fw._model(harness.make_weights(p), use_cudnn=True)
try:
    fw.backend.probe_cudnn(model, np.zeros((2, 3), np.int32))
    print(json.dumps("cuDNN ran"))
except harness.Unsupported as exc:
    print(json.dumps(str(exc)))
""")
    assert isinstance(got, str) and got.startswith(f"keras ({variant}): "), got
    assert "cuDNN" in got


@pytest.mark.parametrize(("name", "variant"), [("torch", None), ("jax", None), ("keras", "jax")])
def test_unknown_impl_is_unsupported(name: str, variant: str | None, tmp_path: Path) -> None:
    doc = _run(name, variant, tmp_path, impl="cudnn-v2")
    assert doc["status"] == "unsupported"
    assert "cudnn-v2" in doc["message"] and all(i in doc["message"] for i in framework(name).meta.impls)


def _in_venv(name: str, variant: str | None, code: str) -> object:
    """Evaluate `code` (which prints one JSON value) inside the framework's environment."""
    proc = subprocess.run(
        [str(venv_python(name, variant)), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={"PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_torch_gpu_arch_check_follows_cuda_compatibility_rules() -> None:
    got = _in_venv("torch", None, """
import json
from workloads.torch_lstm import _arch_supported as ok
wheel = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]
print(json.dumps({
    "maxwell_52": ok(52, wheel), "volta_70": ok(70, wheel), "turing_75": ok(75, wheel), "ada_89": ok(89, wheel),
    "hopper_90": ok(90, wheel), "ptx_only_older": ok(86, ["compute_80"]), "ptx_only_newer": ok(75, ["compute_80"]),
    "arch_specific_neighbour": ok(91, ["sm_90a"]),
}))
""")
    assert got == {
        "maxwell_52": False, "volta_70": False, "turing_75": True, "ada_89": True, "hopper_90": True,
        "ptx_only_older": True, "ptx_only_newer": False, "arch_specific_neighbour": False,
    }


def test_oom_recognition_matches_the_frameworks_real_errors() -> None:
    torch_got = _in_venv("torch", None, """
import json, torch
from workloads import harness
from workloads.torch_lstm import TorchLSTM
fw = TorchLSTM(harness.Params(framework="torch", hidden=8))
print(json.dumps([fw.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")),
                  fw.is_oom(RuntimeError("CUDA error: out of memory")),
                  fw.is_oom(RuntimeError("CUDA error: no kernel image is available for execution on the device"))]))
""")
    assert torch_got == [True, True, False]
    jax_got = _in_venv("jax", None, """
import json, jax
from workloads import harness
from workloads.jax_lstm import JaxLSTM
fw = JaxLSTM(harness.Params(framework="jax", hidden=8))
err = jax.errors.JaxRuntimeError
print(json.dumps([fw.is_oom(err("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 4294967296 bytes.")),
                  fw.is_oom(err("INVALID_ARGUMENT: Executable expected parameter 0 of size 8"))]))
""")
    assert jax_got == [True, False]


def test_reference_probe_is_sensitive_to_the_update() -> None:
    # Guards the equivalence tests above: with this lr a wrong update (or none) cannot pass for the right one.
    initial, after = reference_losses(cell_params("torch"))
    assert abs(initial - after) / initial > 100 * 1e-4
