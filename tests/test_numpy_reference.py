"""The NumPy oracle: its hand-written backward pass matches finite differences; the harness is seeded."""

from __future__ import annotations

import numpy as np

from workloads import harness
from workloads.numpy_reference import NumpyLSTM


def test_backward_matches_finite_differences() -> None:
    p = harness.Params(framework="t", hidden=6, batch=3, seq_len=4, vocab=11, classes=5)
    model = NumpyLSTM(harness.make_weights(p), lr=0.1)
    model.w = {k: v.astype(np.float64) for k, v in model.w.items()}
    tokens, labels = harness.make_batches(p)[0]
    _, fwd = model.forward(tokens, labels)
    grads = model.backward(tokens, labels, fwd)
    dense_emb = np.zeros_like(model.w["embedding"])
    np.add.at(dense_emb, tokens, grads["embedding"])
    grads["embedding"] = dense_emb
    rng = np.random.default_rng(0)
    eps, worst = 1e-6, 0.0
    for name, w in model.w.items():
        for _ in range(6):
            idx = tuple(int(rng.integers(0, s)) for s in w.shape)
            old = w[idx]
            w[idx] = old + eps
            plus, _ = model.forward(tokens, labels)
            w[idx] = old - eps
            minus, _ = model.forward(tokens, labels)
            w[idx] = old
            worst = max(worst, abs((plus - minus) / (2 * eps) - grads[name][idx]))
    assert worst < 1e-6


def test_sgd_step_lowers_the_loss_and_counts_parameters() -> None:
    p = harness.Params(framework="t", hidden=16, batch=8, seq_len=6, vocab=50, classes=5, lr=0.5)
    model = NumpyLSTM(harness.make_weights(p), lr=p.lr)
    tokens, labels = harness.make_batches(p)[0]
    first = model.step(tokens, labels)
    for _ in range(20):
        last = model.step(tokens, labels)
    assert last < first
    assert model.param_count() == harness.expected_param_count(p)


def test_seeded_weights_and_data_are_reproducible() -> None:
    p = harness.Params(framework="t", hidden=8, vocab=20, batch=2, seq_len=3)
    a, b = harness.make_weights(p), harness.make_weights(p)
    assert all(np.array_equal(x, y) for x, y in zip(a.as_dict().values(), b.as_dict().values(), strict=True))
    assert np.array_equal(harness.make_batches(p)[0][0], harness.make_batches(p)[0][0])
    other = harness.make_weights(harness.Params(framework="t", hidden=8, vocab=20, seed=1))
    assert not np.array_equal(a.kernel, other.kernel)
