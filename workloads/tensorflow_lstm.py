"""TensorFlow 2 workload: the benchmark LSTM as a Keras layer (fused) or a hand-written tf.foldl of a cell (loop).

fused: keras.layers.LSTM, which TensorFlow runs as one cuDNN op on a GPU. use_cudnn=True there, so a silent
       fallback to Keras' generic loop raises instead of being timed as "fused". On a CPU there is no cuDNN:
       the same layer runs Keras' generic loop and the result says so (impl "keras-loop").
loop:  plain TensorFlow: precomputed input projection, then tf.foldl (a tf.while_loop) over one LSTM cell.
xla:   the loop's step, forward, backward and SGD update, compiled as one XLA program (tf.function(jit_compile=True):
       XLA or an error, never a silent fallback to the graph executor). The Keras layer is not offered under XLA: its
       cuDNN op (CudnnRNNV3) has no XLA kernel (tensorflow/tensorflow#99385, keras-team/keras#18456).
All paths train the same tf.Variables with the same hand-written SGD inside one tf.function.
Precision: TensorFlow enables TF32 by default; every cell sets enable_tensor_float_32_execution explicitly (off for
fp32 and bf16, on for tf32). bf16 is Keras' "mixed_bfloat16" policy on the fused path (float32 variables, bfloat16
compute) and the same cast-in-the-step policy on the loop path. The read-back: the TF32 flag as TensorFlow reports
it, the layer's dtype policy, and the dtype of the LSTM's output as traced in the training step.
"""

from __future__ import annotations

import os
from typing import Any

# Keras 3 picks its backend at import; TF_CPP_MIN_LOG_LEVEL=1 keeps warnings but drops the INFO banner.
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import keras
import numpy as np
import tensorflow as tf

from workloads import harness

IMPLS = ("fused", "loop", "xla")
# Messages of a GPU the build has no kernels for (a CUDA error surfacing through TensorFlow).
NO_KERNEL_MARKERS = ("no kernel image", "CUDA_ERROR_NO_BINARY_FOR_GPU", "CUDA_ERROR_INVALID_PTX")


class TensorFlowLSTM(harness.Framework):
    name = "tensorflow"
    oom_types = (tf.errors.ResourceExhaustedError,)
    # cuDNN/cuBLAS allocation failures reach Python as InternalError/UnknownError with the library's status text
    # (harness.LIBRARY_OOM_MARKERS).
    oom_markers = ("OOM when allocating", "RESOURCE_EXHAUSTED")
    embedding_update = "sparse"  # the gradient is IndexedSlices: only the looked-up rows are written

    def __init__(self, params: harness.Params) -> None:
        super().__init__(params)
        self.impl_used = "fused" if params.impl == "default" else params.impl
        if self.impl_used not in IMPLS:
            raise harness.Unsupported(f"tensorflow workload has no impl {params.impl!r} (offers {', '.join(IMPLS)})")
        self._gpu_details: dict[str, Any] = {}

    def versions(self) -> dict[str, str | None]:
        info = tf.sysconfig.get_build_info()
        return {
            "framework": tf.__version__,
            "keras": keras.__version__,
            "cuda": info.get("cuda_version"),
            "cudnn": info.get("cudnn_version"),
        }

    def device_name(self) -> str | None:
        if self.params.device == "cpu":
            return "cpu"
        return self._gpu_details.get("device_name")

    def check_device(self) -> None:
        gpus = tf.config.list_physical_devices("GPU")
        if self.params.device == "cpu":
            tf.config.set_visible_devices([], "GPU")  # before any op runs, or TF has already claimed them
            return
        if self.params.device != "gpu":
            raise harness.Unsupported(f"tensorflow workload has no device {self.params.device!r}")
        if not gpus:
            raise harness.Unsupported(
                f"TensorFlow {tf.__version__} sees no GPU (CUDA build: {tf.test.is_built_with_cuda()}); "
                "driver, container toolkit or a GPU too old for its kernels"
            )
        tf.config.set_visible_devices(gpus[0], "GPU")
        # Memory growth: the peak we report is then what the step needed, not TF's up-front reservation.
        tf.config.experimental.set_memory_growth(gpus[0], True)
        self._gpu_details = tf.config.experimental.get_device_details(gpus[0])
        cc = self._gpu_details.get("compute_capability")
        # A physical GPU below TensorFlow's minimum compute capability is listed but gets no logical device; ops
        # "placed" on it then run on the CPU (soft placement). Require the logical device and check the probe ran
        # there, so a "gpu" cell can never time the CPU.
        if not tf.config.list_logical_devices("GPU"):
            raise harness.Unsupported(
                f"TensorFlow {tf.__version__} lists a GPU (cc {cc}) but made no logical device for it "
                "(below its minimum compute capability, or no kernels for it)"
            )
        try:
            with tf.device("/GPU:0"):
                probe = tf.linalg.matmul(tf.ones([8, 8]), tf.ones([8, 8]))
            probe.numpy()
        except tf.errors.OpError as exc:
            if any(m in str(exc) for m in NO_KERNEL_MARKERS):
                raise harness.Unsupported(f"TensorFlow {tf.__version__} has no kernels for this GPU (cc {cc})") from exc
            raise
        if "GPU" not in probe.device.upper():
            raise harness.Unsupported(f"TensorFlow placed the GPU probe on {probe.device!r}, not a GPU (cc {cc})")

    def set_precision(self) -> None:
        p = self.params
        if p.precision == "tf32":
            cc = self._gpu_details.get("compute_capability") or (0, 0)
            if tuple(cc) < (8, 0):
                raise harness.Unsupported(f"TF32 needs compute capability 8.0 or later; this GPU is {cc}")
        # TensorFlow's default is TF32 on: set it either way, never rely on it.
        tf.config.experimental.enable_tensor_float_32_execution(p.precision == "tf32")
        self._compute_dtype = tf.bfloat16 if p.precision == "bf16" else tf.float32
        self._traced: dict[str, str] = {}

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        tf32 = bool(tf.config.experimental.tensor_float_32_execution_enabled())
        switches: dict[str, Any] = {"tensor_float_32_execution_enabled": tf32, **self._traced}
        switches["jit_compile"] = bool(self._train_step._jit_compile)  # the step as built, not the impl's name
        if self.impl_used in ("fused", "keras-loop"):
            lstm = self._model.layers[1]
            switches["dtype_policy"] = lstm.dtype_policy.name
            switches["variable_dtype"] = lstm.variable_dtype
        # TF32 only exists on a GPU: on a CPU the flag changes nothing (a tf32 cell is refused there).
        on_gpu = self.params.device == "gpu"
        return harness.mode_from(tf32=tf32 and on_gpu, bf16=self._traced.get("lstm_output") == "bfloat16"), switches

    def build(self, weights: harness.Weights) -> None:
        p = self.params
        self._device = "/GPU:0" if p.device == "gpu" else "/CPU:0"
        with tf.device(self._device):
            if self.impl_used == "fused":
                self._build_keras(weights)
            else:
                self._build_loop(weights)
        lr = tf.constant(p.lr, tf.float32)
        variables = self.variables

        @tf.function(jit_compile=self.impl_used == "xla")  # XLA compiles on the first call: the first probe step
        def train_step(tokens: tf.Tensor, labels: tf.Tensor) -> tf.Tensor:
            with tf.GradientTape() as tape:
                logits = self._forward(tokens)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
            grads = tape.gradient(loss, variables)
            for var, grad in zip(variables, grads, strict=True):
                if isinstance(grad, tf.IndexedSlices):  # the embedding: update only the rows looked up
                    var.scatter_sub(tf.IndexedSlices(grad.values * lr, grad.indices, grad.dense_shape))
                else:
                    var.assign_sub(grad * lr)
            return loss  # read before the updates (tf.function keeps program order)

        self._train_step = train_step

    def _build_keras(self, w: harness.Weights) -> None:
        p = self.params
        if p.device == "cpu":
            self.impl_used = "keras-loop"  # no cuDNN on a CPU: say which path really ran
        policy = "mixed_bfloat16" if self._compute_dtype == tf.bfloat16 else "float32"  # decided in set_precision
        emb = keras.layers.Embedding(p.vocab, p.embed, dtype=policy)
        lstm = keras.layers.LSTM(p.hidden, use_cudnn=True if p.device == "gpu" else "auto", dtype=policy)
        dense = keras.layers.Dense(p.classes, dtype=policy)
        self._model = keras.Sequential([
            keras.Input(shape=(p.seq_len,), batch_size=p.batch, dtype="int32"), emb, lstm, dense,
        ])
        emb.set_weights([w.embedding])
        lstm.set_weights([w.kernel, w.recurrent_kernel, w.bias])  # Keras' layout is the canonical one
        dense.set_weights([w.dense_kernel, w.dense_bias])
        self.variables = [v.value for v in self._model.trainable_variables]

        def forward(tokens: tf.Tensor) -> tf.Tensor:
            h = lstm(emb(tokens, training=True), training=True)
            self._traced["lstm_output"] = h.dtype.name  # recorded as traced: the dtype the graph computes in
            return tf.cast(dense(h, training=True), tf.float32)  # the loss in float32, as Keras does

        self._forward = forward

    def _build_loop(self, w: harness.Weights) -> None:
        names = ("embedding", "kernel", "recurrent_kernel", "bias", "dense_kernel", "dense_bias")
        self._vars = {n: tf.Variable(getattr(w, n), name=n) for n in names}
        self.variables = list(self._vars.values())
        self._forward = self._loop_forward

    def _loop_forward(self, tokens: tf.Tensor) -> tf.Tensor:
        # bf16: float32 variables cast for the compute (their gradients come back float32); a no-op for float32.
        # The embedding rows are cast after the gather, so the update stays sparse and no [vocab, E] copy is made.
        v = {k: tf.cast(x, self._compute_dtype) for k, x in self._vars.items() if k != "embedding"}
        x = tf.cast(tf.gather(self._vars["embedding"], tokens), self._compute_dtype)  # [B, T, E]
        xk = tf.einsum("bte,eg->tbg", x, v["kernel"]) + v["bias"]  # all input projections at once, time-major
        batch = tf.shape(tokens)[0]
        zeros = tf.zeros([batch, self.params.hidden], self._compute_dtype)

        def cell(state: tuple[tf.Tensor, tf.Tensor], xk_t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            h, c = state
            i, f, g, o = tf.split(xk_t + tf.linalg.matmul(h, v["recurrent_kernel"]), 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            return tf.sigmoid(o) * tf.tanh(c), c

        h_last, _ = tf.foldl(cell, xk, initializer=(zeros, zeros))
        self._traced["lstm_output"] = h_last.dtype.name
        return tf.cast(tf.linalg.matmul(h_last, v["dense_kernel"]) + v["dense_bias"], tf.float32)

    def canonical_weights(self) -> harness.Weights:
        # Both paths keep their variables in the canonical order and layout (Keras' LSTM layout is the canonical one).
        return harness.Weights(*(np.asarray(v.numpy(), np.float32) for v in self.variables))

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        with tf.device(self._device):
            return tf.constant(tokens), tf.constant(labels)

    def step(self, batch: Any) -> Any:
        return self._train_step(*batch)

    def sync(self) -> None:
        # .numpy() of a value computed after everything queued blocks until the device has finished.
        tf.reduce_sum(self.variables[-1]).numpy()

    def loss_value(self, loss: Any) -> float:
        return float(loss.numpy())

    def param_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.variables)

    def peak_memory_bytes(self) -> int | None:
        if self.params.device != "gpu":
            return None
        return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])


if __name__ == "__main__":
    raise SystemExit(harness.run(TensorFlowLSTM))
