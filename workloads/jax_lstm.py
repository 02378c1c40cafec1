"""JAX: Embedding -> LSTM (lax.scan) -> last step -> Dense, plain SGD. Model, step and sync only.

The whole training step (forward, backward, update) is one jit-compiled XLA program; the parameters are donated so
the update happens in place on the device.
"""

from __future__ import annotations

import os

# Before jax is imported: JAX would otherwise reserve 75% of GPU memory at start, which hides the real peak and
# makes an OOM depend on that fraction rather than on the model.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import jaxlib

from workloads import harness

IMPLS = ("scan",)


def loss_fn(params: dict[str, jax.Array], tokens: jax.Array, labels: jax.Array) -> jax.Array:
    hidden = params["recurrent_kernel"].shape[0]
    x = params["embedding"][tokens]  # [B, T, E]
    # Input projection of all steps in one matmul, time-major so scan walks the leading axis.
    xk = jnp.einsum("bte,eg->tbg", x, params["kernel"]) + params["bias"]

    def cell(carry: tuple[jax.Array, jax.Array], xk_t: jax.Array) -> tuple[tuple[jax.Array, jax.Array], None]:
        h, c = carry
        z = xk_t + h @ params["recurrent_kernel"]
        i, f, g, o = jnp.split(z, 4, axis=-1)  # canonical gate order i, f, g, o
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), None

    zeros = jnp.zeros((tokens.shape[0], hidden), xk.dtype)
    (h, _), _ = jax.lax.scan(cell, (zeros, zeros), xk)
    logits = h @ params["dense_kernel"] + params["dense_bias"]
    logp = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(logp, labels[:, None], axis=1).mean()


@partial(jax.jit, static_argnames="lr", donate_argnums=0)
def train_step(
    params: dict[str, jax.Array], tokens: jax.Array, labels: jax.Array, lr: float
) -> tuple[dict[str, jax.Array], jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(params, tokens, labels)
    return jax.tree_util.tree_map(lambda p, g: p - lr * g, params, grads), loss


class JaxLSTM(harness.Framework):
    name = "jax"
    # No oom_types: JaxRuntimeError (XlaRuntimeError before) is raised for every XLA failure, so only its text
    # tells an OOM ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate ...") from other errors.
    oom_markers = ("RESOURCE_EXHAUSTED", "Out of memory")

    def check_device(self) -> None:
        p = self.params
        impl = IMPLS[0] if p.impl == "default" else p.impl
        if impl not in IMPLS:
            raise harness.Unsupported(f"jax workload offers impl {', '.join(IMPLS)}, not {p.impl!r}")
        self.impl_used = impl
        if p.device == "cpu":
            jax.config.update("jax_platforms", "cpu")  # backends start lazily, so this still hides any GPU
            self.device = jax.devices("cpu")[0]
            return
        if p.device != "gpu":
            raise harness.Unsupported(f"jax workload supports devices cpu and gpu, not {p.device!r}")
        try:
            self.device = jax.devices("gpu")[0]
        except RuntimeError as exc:
            raise harness.Unsupported(f"jax {jax.__version__} sees no usable GPU: {exc}") from exc
        # Same FP32 arithmetic on every GPU generation (XLA would otherwise use TF32 from Ampere on).
        jax.config.update("jax_default_matmul_precision", "highest")

    def build(self, weights: harness.Weights) -> None:
        self.state = {k: jax.device_put(v, self.device) for k, v in weights.as_dict().items()}

    def prepare(self, tokens: Any, labels: Any) -> Any:
        return jax.device_put(tokens, self.device), jax.device_put(labels, self.device)

    def step(self, batch: Any) -> Any:
        self.state, loss = train_step(self.state, *batch, lr=self.params.lr)
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
