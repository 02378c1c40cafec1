"""Theano 1.0 workload: the benchmark LSTM as a scan over one cell, compiled into one training function.

The graph is written once against a small `ScanOps` table so PyTensor (Theano's successor, workloads/pytensor_lstm.py)
runs the very same model. Fixes to the 2016 script: the classifier reads the LAST timestep (it read output[0]),
every parameter is updated (W_toinp/B_toinp were not), and the harness excludes warm-up and compilation.
Theano is imported only once the device is known: its flags are read at import time.
The data batches live in shared variables (float32, as Theano's GPU back-end stores them; the ids are cast back to
int32 in the graph, exact below 2**24) and a step is fn(batch index): the host-to-device copy happens in prepare(),
outside the timed step, as in every other framework. Theano returns the loss to the host right after the forward
pass while the backward and SGD kernels are still queued on its one stream, so sync() waits on every updated
parameter. Precision: float32 only (floatX=float32; Theano has no bfloat16 type and no TF32 switch).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from workloads import harness

PARAM_NAMES = ("embedding", "kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")


@dataclass(frozen=True)
class ScanOps:
    """The few symbols whose names differ between Theano and PyTensor."""

    tensor: Any  # theano.tensor / pytensor.tensor
    shared: Any
    scan: Any
    function: Any
    grad: Any
    sigmoid: Any
    log_softmax: Any  # row-wise, over the last axis
    static_shapes: bool = False  # PyTensor's JAX back-end needs batch and sequence length fixed in the graph


def weights_of(shared_params: dict[str, Any]) -> harness.Weights:
    """The shared parameters (canonical layout and names, PARAM_NAMES) as host arrays."""
    return harness.Weights(**{n: np.asarray(shared_params[n].get_value()) for n in PARAM_NAMES})


def build_train_function(
    ops: ScanOps, w: harness.Weights, p: harness.Params, mode: Any = None, data: tuple[Any, Any] | None = None
) -> tuple[Any, dict]:
    """A compiled f(tokens, labels) -> pre-update loss that also applies one SGD step; and the shared params.

    With `data` (shared float32 token ids [n, B, T] and labels [n, B]) the function is f(batch index) instead, and
    reads its batch from those shared variables (on the device).
    """
    tt, h_dim = ops.tensor, p.hidden
    params = {n: ops.shared(getattr(w, n), name=n) for n in PARAM_NAMES}
    emb, kernel, rec, bias = (params[n] for n in PARAM_NAMES[:4])
    if ops.static_shapes:
        tokens = tt.tensor("tokens", dtype="int32", shape=(p.batch, p.seq_len))
        labels = tt.tensor("labels", dtype="int32", shape=(p.batch,))
        batch, steps = p.batch, p.seq_len
    else:
        tokens, labels = tt.imatrix("tokens"), tt.ivector("labels")
        batch, steps = tokens.shape[0], tokens.shape[1]

    idx = tokens.T.flatten()  # time-major ids, so the projection reshapes straight to [T, B, 4H]
    rows = emb[idx]  # the looked-up rows; their gradient drives a sparse embedding update
    xk = (tt.dot(rows, kernel) + bias).reshape((steps, batch, 4 * h_dim))

    def cell(xk_t: Any, h: Any, c: Any, rec_k: Any) -> tuple[Any, Any]:
        z = xk_t + tt.dot(h, rec_k)
        i, f = ops.sigmoid(z[:, :h_dim]), ops.sigmoid(z[:, h_dim : 2 * h_dim])
        g, o = tt.tanh(z[:, 2 * h_dim : 3 * h_dim]), ops.sigmoid(z[:, 3 * h_dim :])
        c = f * c + i * g
        return o * tt.tanh(c), c

    zeros = tt.zeros((batch, h_dim), dtype="float32")
    (hs, _cs), _ = ops.scan(cell, sequences=xk, outputs_info=[zeros, zeros], non_sequences=[rec], strict=True)
    logits = tt.dot(hs[-1], params["dense_kernel"]) + params["dense_bias"]
    loss = -ops.log_softmax(logits)[tt.arange(batch), labels].mean()

    dense_params = [params[n] for n in PARAM_NAMES[1:]]
    grads = ops.grad(loss, [*dense_params, rows])
    lr = np.float32(p.lr)  # a Python float would upcast the updates to float64
    # enumerate, not zip(strict=...): the GPU image runs Python 3.9.
    updates = [(v, v - lr * grads[i]) for i, v in enumerate(dense_params)]
    # inc_subtensor adds repeated ids' contributions, like a dense gradient would, without a [vocab, E] buffer.
    updates.append((emb, tt.inc_subtensor(emb[idx], -lr * grads[-1])))
    if data is None:
        fn = ops.function([tokens, labels], loss, updates=updates, mode=mode)
    else:
        index = tt.iscalar("batch")
        givens = {tokens: tt.cast(data[0][index], "int32"), labels: tt.cast(data[1][index], "int32")}
        fn = ops.function([index], loss, updates=updates, givens=givens, mode=mode)
    return fn, params


def _import_theano(device: str) -> ModuleType:
    flags = [f"device={'cuda0' if device == 'gpu' else 'cpu'}", "floatX=float32"]
    existing = os.environ.get("THEANO_FLAGS", "")
    if "blas.ldflags" not in existing:
        # NumPy wheels bundle a renamed OpenBLAS that Theano's link test cannot find; an empty value makes it use
        # NumPy's C-API BLAS instead of failing the check. An image with a system BLAS sets its own ldflags.
        flags.append("blas.ldflags=")
    if not os.access(os.path.expanduser("~"), os.W_OK):  # e.g. a container user without a home
        flags.append(f"base_compiledir={os.path.join(tempfile.gettempdir(), 'theano')}")
    os.environ["THEANO_FLAGS"] = ",".join(f for f in [existing, *flags] if f)
    if sys.version_info >= (3, 11):
        # Theano 1.0.5's scan C extension includes longintrepr.h, gone in Python 3.11: blocking the module makes
        # scan use its Python loop instead of failing to compile. Images with an older Python keep the C loop.
        sys.modules.setdefault("theano.scan_module.scan_perform_ext", None)  # type: ignore[arg-type]
    import theano

    return theano


class TheanoLSTM(harness.Framework):
    name = "theano"
    oom_types = (MemoryError,)
    # pygpu's GpuArrayException is only importable where libgpuarray is installed: match its text instead.
    # libgpuarray: "cuMemAlloc: CUDA_ERROR_OUT_OF_MEMORY: out of memory"; cuBLAS's via harness.LIBRARY_OOM_MARKERS.
    oom_markers = ("CUDA_ERROR_OUT_OF_MEMORY", "out of memory")
    embedding_update = "sparse"  # inc_subtensor on the looked-up rows

    def __init__(self, params: harness.Params) -> None:
        super().__init__(params)
        self.impl_used = "scan"
        if params.impl not in ("default", "scan"):
            raise harness.Unsupported(f"theano workload has no impl {params.impl!r} (offers scan)")
        self.theano: Any = None

    def versions(self) -> dict[str, str | None]:
        if self.theano is None:
            return {}
        out: dict[str, str | None] = {"framework": self.theano.__version__}
        if self.params.device == "gpu" and self.theano.gpuarray.pygpu_activated:
            dnn = self.theano.gpuarray.dnn
            out["pygpu"] = self.theano.gpuarray.pygpu.__version__
            out["cudnn"] = str(dnn.version()) if dnn.dnn_available(None) else f"unavailable: {dnn.dnn_available.msg}"
        return out

    def device_name(self) -> str | None:
        if self.params.device == "cpu" or self.theano is None or not self.theano.gpuarray.pygpu_activated:
            return "cpu"
        return self.theano.gpuarray.type.get_context(None).devname

    def check_device(self) -> None:
        if self.params.device not in ("cpu", "gpu"):
            raise harness.Unsupported(f"theano workload has no device {self.params.device!r}")
        self.theano = _import_theano(self.params.device)
        if self.params.device == "cpu":
            return
        gpuarray = self.theano.gpuarray
        if gpuarray.pygpu is None:
            raise harness.Unsupported("Theano's GPU backend needs pygpu/libgpuarray, which is not importable here")
        if not gpuarray.pygpu_activated:
            # Theano only logs the failure and carries on on the CPU; initialise again to get the real error.
            try:
                gpuarray.init_dev("cuda0")
            except Exception as exc:
                raise harness.Unsupported(f"Theano could not initialise the GPU through libgpuarray: {exc}") from exc
            raise harness.Unsupported("Theano's GPU backend did not activate (see the log)")
        # The scan graph needs only cuBLAS and libgpuarray's own kernels, not cuDNN: versions() reports cuDNN.

    def set_precision(self) -> None:
        if self.params.precision != "fp32":
            why = "no bfloat16 type" if self.params.precision == "bf16" else "no TF32 switch (plain cuBLAS sgemm)"
            raise harness.Unsupported(f"{self.name} computes in float32 only: Theano 1.0 has {why}")

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        dtypes = sorted({str(v.dtype) for v in self._synced_variables()})
        floatx = str(self.theano.config.floatX)
        mode = "fp32" if dtypes == ["float32"] and floatx == "float32" else "+".join(dtypes)
        return mode, {"floatX": floatx, "parameter_dtypes": dtypes}

    def build(self, weights: harness.Weights) -> None:
        t, p = self.theano, self.params
        ops = ScanOps(
            tensor=t.tensor, shared=t.shared, scan=t.scan, function=t.function, grad=t.grad,
            sigmoid=t.tensor.nnet.sigmoid, log_softmax=t.tensor.nnet.logsoftmax,
        )
        n = max(1, p.data_batches)
        if p.vocab > 2**24:
            raise harness.Unsupported(f"token ids are kept as float32 on the device: vocab {p.vocab} > 2**24")
        self.data = (
            t.shared(np.zeros((n, p.batch, p.seq_len), np.float32), name="data_tokens"),
            t.shared(np.zeros((n, p.batch), np.float32), name="data_labels"),
        )
        self._prepared = 0
        self.fn, self.shared_params = build_train_function(ops, weights, p, data=self.data)

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        """Upload the batch into its slot of the shared data (on the device); the step then takes its index."""
        k = self._prepared
        self._prepared += 1
        for i, value in enumerate((tokens, labels)):  # not zip(strict=...): the GPU image runs Python 3.9
            host = np.array(self.data[i].get_value())
            host[k] = value
            self.data[i].set_value(host)
        return np.int32(k)

    def step(self, batch: Any) -> Any:
        return self.fn(batch)  # the loss is on the host after the forward pass; the update may still be queued

    def _synced_variables(self) -> list[Any]:
        return list(self.shared_params.values())

    def sync(self) -> None:
        # One stream: when every updated parameter is ready, everything queued before is done too.
        for var in self._synced_variables():
            value = var.get_value(borrow=True, return_internal_type=True)
            if hasattr(value, "sync"):  # a pygpu GpuArray; NumPy arrays (the CPU back-end) are always ready
                value.sync()

    def param_count(self) -> int:
        return sum(int(v.get_value(borrow=True).size) for v in self.shared_params.values())

    def canonical_weights(self) -> harness.Weights:
        return weights_of(self.shared_params)


if __name__ == "__main__":
    raise SystemExit(harness.run(TheanoLSTM))
