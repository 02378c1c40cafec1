"""tensorflow, mxnet, theano, keras-theano and pytensor workloads, run for real in their cached CPU environments
(TensorFlow's precision switches: test_workloads_tensorflow).

Every case is a subprocess `python -m workloads.<module>` with GPUs hidden (tests/workload_helpers.py), compared
with the NumPy oracle: same loss before any update and after one SGD step (lr 0.5), same parameter count.
Theano and PyTensor's C/numba back-ends compile on their first run (up to about a minute and a half per case with
cold caches): those cases are marked slow.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.workload_helpers import (
    assert_ok_and_equivalent,
    framework,
    run_cell,
    venv_python,
)

slow = pytest.mark.slow

# (framework, impl requested, impl the result must record on a CPU)
CASES = [
    # No cuDNN on a CPU: the Keras layer runs its generic loop and must say so rather than claim "fused".
    pytest.param("tensorflow", "fused", "keras-loop", id="tensorflow-fused"),
    pytest.param("tensorflow", "loop", "loop", id="tensorflow-loop"),
    pytest.param("tensorflow", "xla", "xla", id="tensorflow-xla"),
    pytest.param("mxnet", "fused", "fused", id="mxnet-fused"),
    pytest.param("mxnet", "loop", "loop", id="mxnet-loop"),
    pytest.param("theano", "default", "scan", id="theano", marks=slow),
    pytest.param("keras-theano", "default", "scan", id="keras-theano", marks=slow),
    # Theano's successor on the same graph: JAX (its GPU route), numba (its default) and Theano's C back-end.
    pytest.param("pytensor", "jax", "jax", id="pytensor-jax"),
    pytest.param("pytensor", "numba", "numba", id="pytensor-numba", marks=slow),
    pytest.param("pytensor", "c", "c", id="pytensor-c", marks=slow),
]


@pytest.mark.parametrize(("name", "impl", "recorded"), CASES)
def test_tiny_cell_matches_numpy_reference(name: str, impl: str, recorded: str, tmp_path: Path) -> None:
    doc, params = run_cell(name, tmp_path, impl=impl)
    assert_ok_and_equivalent(doc, params)
    assert doc["impl"] == recorded
    assert doc["device"] == {"kind": "cpu", "name": "cpu"}
    assert doc["peak_memory_bytes"] is None  # none of these exposes a CPU peak; a number would be made up
    if impl != "default":
        assert impl in framework(name).meta.impls
    if name == "tensorflow":  # the step as TensorFlow built it: XLA-compiled for xla alone
        assert doc["precision_switches"]["jit_compile"] is (impl == "xla"), doc["precision_switches"]
    if name == "keras-theano":  # the row is Keras' (on Theano): framework = Keras, Theano listed beside it
        assert (doc["versions"]["framework"], doc["versions"]["theano"]) == ("2.3.1", "1.0.5")


def test_the_default_impl_is_the_first_declared(tmp_path: Path) -> None:
    # "default" (what a matrix without `impls` sends) must mean framework.yaml's first impl, here mxnet's fused.
    doc, _ = run_cell("mxnet", tmp_path, impl="default")
    assert framework("mxnet").meta.impls[0] == "fused" == doc["impl"]


# On this machine no framework can use a GPU: each must say why at start-up, as "unsupported", not crash or
# quietly run on the CPU (which is what Theano itself does when its GPU backend fails).
GPU_REASONS = [
    ("tensorflow", "sees no GPU"),
    ("mxnet", "has no CUDA support"),  # the CPU wheel
    ("theano", "needs pygpu/libgpuarray"),
    ("pytensor", "has no gpu here"),  # impl jax, the default; JAX's CPU-only build
]


@pytest.mark.parametrize(("name", "reason"), GPU_REASONS, ids=[n for n, _ in GPU_REASONS])
def test_gpu_cell_without_a_usable_gpu_is_unsupported_with_the_reason(name: str, reason: str, tmp_path: Path) -> None:
    doc, _ = run_cell(name, tmp_path, device="gpu")
    assert doc["status"] == "unsupported", doc["_log"]
    assert reason in doc["message"]
    assert doc["loss_initial"] is None and doc["times_ms"] == []


def test_pytensor_cpu_back_end_refuses_a_gpu_cell(tmp_path: Path) -> None:
    doc, _ = run_cell("pytensor", tmp_path, device="gpu", impl="numba")
    assert doc["status"] == "unsupported"
    assert "runs on the CPU only" in doc["message"]


@pytest.mark.parametrize("name", ["tensorflow", "mxnet", "theano", "pytensor"])
def test_unknown_impl_is_unsupported_naming_the_offered_ones(name: str, tmp_path: Path) -> None:
    doc, _ = run_cell(name, tmp_path, impl="unrolled")
    assert doc["status"] == "unsupported"
    assert "'unrolled'" in doc["message"]
    assert all(i in doc["message"] for i in framework(name).meta.impls)


# ------------------------------------------------------------------------------------------------ precision
# Frameworks with no bf16 path say why, at start-up, instead of running float32 under a bf16 label.
NO_BF16 = [
    pytest.param("mxnet", "fused", "AMP casts only Convolution and FullyConnected", id="mxnet"),
    pytest.param("theano", "default", "Theano 1.0 has no bfloat16 type", id="theano"),
    pytest.param("keras-theano", "default", "Theano 1.0 has no bfloat16 type", id="keras-theano"),
    pytest.param("pytensor", "jax", "PyTensor has no bfloat16 type", id="pytensor"),
]


@pytest.mark.parametrize(("name", "impl", "reason"), NO_BF16)
def test_bf16_without_a_bf16_path_is_unsupported_with_the_reason(name: str, impl: str, reason: str,
                                                                 tmp_path: Path) -> None:
    doc, _ = run_cell(name, tmp_path, impl=impl, precision="bf16")
    assert doc["status"] == "unsupported", doc["_log"]
    assert reason in doc["message"]


@pytest.mark.parametrize(("name", "impl"), [("mxnet", "fused"), ("pytensor", "jax")])
def test_fp32_only_frameworks_read_back_fp32(name: str, impl: str, tmp_path: Path) -> None:
    doc, params = run_cell(name, tmp_path, impl=impl, precision="fp32")
    assert_ok_and_equivalent(doc, params)
    assert doc["precision_switches"]["NVIDIA_TF32_OVERRIDE"] == "0"


def test_library_allocation_failures_are_oom_in_tensorflow_and_mxnet() -> None:
    import json
    import subprocess

    from tests.workload_helpers import ROOT

    def classify_in(name: str, code: str) -> object:
        env = {"PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
        proc = subprocess.run([str(venv_python(name)), "-c", code], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    got = classify_in("tensorflow", """
import json, tensorflow as tf
from workloads import harness
from workloads.tensorflow_lstm import TensorFlowLSTM
fw = TensorFlowLSTM(harness.Params(framework="tensorflow", hidden=8))
print(json.dumps([harness.classify(fw, tf.errors.InternalError(None, None, "CUDNN_STATUS_ALLOC_FAILED in cudnn_rnn")),
                  harness.classify(fw, tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor")),
                  harness.classify(fw, tf.errors.InternalError(None, None, "CUDNN_STATUS_BAD_PARAM"))]))
""")
    assert got == ["oom", "oom", "crashed"]
    got = classify_in("mxnet", """
import json
from workloads import harness
from workloads.mxnet_lstm import MXNetLSTM, _import_mxnet
_import_mxnet()
from workloads import mxnet_lstm
err = mxnet_lstm.mx.base.MXNetError
fw = MXNetLSTM(harness.Params(framework="mxnet", hidden=8))
print(json.dumps([harness.classify(fw, err("cudnn_rnn-inl.h: Check failed: e == CUDNN_STATUS_SUCCESS (4 vs. 0) "
                                          "cuDNN: CUDNN_STATUS_ALLOC_FAILED")),
                  harness.classify(fw, err("cudaMalloc retry failed: out of memory")),
                  harness.classify(fw, err("Check failed: no kernel image is available"))]))
""")
    assert got == ["oom", "oom", "crashed"]
