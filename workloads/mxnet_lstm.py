"""MXNet 1.x workload: Gluon, hybridized with static_alloc/static_shape, the fused RNN op or an unrolled LSTMCell.

fused: gluon.rnn.LSTM (one RNN op: cuDNN on a GPU, MXNet's own kernel on a CPU).
loop:  gluon.rnn.LSTMCell unrolled over the sequence inside the hybridized graph.
Gluon keeps two bias vectors (i2h, h2h) where the benchmark has one: the canonical bias goes to i2h, h2h is zero
and frozen (grad_req 'null'), so the trained model and its parameter count are the benchmark's.
Fixes to the 2016 script: the classifier reads only the last timestep, and gradients are written, not added.
Precision: MXNet has no API for TF32; its cuDNN RNN uses CUDNN_DEFAULT_MATH, which allows TF32 from Ampere on, and
only NVIDIA_TF32_OVERRIDE=0 turns it off. So MXNet is imported only after the harness has set that variable for
the cell's precision (fp32: "0"; tf32: unset); the read-back is MXNet's own rule (mxnet.test_utils: TF32 on a GPU of
compute capability 8.0+ unless the override is "0") with MXNET_CUDA_ALLOW_TENSOR_CORE. bf16 is unsupported: MXNet
1.9's AMP converts only Convolution and FullyConnected to bfloat16 (RNN and Embedding stay float32:
mxnet/contrib/amp/lists/symbol_bf16.py).
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

import numpy as np

from workloads import harness

mx: Any = None
autograd: Any = None
gluon: Any = None


def _import_mxnet() -> OSError | None:
    """Import MXNet (once; after the TF32 environment is set). The error when it cannot be loaded here."""
    global mx, autograd, gluon
    if mx is not None:
        return None
    try:
        import mxnet
        from mxnet import autograd as ag
        from mxnet import gluon as gl
    except OSError as exc:  # the CUDA build links the driver's libcuda.so.1: absent on a host without an NVIDIA driver
        return exc
    mx, autograd, gluon = mxnet, ag, gl
    return None


# MXNetError text of a GPU whose architecture the wheel has no SASS (and no PTX) for.
NO_KERNEL_MARKERS = ("no kernel image", "invalid device function")


# The sonames MXNet's CUDA builds link: the PyPI mxnet-cu117 wheel's CUDA 11 / cuDNN 8, NGC 24.06's CUDA 12 / cuDNN 9.
CUDART_NAMES = ("libcudart.so.12", "libcudart.so.11.0")
CUDNN_NAMES = ("libcudnn.so.9", "libcudnn.so.8")


def _cuda_library_versions() -> dict[str, str | None]:
    """MXNet does not report its CUDA/cuDNN versions: ask the libraries it links (already loaded, same handles)."""
    out: dict[str, str | None] = {"cuda": None, "cudnn": None}
    for name in CUDART_NAMES:
        try:
            v = ctypes.c_int()
            if ctypes.CDLL(name).cudaRuntimeGetVersion(ctypes.byref(v)) == 0:
                out["cuda"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
                break
        except (OSError, AttributeError):
            continue
    for name in CUDNN_NAMES:
        try:
            cudnn = ctypes.CDLL(name)
            cudnn.cudnnGetVersion.restype = ctypes.c_size_t
            out["cudnn"] = cudnn_version_text(int(cudnn.cudnnGetVersion()))
            break
        except (OSError, AttributeError):
            continue
    return out


def cudnn_version_text(n: int) -> str:
    """cudnnGetVersion()'s number as text: cuDNN 9 encodes 10000 * major + 100 * minor + patch (90100 -> 9.1.0),
    earlier ones 1000 * major + 100 * minor + patch (8907 -> 8.9.7)."""
    if n >= 90000:
        return f"{n // 10000}.{n % 10000 // 100}.{n % 100}"
    return f"{n // 1000}.{n % 1000 // 100}.{n % 100}"


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
    oom_markers = ("out of memory", "Failed to allocate CPU Memory")  # + harness.LIBRARY_OOM_MARKERS

    def __init__(self, params: harness.Params) -> None:
        super().__init__(params)
        self.impl_used = "fused" if params.impl == "default" else params.impl
        if self.impl_used not in ("fused", "loop"):
            raise harness.Unsupported(f"mxnet workload has no impl {params.impl!r} (offers fused, loop)")
        self._ctx: Any = None

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
        # The harness has set NVIDIA_TF32_OVERRIDE for this cell's precision: only now may cuDNN be loaded.
        error = _import_mxnet()
        if error is not None:
            raise harness.Unsupported(f"mxnet cannot be loaded here: {error}")
        self._ctx = mx.cpu()
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

    def set_precision(self) -> None:
        p = self.params
        if p.precision == "bf16":
            raise harness.Unsupported(
                "mxnet 1.9 has no bfloat16 LSTM: its AMP casts only Convolution and FullyConnected to bfloat16 "
                "(RNN and Embedding are in its float32 list)"
            )
        if p.precision == "tf32" and self._compute_capability() < 80:
            raise harness.Unsupported(f"TF32 needs compute capability 8.0 or later; this GPU is {self.device_name()}")
        # Tensor cores for float16 cuDNN/cuBLAS math; this workload is float32, set anyway so it is on record.
        os.environ["MXNET_CUDA_ALLOW_TENSOR_CORE"] = "1" if p.precision == "tf32" else "0"

    def _compute_capability(self) -> int:
        try:
            return int(mx.util.get_cuda_compute_capability(self._ctx)) if self._ctx.device_type == "gpu" else 0
        except (OSError, RuntimeError, ValueError):
            return 0

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        override = os.environ.get("NVIDIA_TF32_OVERRIDE")
        # mxnet.test_utils.effective_dtype's rule: TF32 on arch 80+ GPUs unless NVIDIA_TF32_OVERRIDE is "0".
        tf32 = self._compute_capability() >= 80 and override != "0"
        switches = {
            "NVIDIA_TF32_OVERRIDE": override,
            "MXNET_CUDA_ALLOW_TENSOR_CORE": os.environ.get("MXNET_CUDA_ALLOW_TENSOR_CORE"),
            "compute_capability": self._compute_capability() or None,
            "parameter_dtypes": sorted({str(np.dtype(q.dtype)) for q in self.net.collect_params().values()}),
        }
        return harness.mode_from(tf32=tf32, bf16=False), switches

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

    def canonical_weights(self) -> harness.Weights:
        rnn, prefix = self.net.rnn, "l0_" if self.impl_used == "fused" else ""

        def host(param: Any) -> np.ndarray:
            return param.data(self._ctx).asnumpy().astype(np.float32)

        # Gluon's [out, in] transposed back to the canonical x @ kernel layout.
        return harness.Weights(
            embedding=host(self.net.embed.weight),
            kernel=host(getattr(rnn, f"{prefix}i2h_weight")).T,
            recurrent_kernel=host(getattr(rnn, f"{prefix}h2h_weight")).T,
            bias=host(getattr(rnn, f"{prefix}i2h_bias")),
            dense_kernel=host(self.net.dense.weight).T,
            dense_bias=host(self.net.dense.bias),
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
