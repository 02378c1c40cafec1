"""What the update fingerprint costs a cell: canonical_weights() + harness.update_fingerprint vs one training step.

Side by side in one process on CPU, on the torch workload (the exact class a cell runs), interleaved round by
round: A. one training step (step + sync); B. canonical_weights() (device -> host copy into the canonical layout)
plus update_fingerprint against the initial weights (float64, chunked), which the harness runs once per cell,
untimed, after the first probe step. Prints per-round figures, the medians and B/A (goal: well below 1: the cost
is paid once per cell, a step iters + warmup + 2 times).

usage: python benchmarks/fingerprint_cost.py [--hidden 2048] [--batch 128] [--seq-len 64] [--rounds 3]
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if os.environ.get("LSTM_BENCH_IN_VENV") != "1":
        from benchmarks.harness_overhead import _reexec_in_torch_venv

        _reexec_in_torch_venv(__file__)

    from workloads import harness
    from workloads.torch_lstm import TorchLSTM

    p = harness.Params(framework="torch", hidden=args.hidden, batch=args.batch, seq_len=args.seq_len, device="cpu",
                       impl="fused")
    fw = TorchLSTM(p)
    fw.check_device()
    fw.set_precision()
    initial = harness.make_weights(p)
    fw.build(harness.Weights(**{k: v.copy() for k, v in initial.as_dict().items()}))
    tokens, labels = harness.make_batches(p)[0]
    batch = fw.prepare(tokens, labels)
    fw.step(batch)  # warm-up
    fw.sync()
    steps, prints = [], []
    for r in range(args.rounds):
        t0 = time.perf_counter()
        fw.step(batch)
        fw.sync()
        steps.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        harness.update_fingerprint(initial, fw.canonical_weights(), tokens)
        prints.append(time.perf_counter() - t0)
        print(f"round {r}: step {steps[-1]:.3f} s, canonical_weights + fingerprint {prints[-1]:.3f} s", flush=True)
    a, b = statistics.median(steps), statistics.median(prints)
    print(f"hidden {args.hidden}, batch {args.batch}, seq_len {args.seq_len}, {os.cpu_count()} CPUs: "
          f"median step {a:.3f} s, median fingerprint {b:.3f} s, fingerprint/step = {b / a:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
