"""PyTensor workload: Theano's maintained successor running the very same scan graph (workloads/theano_lstm.py).

PyTensor has no GPU backend of its own; it compiles the graph to other back-ends, one per impl:
jax:   mode="JAX", the graph becomes jax.lax.scan under jax.jit: the only impl that can use a GPU.
numba: mode="NUMBA" (PyTensor 3's default), CPU.
c:     the C/cvm back-end inherited from Theano, CPU.
The compiled function is called with trust_input=True and, for impl jax, with batches already on the device
(jax.device_put in prepare()), so no input conversion or host-to-device copy is inside the timed step.
Precision: float32 (floatX=float32); impl jax sets jax_default_matmul_precision "highest" (fp32) or
"tensorfloat32" (tf32, GPU only). No bf16: PyTensor has no bfloat16 type.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from workloads import harness
from workloads.theano_lstm import ScanOps, build_train_function, weights_of

IMPLS = ("jax", "numba", "c")
# JAX preallocates 75% of the GPU at start-up; off, so the peak we read is what the step used.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
# PyTensor's floatX defaults to float64, which turns Python-number constants into float64 and upcasts the cell.
os.environ["PYTENSOR_FLAGS"] = ",".join(f for f in (os.environ.get("PYTENSOR_FLAGS", ""), "floatX=float32") if f)


class PyTensorLSTM(harness.Framework):
    name = "pytensor"
    oom_types = (MemoryError,)
    oom_markers = ("RESOURCE_EXHAUSTED", "Out of memory")  # jaxlib's XlaRuntimeError text on a device OOM
    embedding_update = "sparse"  # Theano's graph: inc_subtensor on the looked-up rows

    def __init__(self, params: harness.Params) -> None:
        super().__init__(params)
        self.impl_used = IMPLS[0] if params.impl == "default" else params.impl
        if self.impl_used not in IMPLS:
            raise harness.Unsupported(f"pytensor workload has no impl {params.impl!r} (offers {', '.join(IMPLS)})")
        self._device: Any = None

    def versions(self) -> dict[str, str | None]:
        import pytensor

        out: dict[str, str | None] = {"framework": pytensor.__version__}
        if self.impl_used == "jax":
            import jax

            out["jax"] = jax.__version__
        return out

    def device_name(self) -> str | None:
        if self._device is None or self._device.platform == "cpu":
            return "cpu"
        return str(getattr(self._device, "device_kind", self._device))

    def check_device(self) -> None:
        if self.params.device not in ("cpu", "gpu"):
            raise harness.Unsupported(f"pytensor workload has no device {self.params.device!r}")
        if self.impl_used != "jax":
            if self.params.device == "gpu":
                raise harness.Unsupported(f"pytensor's {self.impl_used} back-end runs on the CPU only (impl jax: GPU)")
            return
        import jax

        # JAX picks its default device itself: pin it to the one asked for, and fail here when it is missing.
        try:
            self._device = jax.devices("cuda" if self.params.device == "gpu" else "cpu")[0]
        except RuntimeError as exc:
            raise harness.Unsupported(f"JAX {jax.__version__} has no {self.params.device} here: {exc}") from exc
        jax.config.update("jax_default_device", self._device)

    def set_precision(self) -> None:
        p = self.params
        if p.precision == "bf16":
            raise harness.Unsupported("pytensor computes in float32 only: PyTensor has no bfloat16 type")
        if p.precision == "tf32" and self.impl_used != "jax":
            raise harness.Unsupported(f"pytensor's {self.impl_used} back-end has no TF32 (impl jax on a GPU has)")
        if self.impl_used == "jax":
            import jax

            jax.config.update("jax_default_matmul_precision", "tensorfloat32" if p.precision == "tf32" else "highest")

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        import pytensor

        dtypes = sorted({str(v.dtype) for v in self.shared_params.values()})
        switches: dict[str, Any] = {"floatX": str(pytensor.config.floatX), "parameter_dtypes": dtypes}
        tf32 = False
        if self.impl_used == "jax":
            import jax

            switches["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
            tf32 = self.params.device == "gpu" and switches["jax_default_matmul_precision"] != "highest"
        mode = harness.mode_from(tf32=tf32, bf16=False) if dtypes == ["float32"] else "+".join(dtypes)
        return mode, switches

    def build(self, weights: harness.Weights) -> None:
        import pytensor
        import pytensor.tensor as pt

        ops = ScanOps(
            tensor=pt, shared=pytensor.shared, scan=pytensor.scan, function=pytensor.function, grad=pytensor.grad,
            sigmoid=pt.sigmoid,
            # PyTensor's default axis is None (the whole tensor), Theano's is the last one.
            log_softmax=lambda x: pt.special.log_softmax(x, axis=-1),
            static_shapes=self.impl_used == "jax",
        )
        mode = {"jax": "JAX", "numba": "NUMBA", "c": pytensor.compile.mode.Mode(linker="cvm")}[self.impl_used]
        self.fn, self.shared_params = build_train_function(ops, weights, self.params, mode=mode)
        self.fn.trust_input = True  # inputs are exactly the compiled types (prepare): no per-call conversion

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        tokens, labels = np.ascontiguousarray(tokens, np.int32), np.ascontiguousarray(labels, np.int32)
        if self.impl_used != "jax":
            return tokens, labels
        import jax

        return jax.device_put(tokens, self._device), jax.device_put(labels, self._device)

    def step(self, batch: Any) -> Any:
        # The C and numba back-ends return host arrays, finished; the JAX one returns jax arrays still being computed
        # (and keeps the updated parameters on the device between calls).
        return self.fn(*batch)

    def sync(self) -> None:
        if self.impl_used == "jax":
            import jax

            jax.block_until_ready([v.get_value(borrow=True) for v in self.shared_params.values()])

    def param_count(self) -> int:
        return sum(int(np.asarray(v.get_value(borrow=True)).size) for v in self.shared_params.values())

    def canonical_weights(self) -> harness.Weights:
        return weights_of(self.shared_params)

    def peak_memory_bytes(self) -> int | None:
        if self._device is None or self._device.platform == "cpu":
            return None
        stats = self._device.memory_stats() or {}
        return stats.get("peak_bytes_in_use")


if __name__ == "__main__":
    raise SystemExit(harness.run(PyTensorLSTM))
