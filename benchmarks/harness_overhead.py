"""What the workload harness costs: the torch workload through harness.measure vs a minimal hand-written loop.

Side by side in one process on CPU, interleaved round by round (order alternating) so machine noise hits both:
  A. harness.measure(TorchLSTM) - the exact code a cell runs: probe steps, warm-up, then per-step timing with
     sync, as written into the result JSON (times_ms);
  B. a minimal PyTorch training loop with the same sizes: nn.Embedding -> nn.LSTM -> nn.Linear, SGD, the same
     number of warm-up steps, then the timed steps.
Prints per-round figures, the median over rounds of each round's median ms/batch (what the report shows), the
same for the mean (B's mean is total time / steps, which is how a hand-written benchmark would time it), and the
ratios A/B (goal: <= 1.02).

usage: python benchmarks/harness_overhead.py [--hidden 256] [--batch 32] [--seq-len 32] [--iters 30] [--rounds 7]
                                             [--threads N]
       (re-runs itself in the torch environment of orchestrator/venvs.py, creating it on first use)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _reexec_in_torch_venv(script: str = __file__) -> None:
    """Run `script` again, with the same arguments, in the torch environment (benchmarks/fingerprint_cost.py too)."""
    from orchestrator.frameworks import discover
    from orchestrator.venvs import ensure_venv

    python = ensure_venv(discover(ROOT / "images")["torch"], None, on_line=lambda s: print(f"[venv] {s}"))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "LSTM_BENCH_IN_VENV": "1"}
    os.execve(str(python), [str(python), script, *sys.argv[1:]], env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--iters", type=int, default=30, help="timed steps per round and side")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default); 1 makes "
                    "the figures far less sensitive to other processes competing for the cores")
    opts = ap.parse_args()
    try:
        import torch
    except ImportError:
        if os.environ.get("LSTM_BENCH_IN_VENV"):
            raise
        _reexec_in_torch_venv()
        return 1  # not reached

    import torch.nn.functional as F
    from torch import nn

    from workloads import harness
    from workloads.torch_lstm import TorchLSTM

    if opts.threads:
        torch.set_num_threads(opts.threads)

    p = harness.Params(framework="torch", hidden=opts.hidden, batch=opts.batch, seq_len=opts.seq_len,
                       iters=opts.iters, warmup=opts.warmup, device="cpu", impl="fused")

    def through_harness() -> list[float]:
        m = harness.Measurement()
        harness.measure(TorchLSTM(p), p, m)
        return m.times_ms

    def hand_written() -> tuple[list[float], float]:
        emb, lstm, dense = nn.Embedding(p.vocab, p.hidden), nn.LSTM(p.hidden, p.hidden, batch_first=True), \
            nn.Linear(p.hidden, p.classes)
        params = [*emb.parameters(), *lstm.parameters(), *dense.parameters()]
        opt = torch.optim.SGD(params, lr=p.lr)
        batches = [(torch.randint(0, p.vocab, (p.batch, p.seq_len)), torch.randint(0, p.classes, (p.batch,)))
                   for _ in range(p.data_batches)]

        def step(x: torch.Tensor, y: torch.Tensor) -> None:
            opt.zero_grad(set_to_none=True)
            out, _ = lstm(emb(x))
            F.cross_entropy(dense(out[:, -1]), y).backward()
            opt.step()

        for i in range(p.warmup + 2):  # the harness also runs two probe steps before its warm-up
            step(*batches[i % len(batches)])
        times = []
        start = time.perf_counter()
        for i in range(p.iters):
            t0 = time.perf_counter()
            step(*batches[i % len(batches)])
            times.append((time.perf_counter() - t0) * 1000.0)
        return times, (time.perf_counter() - start) * 1000.0 / p.iters

    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}, hidden {p.hidden}, batch {p.batch}, "
          f"seq {p.seq_len}, vocab {p.vocab}; {opts.rounds} rounds x {p.iters} timed steps per side")
    a_med, a_mean, b_med, b_mean = [], [], [], []
    for r in range(opts.rounds):
        order = ("A", "B") if r % 2 == 0 else ("B", "A")
        for side in order:
            if side == "A":
                times = through_harness()
                a_med.append(statistics.median(times))
                a_mean.append(statistics.fmean(times))
            else:
                times, per_batch = hand_written()
                b_med.append(statistics.median(times))
                b_mean.append(per_batch)
        print(f"round {r + 1} ({''.join(order)}): harness median {a_med[-1]:.3f} ms, mean {a_mean[-1]:.3f} ms | "
              f"hand-written median {b_med[-1]:.3f} ms, total/steps {b_mean[-1]:.3f} ms")
    am, bm = statistics.median(a_med), statistics.median(b_med)
    amean, bmean = statistics.median(a_mean), statistics.median(b_mean)
    print(f"median ms/batch: harness {am:.3f}, hand-written {bm:.3f}, ratio {am / bm:.4f}")
    print(f"mean ms/batch:   harness {amean:.3f}, hand-written {bmean:.3f} (total/steps), ratio {amean / bmean:.4f}")
    print("goal: ratio <= 1.02")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
