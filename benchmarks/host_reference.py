"""What the host's NumPy reference costs against its BLAS bound (issue 18, item 13).

Every GPU run's report computes, per size without a numpy-reference cell, NumpyLSTM's loss before and after one SGD
step on the first batch (orchestrator/report/equivalence.reference_losses): one step plus one forward. Its dense
work is 8 matmul groups of 2*B*T*H*4H FLOPs each (forward: input projection and recurrence; backward: the
recurrence, the two weight gradients and the input gradient; then the second forward's two). The bound is that
many FLOPs at the rate this machine's BLAS reaches on one large float32 matmul, measured here in the same process.
Also, side by side, the two weight gradients as the reference computed them before (np.einsum without optimize)
and now (one matmul each).

usage: python benchmarks/host_reference.py [--hidden 2048] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
BATCH, SEQ = 128, 64
MATMUL_GROUPS = 8


def blas_gflops(n: int = 4096, rounds: int = 3) -> float:
    import numpy as np

    a = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    a @ a  # warm-up: thread pool, page faults
    best = min(_timed(lambda: a @ a) for _ in range(rounds))
    return 2 * n**3 / best / 1e9


def _timed(fn: object) -> float:
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    return time.perf_counter() - start


def gradient_pair(hidden: int) -> tuple[float, float]:
    """Seconds for the two weight gradients: einsum (before) vs reshape + matmul (now)."""
    import numpy as np

    rng = np.random.default_rng(0)
    h = rng.standard_normal((BATCH, SEQ, hidden)).astype(np.float32)
    dz = rng.standard_normal((BATCH, SEQ, 4 * hidden)).astype(np.float32)
    before = _timed(lambda: (np.einsum("bth,btg->hg", h, dz), np.einsum("bte,btg->eg", h, dz)))
    flat = dz.reshape(BATCH * SEQ, -1)
    now = _timed(lambda: (h.reshape(BATCH * SEQ, -1).T @ flat, h.reshape(BATCH * SEQ, -1).T @ flat))
    return before, now


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None, help="BLAS threads (default: the library's own choice)")
    ap.add_argument("--skip-einsum", action="store_true", help="do not time the old einsum gradients (slow)")
    args = ap.parse_args()
    if args.threads:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    import numpy as np

    from orchestrator.report.equivalence import reference_losses

    params = {"framework": "numpy-reference", "hidden": args.hidden, "batch": BATCH, "seq_len": SEQ, "vocab": 10000,
              "classes": 5, "lr": 0.001, "seed": 0, "device": "cpu", "precision": "fp32"}
    rate = blas_gflops()
    flops = MATMUL_GROUPS * 2 * BATCH * SEQ * args.hidden * 4 * args.hidden
    bound = flops / (rate * 1e9)
    took = _timed(lambda: reference_losses(params))
    print(f"numpy {np.__version__}, {os.cpu_count()} CPUs; BLAS sgemm {rate:.1f} GFLOP/s")
    print(f"host reference at hidden {args.hidden}: {took:.1f} s; {flops / 1e12:.2f} TFLOP of matmuls -> bound "
          f"{bound:.1f} s; ratio {took / bound:.2f}x")
    if not args.skip_einsum:
        before, now = gradient_pair(args.hidden)
        print(f"weight gradients: einsum {before:.2f} s, matmul {now:.2f} s ({before / now:.1f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
