"""What the machine sampler costs a cell: the same cell with and without host sampling, interleaved rounds.

Each round runs the numpy reference workload (the real harness, as a cell runs it) twice as a subprocess, once
while this process samples it exactly as the pipeline does (orchestrator/machine: /proc/stat of the host plus the
cell's /proc entry, every --period seconds) and once without; the order alternates round by round so drifting
machine noise hits both sides. Per side: the median over rounds of the cell's median ms/batch (what the report
shows). Prints the ratio with/without (goal: below 1.005) and the sampler's own CPU time as a share of one core
over the sampled cells' wall time. NVML reads are not part of it: there is no GPU here (see docs/report.md).

usage: python benchmarks/sampler_overhead.py [--hidden 128] [--batch 32] [--seq-len 32] [--iters 40]
                                             [--rounds 15] [--period 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.machine.cpu import HostCpu, ProcessCell  # noqa: E402
from orchestrator.machine.sampler import PERIOD_S, Sampler  # noqa: E402


def one_cell(params: dict[str, object], sample: bool, period_s: float, work: Path) -> tuple[float, float, float]:
    """(median ms/batch, the cell's wall time in s, sampler CPU s) of one run of the cell."""
    (work / "params.json").write_text(json.dumps(params))
    out = work / "result.json"
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "workloads.numpy_reference", "--params", str(work / "params.json"), "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    sampler = None
    if sample:
        sampler = Sampler([HostCpu(), ProcessCell(proc.pid)], period_s)
        sampler.start()
    code = proc.wait()
    wall = time.monotonic() - started
    if sampler is not None:
        sampler.stop()
    doc = json.loads(out.read_text())
    if code != 0 or doc["status"] != "ok":
        raise SystemExit(f"the cell failed: {doc.get('message')}")
    return doc["stats_ms"]["median"], wall, sampler.cpu_s if sampler else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=32)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--period", type=float, default=PERIOD_S, help=f"sampling period in s (default {PERIOD_S})")
    opts = ap.parse_args()
    params = {"framework": "numpy-reference", "impl": "loop", "hidden": opts.hidden, "batch": opts.batch,
              "seq_len": opts.seq_len, "iters": opts.iters, "warmup": 2, "device": "cpu"}
    with_s: list[float] = []
    without: list[float] = []
    sampler_cpu = walls = 0.0
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(opts.rounds):
            order = (True, False) if r % 2 == 0 else (False, True)
            for sample in order:
                median, wall, cpu = one_cell(params, sample, opts.period, Path(tmp))
                (with_s if sample else without).append(median)
                if sample:
                    sampler_cpu += cpu
                    walls += wall
            print(f"round {r + 1}: with {with_s[-1]:.3f} ms, without {without[-1]:.3f} ms", flush=True)
    a, b = statistics.median(with_s), statistics.median(without)
    paired = sorted(x / y for x, y in zip(with_s, without, strict=True))
    q1, _, q3 = statistics.quantiles(paired, n=4) if len(paired) > 1 else (paired[0], 0, paired[0])
    print(f"\nmedian ms/batch over {opts.rounds} rounds: with sampling {a:.3f}, without {b:.3f}; "
          f"ratio with/without {a / b:.4f} (goal < 1.005)")
    print(f"per-round ratios with/without: median {statistics.median(paired):.4f}, quartiles {q1:.4f}-{q3:.4f} "
          "(a spread much wider than 0.5% means this host is too noisy to resolve the goal by timing alone)")
    share = 100 * sampler_cpu / walls
    print(f"sampler CPU: {sampler_cpu:.4f} s over {walls:.1f} s of sampled cells = {share:.3f}% "
          f"of one core at a {opts.period:g} s period ({time.monotonic() - started:.0f} s in all)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
