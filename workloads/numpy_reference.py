"""NumPy LSTM with a hand-written backward pass: the end-to-end test framework and the equivalence oracle.

CPU only, float32, deterministic. The maths follows the canonical layout of harness.Weights
(x @ kernel, gates i, f, g, o, one bias vector).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workloads import harness


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # tanh form: no overflow warnings for large |x|


class NumpyLSTM:
    """Model and training step, usable on its own (tests, report equivalence) and through the harness."""

    def __init__(self, weights: harness.Weights, lr: float) -> None:
        self.w = {k: v.copy() for k, v in weights.as_dict().items()}
        self.lr = np.float32(lr)

    def param_count(self) -> int:
        return sum(int(v.size) for v in self.w.values())

    def forward(self, tokens: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, Any]]:
        w = self.w
        b, t_len = tokens.shape
        h_dim = w["recurrent_kernel"].shape[0]
        x = w["embedding"][tokens]  # [B, T, E]
        # Input projection of every step at once, as one 2-D matmul: NumPy runs a 3-D @ 2-D product as a loop of
        # small products, 5x slower at hidden 1024 (benchmarks/host_reference.py).
        xk = (x.reshape(b * t_len, -1) @ w["kernel"]).reshape(b, t_len, -1) + w["bias"]
        h = np.zeros((b, h_dim), np.float32)
        c = np.zeros((b, h_dim), np.float32)
        cache = []
        for t in range(t_len):
            z = xk[:, t] + h @ w["recurrent_kernel"]
            i = _sigmoid(z[:, :h_dim])
            f = _sigmoid(z[:, h_dim : 2 * h_dim])
            g = np.tanh(z[:, 2 * h_dim : 3 * h_dim])
            o = _sigmoid(z[:, 3 * h_dim :])
            c_prev, h_prev = c, h
            c = f * c_prev + i * g
            tc = np.tanh(c)
            h = o * tc
            cache.append((i, f, g, o, c_prev, h_prev, tc))
        logits = h @ w["dense_kernel"] + w["dense_bias"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        logp = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-logp[np.arange(b), labels].mean())
        return loss, {"x": x, "h": h, "logp": logp, "steps": cache}

    def step(self, tokens: np.ndarray, labels: np.ndarray) -> float:
        loss, fwd = self.forward(tokens, labels)
        grads = self.backward(tokens, labels, fwd)
        for k, g in grads.items():
            if k == "embedding":
                continue
            self.w[k] -= self.lr * g
        # Sparse update of the embedding rows that were looked up: a repeated id's gradients are summed first (as
        # every framework does), then applied once; adding them to the weights one by one would round each time.
        rows, where = np.unique(tokens, return_inverse=True)
        summed = np.zeros((rows.size, grads["embedding"].shape[-1]), np.float32)
        np.add.at(summed, where.reshape(-1), grads["embedding"].reshape(-1, summed.shape[1]))
        self.w["embedding"][rows] -= self.lr * summed
        return loss

    def backward(self, tokens: np.ndarray, labels: np.ndarray, fwd: dict[str, Any]) -> dict[str, np.ndarray]:
        w = self.w
        b, t_len = tokens.shape
        h_dim = w["recurrent_kernel"].shape[0]
        dlogits = np.exp(fwd["logp"])
        dlogits[np.arange(b), labels] -= 1.0
        dlogits /= b
        grads = {
            "dense_kernel": fwd["h"].T @ dlogits,
            "dense_bias": dlogits.sum(axis=0),
        }
        dh = dlogits @ w["dense_kernel"].T
        dc = np.zeros_like(dh)
        dz_all = np.empty((b, t_len, 4 * h_dim), np.float32)
        for t in reversed(range(t_len)):
            i, f, g, o, c_prev, _h_prev, tc = fwd["steps"][t]
            do = dh * tc
            dc = dc + dh * o * (1.0 - tc * tc)
            di = dc * g
            dg = dc * i
            df = dc * c_prev
            dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
            dz_all[:, t] = dz
            dh = dz @ w["recurrent_kernel"].T
            dc = dc * f
        h_prev_all = np.stack([s[5] for s in fwd["steps"]], axis=1)  # [B, T, H]
        # Sums over batch and time as one BLAS matmul each ([B*T, H]^T @ [B*T, 4H]): np.einsum without `optimize`
        # runs these as a plain C loop (benchmarks/host_reference.py).
        dz_flat = dz_all.reshape(b * t_len, -1)
        grads["recurrent_kernel"] = h_prev_all.reshape(b * t_len, -1).T @ dz_flat
        grads["kernel"] = fwd["x"].reshape(b * t_len, -1).T @ dz_flat
        grads["bias"] = dz_all.sum(axis=(0, 1))
        grads["embedding"] = (dz_flat @ w["kernel"].T).reshape(b, t_len, -1)  # [B, T, E], per looked-up row
        return {k: v.astype(np.float32, copy=False) for k, v in grads.items()}


class NumpyReference(harness.Framework):
    name = "numpy-reference"
    oom_types = (MemoryError,)
    embedding_update = "sparse"  # np.add.at on the looked-up rows

    def versions(self) -> dict[str, str | None]:
        return {"framework": np.__version__}

    def device_name(self) -> str | None:
        return "cpu"

    def build(self, weights: harness.Weights) -> None:
        self.model = NumpyLSTM(weights, self.params.lr)
        self.impl_used = "loop"

    def step(self, batch: Any) -> float:
        return self.model.step(*batch)

    def canonical_weights(self) -> harness.Weights:
        return harness.Weights(**self.model.w)

    def param_count(self) -> int:
        return self.model.param_count()


if __name__ == "__main__":
    raise SystemExit(harness.run(NumpyReference))
