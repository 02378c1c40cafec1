"""Keras 3: Embedding -> LSTM -> Dense, plain SGD, on the backend named by the variant. Model, step and sync only.

impl "fused" (default) on GPU is LSTM(use_cudnn=True), and a one-batch forward probe proves the cuDNN kernel really
runs (the tensorflow and jax backends raise when it cannot; Keras 3.15's torch backend falls back to its own loop
silently, so there the probe watches its cuDNN call). A fused cell that cannot get cuDNN is "unsupported", never a
slow loop timed under the fused label. On CPU no cuDNN exists: fused runs LSTM(use_cudnn=False), the same code as
impl "loop", and the result records "loop". Each step is one model.train_on_batch call (the backend's compiled
train function; XLA where Keras allows it).
Precision: the Keras dtype policy is set explicitly ("float32", or "mixed_bfloat16" for bf16: float32 variables,
bfloat16 compute, Keras' mixed precision) and the backend's TF32 switch too (TensorFlow's
enable_tensor_float_32_execution, JAX's jax_default_matmul_precision, PyTorch's fp32_precision flags). The read-back
is the policy, the backend's switch, and the dtype the LSTM layer really outputs.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

import numpy as np

from workloads import harness

BACKENDS = ("tensorflow", "jax", "torch")
IMPLS = ("fused", "loop")


class _Backend:
    """What differs per backend: device setup, input placement, sync, memory, versions, OOM types."""

    name = "?"
    oom_types: tuple[type[BaseException], ...] = ()
    oom_markers: tuple[str, ...] = ()

    def __init__(self, gpu: bool) -> None:
        self.gpu = gpu

    def to_device(self, a: np.ndarray) -> Any:
        return a

    def sync(self, model: Any) -> None:
        pass

    def peak_memory_bytes(self) -> int | None:
        return None

    def versions(self) -> dict[str, str | None]:
        return {}

    def device_name(self) -> str | None:
        return "cpu"

    def set_tf32(self, on: bool) -> None:
        raise NotImplementedError

    def read_tf32(self) -> tuple[bool, dict[str, Any]]:
        raise NotImplementedError

    def probe_cudnn(self, model: Any, tokens: np.ndarray) -> None:
        """Raise Unsupported unless a forward pass of `model` (built with use_cudnn=True) runs the cuDNN kernel."""
        try:
            model(tokens)
        except ValueError as exc:  # Keras: "use_cudnn=True was specified, but cuDNN is not supported ..."
            if "use_cudnn=True" not in str(exc):
                raise
            raise harness.Unsupported(f"keras ({self.name}): no cuDNN LSTM here: {exc}") from exc


class _TensorFlow(_Backend):
    name = "tensorflow"

    def __init__(self, gpu: bool) -> None:
        super().__init__(gpu)
        import tensorflow as tf

        self.tf = tf
        self.oom_types = (tf.errors.ResourceExhaustedError,)
        self.oom_markers = ("OOM when allocating",)
        if gpu:
            gpus = tf.config.list_physical_devices("GPU")
            if not gpus:
                raise harness.Unsupported(f"tensorflow {tf.__version__} sees no usable GPU")
            # Grow on demand: TF would otherwise take nearly all GPU memory up front and hide the real peak.
            tf.config.experimental.set_memory_growth(gpus[0], True)
            self.device = "/GPU:0"
            self.gpu_details = tf.config.experimental.get_device_details(gpus[0])
        else:
            self.device = "/CPU:0"

    def set_tf32(self, on: bool) -> None:
        self.tf.config.experimental.enable_tensor_float_32_execution(on)  # TensorFlow's default is on

    def read_tf32(self) -> tuple[bool, dict[str, Any]]:
        on = bool(self.tf.config.experimental.tensor_float_32_execution_enabled())
        return on, {"tensor_float_32_execution_enabled": on}

    def to_device(self, a: np.ndarray) -> Any:
        with self.tf.device(self.device):
            return self.tf.identity(self.tf.constant(a))

    def sync(self, model: Any) -> None:
        if self.gpu:
            self.tf.test.experimental.sync_devices()

    def peak_memory_bytes(self) -> int | None:
        return int(self.tf.config.experimental.get_memory_info("GPU:0")["peak"]) if self.gpu else None

    def versions(self) -> dict[str, str | None]:
        info = self.tf.sysconfig.get_build_info()
        return {"tensorflow": self.tf.__version__, "cuda": info.get("cuda_version"), "cudnn": info.get("cudnn_version")}

    def device_name(self) -> str | None:
        return self.gpu_details.get("device_name", "GPU") if self.gpu else "cpu"


class _Jax(_Backend):
    name = "jax"
    oom_markers = ("RESOURCE_EXHAUSTED", "Out of memory")  # the exception type is shared by all XLA errors

    def __init__(self, gpu: bool) -> None:
        super().__init__(gpu)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # see jax_lstm.py: show the real peak
        import jax

        self.jax = jax
        if not gpu:
            jax.config.update("jax_platforms", "cpu")
            self.device = jax.devices("cpu")[0]
            return
        try:
            self.device = jax.devices("gpu")[0]
        except RuntimeError as exc:
            raise harness.Unsupported(f"jax {jax.__version__} sees no usable GPU: {exc}") from exc

    def set_tf32(self, on: bool) -> None:
        self.jax.config.update("jax_default_matmul_precision", "tensorfloat32" if on else "highest")

    def read_tf32(self) -> tuple[bool, dict[str, Any]]:
        value = self.jax.config.jax_default_matmul_precision
        return value not in ("highest", "float32"), {"jax_default_matmul_precision": value}

    def to_device(self, a: np.ndarray) -> Any:
        return self.jax.device_put(a, self.device)

    def sync(self, model: Any) -> None:
        self.jax.block_until_ready([v.value for v in model.variables])

    def peak_memory_bytes(self) -> int | None:
        stats = self.device.memory_stats() if self.gpu else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def versions(self) -> dict[str, str | None]:
        import jaxlib

        return {"jax": self.jax.__version__, "jaxlib": jaxlib.__version__}

    def device_name(self) -> str | None:
        return self.device.device_kind


class _Torch(_Backend):
    name = "torch"
    oom_markers = ("CUDA out of memory", "CUDA error: out of memory")

    def __init__(self, gpu: bool) -> None:
        super().__init__(gpu)
        import torch

        self.torch = torch
        self.oom_types = (torch.OutOfMemoryError,)
        if gpu:
            if not torch.cuda.is_available():
                raise harness.Unsupported(
                    f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU: "
                    "torch.cuda.is_available() is False"
                )
            torch.cuda.reset_peak_memory_stats()
        self.device = torch.device("cuda", 0) if gpu else torch.device("cpu")

    def set_tf32(self, on: bool) -> None:
        from workloads.torch_lstm import set_tf32

        set_tf32(self.torch, on)

    def read_tf32(self) -> tuple[bool, dict[str, Any]]:
        from workloads.torch_lstm import read_tf32

        return read_tf32(self.torch)

    def to_device(self, a: np.ndarray) -> Any:
        return self.torch.from_numpy(a).to(self.device)

    def sync(self, model: Any) -> None:
        if self.gpu:
            self.torch.cuda.synchronize(self.device)

    def peak_memory_bytes(self) -> int | None:
        return int(self.torch.cuda.max_memory_allocated(self.device)) if self.gpu else None

    def versions(self) -> dict[str, str | None]:
        t = self.torch
        cudnn = t.backends.cudnn.version() if t.backends.cudnn.is_available() else None
        return {"torch": t.__version__, "cuda": t.version.cuda, "cudnn": str(cudnn) if cudnn else None}

    def device_name(self) -> str | None:
        return self.torch.cuda.get_device_name(self.device) if self.gpu else "cpu"

    def watch_cudnn(self) -> None:
        """Count every call of Keras' torch cuDNN LSTM from now on (Keras internals, pinned to 3.15.1 by the image).

        backend.lstm catches any failure of that call and runs a Python loop instead, without a word, at any step:
        the count lets the workload prove the fused kernel ran in every step it times.
        """
        rnn = importlib.import_module("keras.src.backend.torch.rnn")  # the package re-exports a function `rnn`
        if getattr(rnn._cudnn_lstm, "lstm_bench_watched", False):
            return
        original = rnn._cudnn_lstm

        def watched(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            self.cudnn_calls += 1
            return out

        watched.lstm_bench_watched = True  # type: ignore[attr-defined]
        rnn._cudnn_lstm = watched

    cudnn_calls = 0

    def probe_cudnn(self, model: Any, tokens: np.ndarray) -> None:
        self.watch_cudnn()
        before = self.cudnn_calls
        super().probe_cudnn(model, tokens)
        if self.cudnn_calls == before:
            raise harness.Unsupported("keras (torch): the cuDNN LSTM did not run (Keras fell back to its torch loop)")

    def check_cudnn_ran(self, before: int) -> None:
        """Raise unless the cuDNN LSTM ran since the count was `before` (one timed step)."""
        if self.cudnn_calls == before:
            raise RuntimeError("keras (torch): the cuDNN LSTM did not run in this step: Keras fell back to its "
                               "torch loop mid-run, so this cell cannot be timed as fused")


_BACKEND_CLASSES: dict[str, type[_Backend]] = {"tensorflow": _TensorFlow, "jax": _Jax, "torch": _Torch}


class KerasLSTM(harness.Framework):
    name = "keras"

    def check_device(self) -> None:
        p = self.params
        backend = p.variant or BACKENDS[0]
        if backend not in BACKENDS:
            raise harness.Unsupported(f"keras workload supports backends {', '.join(BACKENDS)}, not {backend!r}")
        impl = IMPLS[0] if p.impl == "default" else p.impl
        if impl not in IMPLS:
            raise harness.Unsupported(f"keras workload offers impls {', '.join(IMPLS)}, not {p.impl!r}")
        if p.device not in ("cpu", "gpu"):
            raise harness.Unsupported(f"keras workload supports devices cpu and gpu, not {p.device!r}")
        self.impl_used = impl
        # TensorFlow hands Keras' optimizer the embedding gradient as IndexedSlices (scatter_sub of the looked-up
        # rows); JAX and PyTorch give a dense [vocab, E] gradient.
        self.embedding_update = "sparse" if backend == "tensorflow" else "dense"
        # Keras reads the backend once, at import; the GPUs must be hidden before any backend initialises CUDA.
        os.environ["KERAS_BACKEND"] = backend
        if p.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        self.backend = _BACKEND_CLASSES[backend](gpu=p.device == "gpu")
        self.oom_types, self.oom_markers = self.backend.oom_types, self.backend.oom_markers
        self.keras: ModuleType = importlib.import_module("keras")

    def set_precision(self) -> None:
        p = self.params
        self.backend.set_tf32(p.precision == "tf32")
        self.keras.config.set_dtype_policy("mixed_bfloat16" if p.precision == "bf16" else "float32")

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        tf32, switches = self.backend.read_tf32()
        lstm = self.lstm
        # One untimed forward of the embedding and the LSTM: the dtype the recurrent part really computes in.
        probe = np.zeros((self.params.batch, self.params.seq_len), np.int32)
        out = lstm(self.embedding(self.backend.to_device(probe)))
        switches.update({
            "global_dtype_policy": self.keras.config.dtype_policy().name,
            "lstm_dtype_policy": lstm.dtype_policy.name,
            "lstm_variable_dtype": lstm.variable_dtype,
            "lstm_output_dtype": self.keras.backend.standardize_dtype(out.dtype),
        })
        bf16 = switches["lstm_output_dtype"] == "bfloat16"
        return harness.mode_from(tf32=tf32 and self.params.device == "gpu", bf16=bf16), switches

    def _model(self, w: harness.Weights, use_cudnn: bool) -> Any:
        keras, p = self.keras, self.params
        tokens = keras.Input(shape=(p.seq_len,), batch_size=p.batch, dtype="int32")
        embedding = keras.layers.Embedding(p.vocab, p.embed)
        lstm = keras.layers.LSTM(p.hidden, use_cudnn=use_cudnn)  # returns the last step's hidden state
        dense = keras.layers.Dense(p.classes)
        model = keras.Model(tokens, dense(lstm(embedding(tokens))))
        self.embedding, self.lstm, self.dense = embedding, lstm, dense
        embedding.set_weights([w.embedding])
        lstm.set_weights([w.kernel, w.recurrent_kernel, w.bias])  # Keras: [E,4H], [H,4H], [4H], gates i,f,c,o
        dense.set_weights([w.dense_kernel, w.dense_bias])
        return model

    def build(self, weights: harness.Weights) -> None:
        if self.impl_used == "fused" and self.params.device == "cpu":
            self.impl_used = "loop"  # no cuDNN on a CPU: run, and record, the backend's recurrent loop
        model = self._model(weights, use_cudnn=self.impl_used == "fused")
        # Only Keras' torch backend falls back silently; the others raise when cuDNN cannot run.
        self._watch_steps = self.impl_used == "fused" and isinstance(self.backend, _Torch)
        if self.impl_used == "fused":
            self.backend.probe_cudnn(model, np.zeros((self.params.batch, self.params.seq_len), np.int32))
        model.compile(
            optimizer=self.keras.optimizers.SGD(learning_rate=self.params.lr),
            loss=self.keras.losses.SparseCategoricalCrossentropy(from_logits=True),  # mean over the batch
        )
        self.model = model

    def canonical_weights(self) -> harness.Weights:
        # Keras' layout is the canonical one: [E,4H], [H,4H], [4H], gates i, f, c, o.
        layers = (self.embedding, self.lstm, self.dense)
        return harness.Weights(*(np.asarray(w, np.float32) for layer in layers for w in layer.get_weights()))

    def prepare(self, tokens: Any, labels: Any) -> Any:
        return self.backend.to_device(tokens), self.backend.to_device(labels)

    def step(self, batch: Any) -> Any:
        # train_on_batch resets the loss tracker first, so it returns this batch's (pre-update) loss.
        if not self._watch_steps:
            return self.model.train_on_batch(*batch)
        before = self.backend.cudnn_calls  # a Python int: no device work, no sync
        loss = self.model.train_on_batch(*batch)
        self.backend.check_cudnn_ran(before)  # every step, not only the build-time probe (Keras may fall back later)
        return loss

    def sync(self) -> None:
        self.backend.sync(self.model)

    def param_count(self) -> int:
        return sum(int(np.prod(v.shape)) for v in self.model.trainable_weights)

    def peak_memory_bytes(self) -> int | None:
        return self.backend.peak_memory_bytes()

    def versions(self) -> dict[str, str | None]:
        if not hasattr(self, "keras"):
            return {}
        out: dict[str, str | None] = {"framework": self.keras.__version__, "backend": self.keras.backend.backend()}
        out.update(self.backend.versions())
        if hasattr(self, "model"):
            out["jit_compile"] = str(self.model.jit_compile)
        return out

    def device_name(self) -> str | None:
        return self.backend.device_name() if hasattr(self, "backend") else None


if __name__ == "__main__":
    raise SystemExit(harness.run(KerasLSTM))
