"""MXNet 1.x workload: Gluon, hybridized with static_alloc/static_shape, the fused RNN op or an unrolled LSTMCell.

fused: gluon.rnn.LSTM (one RNN op: cuDNN on a GPU, MXNet's own kernel on a CPU).
loop:  gluon.rnn.LSTMCell unrolled over the sequence inside the hybridized graph.
Gluon keeps two bias vectors (i2h, h2h) where the benchmark has one: the canonical bias goes to i2h, h2h is zero
and frozen (grad_req 'null'), so the trained model and its parameter count are the benchmark's.
Fixes to the 2016 script: the classifier reads only the last timestep, and gradients are written, not added.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

from workloads import harness

try:
    import mxnet as mx
    from mxnet import autograd, gluon
except OSError as exc:  # the CUDA build links the driver's libcuda.so.1: absent on a host without an NVIDIA driver
    mx = None
    IMPORT_ERROR: OSError | None = exc
else:
    IMPORT_ERROR = None

# MXNetError text of a GPU whose architecture the wheel has no SASS (and no PTX) for.
NO_KERNEL_MARKERS = ("no kernel image", "invalid device function")


def _cuda_library_versions() -> dict[str, str | None]:
    """MXNet does not report its CUDA/cuDNN versions: ask the libraries it links (already loaded, same handles)."""
    out: dict[str, str | None] = {"cuda": None, "cudnn": None}
    try:
        v = ctypes.c_int()
        if ctypes.CDLL("libcudart.so.11.0").cudaRuntimeGetVersion(ctypes.byref(v)) == 0:
            out["cuda"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
        cudnn = ctypes.CDLL("libcudnn.so.8")
        cudnn.cudnnGetVersion.restype = ctypes.c_size_t
        n = cudnn.cudnnGetVersion()
        out["cudnn"] = f"{n // 1000}.{n % 1000 // 100}.{n % 100}"
    except (OSError, AttributeError):
        pass
    return out


def make_net(p: harness.Params, impl: str) -> Any:
    """Embedding -> LSTM -> last step -> Dense, as one HybridBlock (defined here: gluon may not be importable)."""

    class Net(gluon.HybridBlock):
        def __init__(self) -> None:
            super().__init__()
            with self.name_scope():
                self.embed = gluon.nn.Embedding(p.vocab, p.embed)
                if impl == "fused":
                    self.rnn = gluon.rnn.LSTM(p.hidden, layout="NTC", input_size=p.embed)
                else:
                    self.rnn = gluon.rnn.LSTMCell(p.hidden, input_size=p.embed)
                self.dense = gluon.nn.Dense(p.classes, in_units=p.hidden)

        def hybrid_forward(self, F: Any, tokens: Any) -> Any:
            x = self.embed(tokens)  # [N, T, E]
            if impl == "fused":
                last = F.squeeze(F.slice_axis(self.rnn(x), axis=1, begin=-1, end=None), axis=1)
            else:
                _, (last, _c) = self.rnn.unroll(p.seq_len, x, layout="NTC", merge_outputs=True)
            return self.dense(last)

    return Net()


class MXNetLSTM(harness.Framework):
    name = "mxnet"
    # MXNetError is too generic to match on; its text says "cudaMalloc retry failed: out of memory" (GPU)
    # or "Failed to allocate CPU Memory".
    oom_types = (MemoryError,)
    oom_markers = ("out of memory", "Failed to allocate CPU Memory")

    def __init__(self, params: harness.Params) -> None:
        super().__init__(params)
        self.impl_used = "fused" if params.impl == "default" else params.impl
        if self.impl_used not in ("fused", "loop"):
            raise harness.Unsupported(f"mxnet workload has no impl {params.impl!r} (offers fused, loop)")
        self._ctx = mx.cpu() if mx is not None else None

    def versions(self) -> dict[str, str | None]:
        if mx is None:
            return {}
        out: dict[str, str | None] = {"framework": mx.__version__}
        if mx.runtime.Features().is_enabled("CUDA"):
            out.update(_cuda_library_versions())
        return out

    def device_name(self) -> str | None:
        if self._ctx is None or self._ctx.device_type == "cpu":
            return "cpu"
        try:
            return f"gpu{self._ctx.device_id} sm_{mx.util.get_cuda_compute_capability(self._ctx)}"
        except (OSError, RuntimeError):
            return f"gpu{self._ctx.device_id}"

    def check_device(self) -> None:
        if mx is None:
            raise harness.Unsupported(f"mxnet cannot be loaded here: {IMPORT_ERROR}")
        if self.params.device == "cpu":
            return  # the runner hides GPUs; MXNet only uses one when a gpu context is asked for
        if self.params.device != "gpu":
            raise harness.Unsupported(f"mxnet workload has no device {self.params.device!r}")
        if not mx.runtime.Features().is_enabled("CUDA"):
            raise harness.Unsupported(f"this mxnet {mx.__version__} build has no CUDA support")
        if mx.context.num_gpus() == 0:
            raise harness.Unsupported("mxnet sees no GPU (driver or container toolkit missing)")
        self._ctx = mx.gpu(0)
        # Run a kernel now: a wheel without code for this architecture fails here, not mid-benchmark.
        try:
            (mx.nd.ones((8, 8), ctx=self._ctx) * 2).wait_to_read()
        except mx.base.MXNetError as exc:
            if any(m in str(exc) for m in NO_KERNEL_MARKERS):
                raise harness.Unsupported(
                    f"mxnet {mx.__version__} has no kernels for this GPU ({self.device_name()}); "
                    "its CUDA wheels stop at sm_86 and ship no PTX"
                ) from exc
            raise

    def build(self, weights: harness.Weights) -> None:
        self.net = make_net(self.params, self.impl_used)
        self.net.initialize(ctx=self._ctx)
        w = weights
        rnn = self.net.rnn
        prefix = "l0_" if self.impl_used == "fused" else ""
        # Gluon stores weights as [out, in] (y = x W^T): transpose the canonical x @ kernel layout.
        values = {
            self.net.embed.weight: w.embedding,
            getattr(rnn, f"{prefix}i2h_weight"): w.kernel.T,
            getattr(rnn, f"{prefix}h2h_weight"): w.recurrent_kernel.T,
            getattr(rnn, f"{prefix}i2h_bias"): w.bias,
            getattr(rnn, f"{prefix}h2h_bias"): np.zeros_like(w.bias),
            self.net.dense.weight: w.dense_kernel.T,
            self.net.dense.bias: w.dense_bias,
        }
        for param, value in values.items():
            param.set_data(mx.nd.array(np.ascontiguousarray(value), ctx=self._ctx))
        getattr(rnn, f"{prefix}h2h_bias").grad_req = "null"
        self.net.hybridize(static_alloc=True, static_shape=True)
        self.loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
        # Our loss is already the batch mean, so trainer.step(1): no further 1/batch rescaling.
        self.trainer = gluon.Trainer(
            self.net.collect_params(), "sgd", {"learning_rate": self.params.lr, "momentum": 0.0, "wd": 0.0}
        )

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        return mx.nd.array(tokens, ctx=self._ctx, dtype="int32"), mx.nd.array(labels, ctx=self._ctx, dtype="int32")

    def step(self, batch: Any) -> Any:
        tokens, labels = batch
        with autograd.record():
            loss = self.loss_fn(self.net(tokens), labels).mean()
        loss.backward()
        self.trainer.step(1)
        return loss

    def sync(self) -> None:
        mx.nd.waitall()

    def loss_value(self, loss: Any) -> float:
        return float(loss.asscalar())

    def param_count(self) -> int:
        return sum(int(np.prod(p.shape)) for p in self.net.collect_params().values() if p.grad_req != "null")

    # peak_memory_bytes: MXNet exposes only free/total device memory, not a per-process peak; left as None.


if __name__ == "__main__":
    raise SystemExit(harness.run(MXNetLSTM))
