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
        # Same FP32 arithmetic everywhere (XLA would otherwise use TF32 matmuls on Ampere and later GPUs).
        jax.config.update("jax_default_matmul_precision", "highest")
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

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        return jax.device_put(tokens, self.device), jax.device_put(labels, self.device)

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
