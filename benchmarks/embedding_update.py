"""What a dense embedding update costs against a sparse one (issue 10, item 10), on this CPU.

The frameworks differ by default: TensorFlow, Keras on TensorFlow, Theano, PyTensor and the NumPy reference update
only the looked-up rows (sparse); PyTorch, JAX, MXNet and Keras on JAX/PyTorch build a dense [vocab, E] gradient
and update the whole table. With plain SGD both are the same maths; only the cost differs. Side by side, in one
process, interleaved round by round: forward (lookup) + backward + SGD update of the embedding alone, at the 2016
sizes (batch 128, sequence 64, vocabulary 10,000), for
  numpy: np.add.at into the table (sparse) vs into a zeroed [vocab, E] buffer, then table -= lr * buffer (dense);
  torch: nn.Embedding(sparse=True) vs (sparse=False) with torch.optim.SGD (re-runs itself in the torch venv).
Prints ms per update and the dense/sparse ratio; with --step also the dense extra as a share of one full training
step of the NumpyLSTM reference at the same size (measured here too, one step: minutes at hidden 2048 on 2 cores).

usage: python benchmarks/embedding_update.py [--hidden 128 2048] [--rounds 5] [--threads 1] [--step]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH, SEQ, VOCAB, LR = 128, 64, 10000, 0.001


def numpy_pair(hidden: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    table = rng.standard_normal((VOCAB, hidden)).astype(np.float32)
    tokens = rng.integers(0, VOCAB, (BATCH, SEQ))
    grads = rng.standard_normal((BATCH, SEQ, hidden)).astype(np.float32)

    def sparse() -> None:
        np.add.at(table, tokens, -LR * grads)

    def dense() -> None:
        buffer = np.zeros_like(table)
        np.add.at(buffer, tokens, grads)
        table.__isub__(LR * buffer)

    return {"sparse": _time(sparse), "dense": _time(dense)}


def torch_pair(hidden: int) -> dict[str, float]:
    import torch

    tokens = torch.randint(0, VOCAB, (BATCH, SEQ))
    out_grad = torch.randn(BATCH, SEQ, hidden)
    result = {}
    for name, sparse in (("sparse", True), ("dense", False)):
        emb = torch.nn.Embedding(VOCAB, hidden, sparse=sparse)
        opt = torch.optim.SGD(emb.parameters(), lr=LR)

        def step(emb: torch.nn.Embedding = emb, opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)
            emb(tokens).backward(out_grad)
            opt.step()

        result[name] = _time(step)
    return result


def _time(fn: object, reps: int = 5) -> float:
    fn()  # type: ignore[operator]  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) * 1000.0 / reps


def full_step_ms(hidden: int) -> float:
    from workloads import harness
    from workloads.numpy_reference import NumpyLSTM

    p = harness.Params(framework="numpy-reference", hidden=hidden, batch=BATCH, seq_len=SEQ, vocab=VOCAB)
    model = NumpyLSTM(harness.make_weights(p), p.lr)
    tokens, labels = harness.make_batches(p)[0]
    start = time.perf_counter()
    model.step(tokens, labels)
    return (time.perf_counter() - start) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 2048])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--step", action="store_true", help="also time one NumpyLSTM training step per size")
    ap.add_argument("--torch", action="store_true", help="(internal) measure torch, in its venv")
    args = ap.parse_args()
    if args.torch:
        import torch

        torch.set_num_threads(args.threads)
    for hidden in args.hidden:
        pairs = [torch_pair(hidden) if args.torch else numpy_pair(hidden) for _ in range(args.rounds)]
        sparse = statistics.median(p["sparse"] for p in pairs)
        dense = statistics.median(p["dense"] for p in pairs)
        lib = "torch" if args.torch else "numpy"
        line = f"{lib} H={hidden}: sparse {sparse:.2f} ms, dense {dense:.2f} ms, dense/sparse {dense / sparse:.2f}"
        if args.step and not args.torch:
            step = full_step_ms(hidden)
            line += f"; dense extra = {100 * (dense - sparse) / step:.2f}% of one NumpyLSTM step ({step:.0f} ms)"
        print(line, flush=True)
    if not args.torch:
        from orchestrator.frameworks import discover
        from orchestrator.venvs import ensure_venv

        python = ensure_venv(discover(ROOT / "images")["torch"], None)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(args.threads)}
        os.execve(str(python), [str(python), __file__, "--torch", *sys.argv[1:]], env)


if __name__ == "__main__":
    main()
