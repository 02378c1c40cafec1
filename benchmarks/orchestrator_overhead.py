"""Orchestrator overhead per cell vs plain `docker run --rm`, and the warm rebuild of an unchanged image.

Side by side in one run, interleaved round by round so machine noise hits both alike:
  A. `python -m orchestrator` running N cells of a near-no-op workload (the numpy-reference at hidden 1,
     batch 1, seq 1, 1 timed step) with the docker runner, image already built, no report;
  B. the same N cells as N plain `docker run --rm` of the same image with the same mounts and arguments.
Prints seconds per cell for each, the ratio A/B (goal <= 1.10) and the warm `ensure_image` time (goal <= 1 s).

usage: python benchmarks/orchestrator_overhead.py [--cells 12] [--rounds 3]
       (needs Docker and the base image from scripts/make-base-image.sh)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.frameworks import discover  # noqa: E402
from orchestrator.images import ensure_image  # noqa: E402
from orchestrator.runners.docker import connect  # noqa: E402

BASE = os.environ.get("LSTM_BENCH_TEST_BASE", "lstm-bench/base:bookworm-numpy")
SIZES = ["--set", "batch=1", "--set", "seq_len=1", "--set", "vocab=2", "--set", "iters=1", "--set", "warmup=0"]


def orchestrated(cells: int, out: Path) -> float:
    hidden = ",".join(str(h) for h in range(1, cells + 1))
    cmd = [sys.executable, "-m", "orchestrator", str(ROOT / "matrix.yaml"), "--only", "numpy-reference",
           "--hidden", hidden, "--device", "cpu", "--build-arg", f"BASE_IMAGE={BASE}", "--out", str(out),
           "--no-report", "-q", *SIZES]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    statuses = [json.loads(line)["status"] for line in (out / "results.jsonl").read_text().splitlines()]
    assert statuses == ["ok"] * cells, statuses
    return elapsed


def plain(cells: int, tag: str, work: Path) -> float:
    params = {"framework": "numpy-reference", "variant": None, "impl": "loop", "batch": 1, "seq_len": 1,
              "vocab": 2, "classes": 5, "lr": 0.001, "warmup": 0, "iters": 1, "seed": 0, "device": "cpu",
              "data_batches": 4}
    start = time.perf_counter()
    for h in range(1, cells + 1):
        d = work / f"h{h}"
        d.mkdir(parents=True)
        (d / "params.json").write_text(json.dumps({**params, "hidden": h}))
        os.chmod(d, 0o777)
        subprocess.run(["docker", "run", "--rm", "-v", f"{d}:/results", "--network", "none", tag,
                        "--params", "/results/params.json", "--out", "/results/result.json"],
                       check=True, capture_output=True)
        assert json.loads((d / "result.json").read_text())["status"] == "ok"
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()

    client = connect()
    fw = discover(ROOT / "images")["numpy-reference"]
    built = ensure_image(client, ROOT, fw, None, {"BASE_IMAGE": BASE}, 3600)
    warm = []
    for _ in range(5):
        again = ensure_image(client, ROOT, fw, None, {"BASE_IMAGE": BASE}, 3600)
        assert again.cached and again.tag == built.tag
        warm.append(again.duration_s)

    a_times, b_times = [], []
    for r in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            # Alternate which side goes first, so neither always gets the warmer machine.
            if r % 2 == 0:
                a_times.append(orchestrated(args.cells, work / "run") / args.cells)
                b_times.append(plain(args.cells, built.tag, work / "plain") / args.cells)
            else:
                b_times.append(plain(args.cells, built.tag, work / "plain") / args.cells)
                a_times.append(orchestrated(args.cells, work / "run") / args.cells)
            shutil.rmtree(work, ignore_errors=True)
    a, b = statistics.median(a_times), statistics.median(b_times)
    print(f"cells per round: {args.cells}, rounds: {args.rounds}")
    print(f"orchestrator      : {a:.3f} s/cell  (rounds: {', '.join(f'{x:.3f}' for x in a_times)})")
    print(f"plain docker run  : {b:.3f} s/cell  (rounds: {', '.join(f'{x:.3f}' for x in b_times)})")
    print(f"ratio orchestrator/plain: {a / b:.3f}  (goal <= 1.10)")
    print(f"warm ensure_image of an unchanged image: median {statistics.median(warm) * 1000:.0f} ms, "
          f"max {max(warm) * 1000:.0f} ms  (goal <= 1 s)")


if __name__ == "__main__":
    main()
