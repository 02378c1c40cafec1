"""JAX: Embedding -> LSTM -> last step -> Dense, plain SGD. Model, step and sync only.

The whole training step (forward, backward, update) is one jit-compiled XLA program; the parameters are donated so
the update happens in place on the device. Impls:
scan:          the cell under jax.lax.scan (XLA fuses it; no cuDNN).
scan-unrollK:  the same scan with unroll=K (e.g. scan-unroll8): fewer loop iterations, larger fused bodies.
cudnn:         jax.experimental.rnn.lstm, cuDNN's fused LSTM (what Keras 3's JAX backend calls); GPU only.
Precision: fp32 sets jax_default_matmul_precision "highest" (and the cuDNN RNN's precision HIGHEST, which turns its
TF32 off); tf32 sets "tensorfloat32" (HIGH for cuDNN); bf16 keeps float32 parameters and casts them to bfloat16
inside the step (the jmp-style policy: bf16 compute, float32 master weights and loss), scan impls only. The
read-back is the traced step itself: every dot_general's operand dtype and precision, and the cuDNN RNN's TF32 flag.
"""

from __future__ import annotations

import os
import re

# Before jax is imported: JAX would otherwise reserve 75% of GPU memory at start, which hides the real peak and
# makes an OOM depend on that fraction rather than on the model.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from workloads import harness

IMPLS = ("scan", "scan-unroll8", "cudnn")
UNROLL_RE = re.compile(r"scan-unroll([1-9][0-9]*)")
# jax_default_matmul_precision per precision; bf16 casts operands, and any float32 dot left stays full float32.
MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32", "bf16": "highest"}


def _cudnn_last_hidden(params: dict[str, jax.Array], x: jax.Array, precision: Any, rnn_fn: Callable) -> jax.Array:
    """Last hidden state of cuDNN's LSTM over x [B, T, E]. Its flat weights are W_ih [4H, E], W_hh [4H, H], b_ih,
    b_hh in gate order i, f, g, o; built from the canonical parameters each step, so the second bias stays a
    constant zero (not trained) and the gradients land on the canonical arrays."""
    hidden = params["recurrent_kernel"].shape[0]
    embed = params["kernel"].shape[0]
    flat = jnp.concatenate([
        params["kernel"].T.ravel(), params["recurrent_kernel"].T.ravel(), params["bias"],
        jnp.zeros((4 * hidden,), x.dtype),
    ])
    batch, steps = x.shape[0], x.shape[1]
    zeros = jnp.zeros((1, batch, hidden), x.dtype)
    seq_lengths = jnp.full((batch,), steps, jnp.int32)
    _, h_n, _ = rnn_fn(x, zeros, zeros, flat, seq_lengths, embed, hidden, 1, 0.0, False, precision=precision)
    return h_n[0]


def _scan_last_hidden(params: dict[str, jax.Array], x: jax.Array, unroll: int) -> jax.Array:
    hidden = params["recurrent_kernel"].shape[0]
    # Input projection of all steps in one matmul, time-major so scan walks the leading axis.
    xk = jnp.einsum("bte,eg->tbg", x, params["kernel"]) + params["bias"]

    def cell(carry: tuple[jax.Array, jax.Array], xk_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        h, c = carry
        z = xk_t + h @ params["recurrent_kernel"]
        i, f, g, o = jnp.split(z, 4, axis=-1)  # canonical gate order i, f, g, o
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((x.shape[0], hidden), xk.dtype)
    (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xk, unroll=unroll)
    return h


def loss_fn(
    params: dict[str, jax.Array], tokens: jax.Array, labels: jax.Array, impl: str, compute_dtype: Any,
    rnn_precision: Any = None, rnn_fn: Callable | None = None,
) -> jax.Array:
    # Mixed precision: the float32 master parameters are cast for the compute; the cast's transpose returns
    # float32 gradients. A no-op for float32.
    p = {k: v.astype(compute_dtype) for k, v in params.items()}
    x = p["embedding"][tokens]  # [B, T, E]
    if impl == "cudnn":
        from jax.experimental import rnn

        h = _cudnn_last_hidden(p, x, rnn_precision, rnn_fn or rnn.lstm)
    else:
        h = _scan_last_hidden(p, x, unroll_of(impl))
    logits = (h @ p["dense_kernel"] + p["dense_bias"]).astype(jnp.float32)  # the loss in float32, as jmp does
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()


def unroll_of(impl: str) -> int:
    m = UNROLL_RE.fullmatch(impl)
    return int(m.group(1)) if m else 1


@partial(jax.jit, static_argnames=("lr", "impl", "compute_dtype", "rnn_precision"), donate_argnums=0)
def train_step(
    params: dict[str, jax.Array], tokens: jax.Array, labels: jax.Array, lr: float, impl: str, compute_dtype: Any,
    rnn_precision: Any,
) -> tuple[dict[str, jax.Array], jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, labels, impl, compute_dtype, rnn_precision)
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss


def _equations(jaxpr: Any) -> Iterator[Any]:
    """Every equation of a jaxpr, sub-jaxprs (scan bodies, custom-vjp rules, pjit) included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def traced_precision(closed_jaxpr: Any) -> tuple[str, dict[str, Any]]:
    """What a traced step computes: the dot_general operand dtypes and precisions, and the cuDNN RNN's TF32 flag."""
    dots, rnn_tf32 = set(), set()
    for eqn in _equations(closed_jaxpr.jaxpr):
        name = eqn.primitive.name
        if name == "dot_general":
            precision = eqn.params.get("precision")
            first = precision[0] if isinstance(precision, tuple) else precision
            dtypes = "x".join(str(v.aval.dtype) for v in eqn.invars)
            dots.add(f"{dtypes}:{getattr(first, 'name', first)}")
        elif name.startswith("rnn_fwd"):
            rnn_tf32.add(bool(eqn.params.get("cudnn_allow_tf32")))
    operand_bf16 = {d.startswith("bfloat16") for d in dots}
    float32_modes = {d.split(":")[1] for d in dots if d.startswith("float32x")}
    tf32 = bool(float32_modes - {"HIGHEST"}) or True in rnn_tf32
    mode = harness.mode_from(tf32=tf32, bf16=operand_bf16 == {True})
    if operand_bf16 == {True, False} and any(d.startswith("float32x") for d in dots):
        mode = "mixed"  # some products in bfloat16, some in float32: not one of the precisions asked for
    return mode, {"dot_general": sorted(dots), "cudnn_rnn_allow_tf32": sorted(rnn_tf32)}


class JaxLSTM(harness.Framework):
    name = "jax"
    # No oom_types: JaxRuntimeError (XlaRuntimeError before) is raised for every XLA failure, so only its text
    # tells an OOM ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate ...") from other errors; cuDNN's
    # own allocation failures (the cudnn impl's workspace) are harness.LIBRARY_OOM_MARKERS.
    oom_markers = ("RESOURCE_EXHAUSTED", "Out of memory")

    def check_device(self) -> None:
        p = self.params
        impl = IMPLS[0] if p.impl == "default" else p.impl
        if impl not in IMPLS and not UNROLL_RE.fullmatch(impl):
            raise harness.Unsupported(f"jax workload offers impls {', '.join(IMPLS)} (scan-unrollK), not {p.impl!r}")
        self.impl_used = impl
        if p.device == "cpu":
            jax.config.update("jax_platforms", "cpu")  # backends start lazily, so this still hides any GPU
            self.device = jax.devices("cpu")[0]
            if impl == "cudnn":
                raise harness.Unsupported("jax impl cudnn is jax.experimental.rnn.lstm: cuDNN only, no CPU kernel")
            return
        if p.device != "gpu":
            raise harness.Unsupported(f"jax workload supports devices cpu and gpu, not {p.device!r}")
        try:
            self.device = jax.devices("gpu")[0]
        except RuntimeError as exc:
            raise harness.Unsupported(f"jax {jax.__version__} sees no usable GPU: {exc}") from exc

    def set_precision(self) -> None:
        p = self.params
        if p.precision == "bf16" and self.impl_used == "cudnn":
            raise harness.Unsupported("jax.experimental.rnn.lstm has no bfloat16 path (jax raises NotImplementedError)")
        if p.precision == "tf32":
            cc = float(getattr(self.device, "compute_capability", "0") or 0)
            if cc < 8.0:
                raise harness.Unsupported(f"TF32 needs compute capability 8.0 or later; this GPU is {cc}")
        jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[p.precision])
        self.compute_dtype = jnp.bfloat16 if p.precision == "bf16" else jnp.float32
        self.rnn_precision = "highest" if p.precision == "fp32" else ("high" if p.precision == "tf32" else None)

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        tokens, labels = self._probe_batch

        def loss(state: dict[str, jax.Array]) -> jax.Array:
            return loss_fn(state, tokens, labels, self.impl_used, self.compute_dtype, self.rnn_precision)

        mode, switches = traced_precision(jax.make_jaxpr(jax.value_and_grad(loss))(self.state))
        switches["jax_default_matmul_precision"] = jax.config.jax_default_matmul_precision
        switches["compute_dtype"] = jnp.dtype(self.compute_dtype).name
        return mode, switches

    def build(self, weights: harness.Weights) -> None:
        self.state = {k: jax.device_put(v, self.device) for k, v in weights.as_dict().items()}

    def canonical_weights(self) -> harness.Weights:
        return harness.Weights(**{k: np.asarray(v) for k, v in self.state.items()})

    def prepare(self, tokens: Any, labels: Any) -> Any:
        batch = jax.device_put(tokens, self.device), jax.device_put(labels, self.device)
        self._probe_batch = getattr(self, "_probe_batch", batch)
        return batch

    def step(self, batch: Any) -> Any:
        self.state, loss = train_step(self.state, *batch, lr=self.params.lr, impl=self.impl_used,
                                      compute_dtype=self.compute_dtype, rnn_precision=self.rnn_precision)
        return loss

    def sync(self) -> None:
        jax.block_until_ready(self.state)

    def loss_value(self, loss: Any) -> float:
        return float(loss)

    def param_count(self) -> int:
        return sum(int(v.size) for v in self.state.values())

    def peak_memory_bytes(self) -> int | None:
        stats = self.device.memory_stats() if self.device.platform == "gpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None

    def versions(self) -> dict[str, str | None]:
        from jax._src.lib import cuda_versions  # private, but the only place jax exposes the CUDA/cuDNN versions

        out: dict[str, str | None] = {"framework": jax.__version__, "jaxlib": jaxlib.__version__}
        if cuda_versions is not None and getattr(self, "device", None) is not None and self.device.platform == "gpu":
            out["cuda"] = _cuda_dotted(cuda_versions.cuda_runtime_get_version())
            out["cudnn"] = _cudnn_dotted(cuda_versions.cudnn_get_version())
        return out

    def device_name(self) -> str | None:
        device = getattr(self, "device", None)
        return device.device_kind if device is not None else None


def _cuda_dotted(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"  # CUDA encodes 1000 * major + 10 * minor: 12090 -> 12.9


def _cudnn_dotted(v: int) -> str:
    # cuDNN 9 encodes 10000 * major + 100 * minor + patch (92800 -> 9.28.0); cuDNN 8 used 1000 * major.
    scale = 10000 if v >= 90000 else 1000
    return f"{v // scale}.{v % scale // 100}.{v % 100}"


if __name__ == "__main__":
    raise SystemExit(harness.run(JaxLSTM))
