"""Report time at many timed batches (issue 9, item 7): `render()` of a run whose one ok cell holds N batches, and
the median-interval ranks of the statistics before (exact big-integer binomials, quadratic in N) and after
(scipy.stats binomial quantiles).

The per-batch times are real: one numpy-reference cell is run on this host at tiny sizes (local runner) and its
times are tiled to N. The old ranks function is taken from git (`--before REV`, default the commit before issue 9)
and run in a subprocess with a time limit, since at 1.5M batches it takes minutes.

usage: python benchmarks/report_time.py [--batches 1500000] [--before REV] [--limit-s 600]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.report import render  # noqa: E402
from orchestrator.report.stats import median_ci_ranks  # noqa: E402
from orchestrator.store import RunStore  # noqa: E402
from tests.report_helpers import make_real_run  # noqa: E402

BEFORE = "b7359db"  # the commit issue 9 started from


def run_with_batches(root: Path, batches: int) -> Path:
    """A real one-cell run, its cell's times tiled to `batches` (records rewritten as the pipeline writes them)."""
    run = make_real_run(root, hidden=(16,), run_id="bench")
    store = RunStore(run)
    (rec,) = store.records()
    assert rec.workload is not None
    real = list(rec.workload.times_ms)
    times = (real * (batches // len(real) + 1))[:batches]
    big = rec.model_copy(update={"workload": rec.workload.model_copy(update={"times_ms": times})})
    (run / "cells" / rec.cell_id / "record.json").write_text(big.model_dump_json())
    (run / "results.jsonl").write_text(big.to_json_line())
    return run


def old_ranks_seconds(rev: str, n: int, limit_s: float) -> float | None:
    """Seconds the old median_ci_ranks(n) takes, or None past `limit_s`."""
    source = subprocess.run(["git", "show", f"{rev}:orchestrator/report/stats.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    code = (f"import time\nns = {{}}\nexec(compile({source!r}, 'old_stats', 'exec'), ns)\n"
            f"t = time.perf_counter()\nns['median_ci_ranks']({n})\nprint(time.perf_counter() - t)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=limit_s,
                              check=True)
    except subprocess.TimeoutExpired:
        return None
    return float(proc.stdout.strip())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=1_500_000)
    ap.add_argument("--before", default=BEFORE, help="git revision of the old statistics")
    ap.add_argument("--limit-s", type=float, default=600.0, help="give the old ranks up after this long")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_with_batches(Path(tmp) / "run", args.batches)
        started = time.perf_counter()
        render(run)
        report_s = time.perf_counter() - started
    t = time.perf_counter()
    median_ci_ranks(args.batches)
    new_ranks_s = time.perf_counter() - t
    old_s = old_ranks_seconds(args.before, args.batches, args.limit_s)
    old = f"{old_s:.1f} s" if old_s is not None else f"> {args.limit_s:g} s (stopped)"
    print(f"batches: {args.batches}")
    print(f"report render (all four outputs + plots), after: {report_s:.1f} s")
    print(f"median-interval ranks, after (scipy.stats): {new_ranks_s * 1000:.2f} ms")
    print(f"median-interval ranks, before ({args.before}, exact integers): {old}")
    if old_s is not None and new_ranks_s > 0:
        print(f"ratio before/after (ranks): {old_s / new_ranks_s:.0f}x")


if __name__ == "__main__":
    main()
