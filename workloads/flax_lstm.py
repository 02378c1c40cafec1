"""Flax (linen) on JAX: Embed -> nn.RNN(LSTM cell) -> last step -> Dense, plain SGD. Model, step and sync only.

Made with `python -m orchestrator new flax` and filled in from docs/adding-a-framework.md. The whole training step
(forward, backward, update) is one jit-compiled XLA program with the parameters donated, as in the jax row; what
differs is the model code: Flax's own LSTM cells rather than a hand-written lax.scan.

impls: `optimized` = nn.OptimizedLSTMCell (the four gates' matmuls fused into one per step), `cell` =
nn.LSTMCell (one Dense per gate). Flax's cells have one bias per gate (on the hidden projection), so the
canonical single 4H bias maps onto them exactly; nothing is frozen.
"""

from __future__ import annotations

import os

# Before jax is imported: JAX would otherwise reserve 75% of GPU memory at start, which hides the real peak and
# makes an OOM depend on that fraction rather than on the model.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from collections.abc import Iterator
from functools import partial
from typing import Any

import flax
import jax
import jax.numpy as jnp
import jaxlib
import numpy as np
from flax import linen as nn

from workloads import harness

IMPLS = {"optimized": nn.OptimizedLSTMCell, "cell": nn.LSTMCell}
# jax_default_matmul_precision per precision. bf16 (Flax's modules with dtype=bfloat16) is not offered yet.
MATMUL_PRECISION = {"fp32": "highest", "tf32": "tensorfloat32"}
GATES = harness.GATE_ORDER  # i, f, g, o: Flax names its per-gate layers i<gate> (input) and h<gate> (hidden)


class Model(nn.Module):
    vocab: int
    hidden: int
    classes: int
    cell: type[nn.RNNCellBase]

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = nn.Embed(self.vocab, self.hidden, name="embed")(tokens)  # [B, T, H]
        # nn.RNN starts from the cell's initialize_carry: zero h and c, as the contract asks.
        # The cell is made here, so its parameters live under this module as "lstm" (nn.RNN only scans it).
        h = nn.RNN(self.cell(self.hidden, name="lstm"))(x)  # [B, T, H]
        return nn.Dense(self.classes, name="dense")(h[:, -1])


def loss_fn(params: Any, model: Model, tokens: jax.Array, labels: jax.Array) -> jax.Array:
    logp = jax.nn.log_softmax(model.apply({"params": params}, tokens))
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()  # mean cross-entropy over the batch


@partial(jax.jit, static_argnames=("model", "lr"), donate_argnums=0)
def train_step(params: Any, tokens: jax.Array, labels: jax.Array, model: Model, lr: float) -> tuple[Any, jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params, model, tokens, labels)
    # Plain SGD on every parameter; the embedding's gradient is dense (zero rows for ids not looked up), which
    # updates exactly the rows a sparse update would.
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss


def dot_products(jaxpr: Any) -> Iterator[str]:
    """Each dot_general of a traced step (the LSTM's scan body included) as "<operand dtypes>:<precision>"."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            precision = eqn.params.get("precision")
            first = precision[0] if isinstance(precision, tuple) else precision
            yield f"{'x'.join(str(v.aval.dtype) for v in eqn.invars)}:{getattr(first, 'name', first)}"
        for value in eqn.params.values():
            for sub in value if isinstance(value, tuple | list) else (value,):
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from dot_products(inner)


def flax_params(w: harness.Weights) -> dict[str, Any]:
    """The canonical weights in Flax's layout: per-gate kernels [in, H], the bias on the hidden projection."""
    h = w.recurrent_kernel.shape[0]
    lstm: dict[str, Any] = {}
    for k, gate in enumerate(GATES):
        cols = slice(k * h, (k + 1) * h)
        lstm[f"i{gate}"] = {"kernel": w.kernel[:, cols]}
        lstm[f"h{gate}"] = {"kernel": w.recurrent_kernel[:, cols], "bias": w.bias[cols]}
    return {
        "embed": {"embedding": w.embedding},
        "lstm": lstm,
        "dense": {"kernel": w.dense_kernel, "bias": w.dense_bias},
    }


def canonical_of(params: dict[str, Any]) -> harness.Weights:
    """flax_params inverted: Flax's per-gate tensors back into the canonical layout."""
    lstm = params["lstm"]

    def host(a: Any) -> np.ndarray:
        return np.asarray(a, dtype=np.float32)

    return harness.Weights(
        embedding=host(params["embed"]["embedding"]),
        kernel=np.concatenate([host(lstm[f"i{gate}"]["kernel"]) for gate in GATES], axis=1),
        recurrent_kernel=np.concatenate([host(lstm[f"h{gate}"]["kernel"]) for gate in GATES], axis=1),
        bias=np.concatenate([host(lstm[f"h{gate}"]["bias"]) for gate in GATES]),
        dense_kernel=host(params["dense"]["kernel"]),
        dense_bias=host(params["dense"]["bias"]),
    )


class FlaxLSTM(harness.Framework):
    name = "flax"
    # No oom_types: JAX raises JaxRuntimeError for every XLA failure; only its text tells an OOM from the rest.
    oom_markers = ("RESOURCE_EXHAUSTED", "Out of memory")

    def check_device(self) -> None:
        p = self.params
        impl = next(iter(IMPLS)) if p.impl == "default" else p.impl
        if impl not in IMPLS:
            raise harness.Unsupported(f"flax workload offers impl {', '.join(IMPLS)}, not {p.impl!r}")
        self.impl_used = impl
        if p.device == "cpu":
            jax.config.update("jax_platforms", "cpu")  # backends start lazily, so this still hides any GPU
            self.device = jax.devices("cpu")[0]
            return
        if p.device != "gpu":
            raise harness.Unsupported(f"flax workload supports devices cpu and gpu, not {p.device!r}")
        try:
            self.device = jax.devices("gpu")[0]
        except RuntimeError as exc:
            versions = f"flax {flax.__version__} (jax {jax.__version__})"
            raise harness.Unsupported(f"{versions} sees no usable GPU: {exc}") from exc

    def set_precision(self) -> None:
        p = self.params
        if p.precision not in MATMUL_PRECISION:
            raise harness.Unsupported(f"flax workload offers {', '.join(MATMUL_PRECISION)}, not {p.precision} "
                                      "(Flax's bfloat16 modules are not wired in)")
        if p.precision == "tf32":
            cc = float(getattr(self.device, "compute_capability", "0") or 0)
            if cc < 8.0:
                raise harness.Unsupported(f"TF32 needs compute capability 8.0 or later; this device is {cc}")
        # Explicitly: XLA would otherwise use TF32 matmuls on Ampere and later GPUs.
        jax.config.update("jax_default_matmul_precision", MATMUL_PRECISION[p.precision])

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        """The traced training step's matrix products: operand dtypes and the precision each was traced with."""
        tokens, labels = self._probe_batch
        traced = jax.make_jaxpr(jax.value_and_grad(loss_fn), static_argnums=1)(self.state, self.model, tokens, labels)
        dots = sorted(set(dot_products(traced.jaxpr)))
        bf16 = bool(dots) and all(d.startswith("bfloat16") for d in dots)
        tf32 = any(d.startswith("float32x") and not d.endswith(":HIGHEST") for d in dots)
        return harness.mode_from(tf32=tf32, bf16=bf16), {
            "dot_general": dots, "jax_default_matmul_precision": jax.config.jax_default_matmul_precision}

    def build(self, weights: harness.Weights) -> None:
        p = self.params
        self.model = Model(p.vocab, p.hidden, p.classes, IMPLS[self.impl_used])
        # Check the layout against Flax's own initialisation, so a renamed or reshaped parameter fails loudly here.
        want = jax.eval_shape(self.model.init, jax.random.key(0), jnp.zeros((1, 1), jnp.int32))["params"]
        have = flax_params(weights)
        shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), have)
        if shapes != jax.tree_util.tree_map(lambda a: tuple(a.shape), want):
            raise RuntimeError(f"flax parameter layout differs from the canonical one: {shapes}")
        self.state = jax.device_put(have, self.device)

    def param_count(self) -> int:
        return sum(int(a.size) for a in jax.tree_util.tree_leaves(self.state))

    def canonical_weights(self) -> harness.Weights:
        return canonical_of(self.state)

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        batch = jax.device_put(tokens, self.device), jax.device_put(labels, self.device)
        self._probe_batch = getattr(self, "_probe_batch", batch)
        return batch

    def step(self, batch: Any) -> Any:
        self.state, loss = train_step(self.state, *batch, model=self.model, lr=self.params.lr)
        return loss

    def sync(self) -> None:
        jax.block_until_ready(self.state)

    def loss_value(self, loss: Any) -> float:
        return float(loss)

    def versions(self) -> dict[str, str | None]:
        return {"framework": flax.__version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}

    def device_name(self) -> str | None:
        device = getattr(self, "device", None)
        return device.device_kind if device is not None else None

    def peak_memory_bytes(self) -> int | None:
        stats = self.device.memory_stats() if self.device.platform == "gpu" else None
        return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


if __name__ == "__main__":
    raise SystemExit(harness.run(FlaxLSTM))
