"""Does `compare` cry wolf? N runs of identical code compared pairwise (false alarms), and runs of a deliberately
slowed copy of the workload compared with them (detections).

Both kinds of run are real: the numpy-reference workload through the CLI with the local runner on the CPU
(`--python current`, so no environment is created), at tiny sizes. The slowed copy is a throw-away project copy
whose workloads/numpy_reference.py runs the forward pass twice per training step (the extra forward's result is
discarded, so losses and the checks are unchanged): 1.5-1.8x slower at the default sizes (measured); --extra-forward 0.5
runs the extra forward over half of each sequence only, about 1.25x. It is a fixture of this script, never a
change to the real workload. Runs of the two kinds alternate in time so that machine drift hits both.

Every identical pair (N choose 2) and every (slowed, identical) pair is compared with `python -m orchestrator
compare` of the code under --compare-code (default: this checkout), so the same runs can be judged by another
version of compare (e.g. a checkout of main). Prints one line per comparison, the false-alarm and detection counts,
the measured slowdown, the per-process spread, and the load average seen while the runs were made.

usage: python benchmarks/compare_false_alarms.py [--runs 5] [--slowed 3] [--repeats 3] [--hidden 16,32]
           [--batch 8] [--seq-len 16] [--iters 500] [--extra-forward 1.0] [--threads 1] [--out DIR] [--reuse]
           [--compare-code PATH]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHANGE_WORDS = ("REGRESSION", "improvement")
SLOW_PATCH = '''

_one_step = NumpyLSTM.step
_EXTRA_STEPS = {share!r}  # share of the sequence the extra forward covers (1.0: the whole forward again)


def _forward_twice(self: NumpyLSTM, tokens: np.ndarray, labels: np.ndarray) -> float:
    t = max(1, round(tokens.shape[1] * _EXTRA_STEPS))
    self.forward(tokens[:, :t], labels)  # compare_false_alarms.py: the deliberate slowdown, result discarded
    return _one_step(self, tokens, labels)


NumpyLSTM.step = _forward_twice  # type: ignore[method-assign]
'''
# BLAS threads of the workload processes: with --threads 1 (default) a tiny step does not spin threads against the
# other helpers' processes on an oversubscribed 2-core machine. The threads alone did not steady it, though:
# 30-step processes at hidden 64 spread 2.1-10.2 ms with either; the 500-step default window is what did.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MAIN_GUARD = '\nif __name__ == "__main__":'


def make_project(dest: Path, slowed: bool, share: float = 1.0) -> Path:
    """A runnable copy of this checkout (orchestrator, workloads, numpy-reference); optionally the slowed one."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("orchestrator", "workloads"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "images" / "numpy-reference", dest / "images" / "numpy-reference", dirs_exist_ok=True)
    shutil.copy(ROOT / "matrix.yaml", dest / "matrix.yaml")
    if slowed:
        module = dest / "workloads" / "numpy_reference.py"
        text = module.read_text()
        if MAIN_GUARD not in text:
            raise SystemExit(f"{module}: no main guard to insert the slowdown before")
        module.write_text(text.replace(MAIN_GUARD, SLOW_PATCH.format(share=share) + MAIN_GUARD, 1))
    return dest


def make_run(project: Path, out: Path, opts: argparse.Namespace) -> list[float]:
    """One run of the matrix (numpy-reference only) into `out`; returns the load averages before and after."""
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, "-m", "orchestrator", "matrix.yaml", "--only", "numpy-reference", "--runner", "local",
           "--python", "current", "--device", "cpu", "--hidden", opts.hidden, "--out", str(out), "--no-report", "-q",
           "--set", f"batch={opts.batch}", "--set", f"seq_len={opts.seq_len}", "--set", "vocab=1000",
           "--set", f"iters={opts.iters}", "--set", "warmup=2", "--set", f"repeats={opts.repeats}"]
    threads = {k: str(opts.threads) for k in THREAD_VARS} if opts.threads else {}
    env = {**os.environ, "PYTHONPATH": str(project), **threads}
    proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"run {out.name} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return [load_before, os.getloadavg()[0]]


def verdicts(code: Path, run_a: Path, run_b: Path) -> list[str]:
    """The table lines of `compare A B` run by the code under `code` (one per cell)."""
    env = {**os.environ, "PYTHONPATH": str(code), "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", "orchestrator", "compare", str(run_a), str(run_b)], cwd=code,
                          env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise SystemExit(f"compare failed ({proc.returncode}): {proc.stderr[-2000:]}")
    lines = proc.stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("---")) + 1
    return list(itertools.takewhile(bool, lines[start:]))


def process_medians(run: Path, steps: int | None = None) -> dict[int, list[float]]:
    """hidden -> the median ms of each repeat (fresh process) of the run, over its first `steps` timed steps."""
    out: dict[int, list[float]] = {}
    for line in (run / "results.jsonl").read_text().splitlines():
        rec = json.loads(line)
        times = (rec.get("workload") or {}).get("times_ms") or []
        if times:
            out.setdefault(rec["hidden"], []).append(statistics.median(times[:steps]))
    return out


def spread_by_steps(runs: list[Path], steps: tuple[int, ...]) -> None:
    """Run-to-run spread (CV of process medians) had each process timed only its first k steps: what more iters
    buy, against what more repeats buy (docs/report.md, "Choosing repeats")."""
    for k in steps:
        cvs = []
        for hidden in process_medians(runs[0]):
            ms = [m for run in runs for m in process_medians(run, k).get(hidden, [])]
            cvs.append(f"hidden {hidden} {100 * statistics.stdev(ms) / statistics.fmean(ms):.1f}%")
        print(f"CV of process medians over the first {k} timed steps: {', '.join(cvs)}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of the identical code (all pairs compared)")
    ap.add_argument("--slowed", type=int, default=3, help="runs of the slowed copy (each compared with every run)")
    ap.add_argument("--repeats", type=int, default=3, help="fresh processes per cell in each run")
    ap.add_argument("--hidden", default="16,32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=16)
    ap.add_argument("--iters", type=int, default=500, help="timed steps per process (a process of ~0.5 s spans "
                    "more of the machine's bursts, so its median wanders less)")
    ap.add_argument("--extra-forward", type=float, default=1.0, help="the slowed copy's extra forward covers this "
                    "share of each sequence (1.0: the forward done twice; 0.5: about 1.25x at the default sizes)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads per workload process (0: the library's "
                    "default)")
    ap.add_argument("--out", type=Path, help="where the runs go (default: a new temporary directory)")
    ap.add_argument("--reuse", action="store_true", help="compare the runs already in --out, make none")
    ap.add_argument("--compare-code", type=Path, default=ROOT, help="checkout whose `compare` judges the runs")
    opts = ap.parse_args()
    out = opts.out or Path(tempfile.mkdtemp(prefix="compare-false-alarms-"))
    same = [out / f"same-{i + 1}" for i in range(opts.runs)]
    slow = [out / f"slowed-{i + 1}" for i in range(opts.slowed)]
    if not opts.reuse:
        out.mkdir(parents=True, exist_ok=True)
        plain = make_project(out / "project", False)
        slowed = make_project(out / "project-slowed", True, opts.extra_forward)
        loads: list[float] = []
        for i in range(max(opts.runs, opts.slowed)):  # alternate, so drift in the machine's state hits both kinds
            if i < len(same):
                loads += make_run(plain, same[i], opts)
            if i < len(slow):
                loads += make_run(slowed, slow[i], opts)
        (out / "load.json").write_text(json.dumps(loads))
    loads = json.loads((out / "load.json").read_text()) if (out / "load.json").is_file() else []
    code = opts.compare_code.resolve()
    print(f"runs in {out}; compare from {code}")
    print(f"sizes: hidden {opts.hidden}, batch {opts.batch}, seq_len {opts.seq_len}, iters {opts.iters}, "
          f"repeats {opts.repeats}, BLAS threads {opts.threads or 'default'} (as given now; --reuse keeps the runs')")
    alarms = pairs = 0
    for a, b in itertools.combinations(same, 2):
        rows = verdicts(code, a, b)
        flagged = [r for r in rows if any(w in r for w in CHANGE_WORDS)]
        alarms += bool(flagged)
        pairs += 1
        for r in rows:
            print(f"  same  {a.name} vs {b.name}: {' '.join(r.split())}")
    detected = total = 0
    for s, a in itertools.product(slow, same):
        rows = verdicts(code, a, s)
        cells = [r for r in rows if r.strip()]
        hits = [r for r in cells if "REGRESSION" in r]
        detected += len(hits)
        total += len(cells)
        for r in rows:
            print(f"  slow  {a.name} vs {s.name}: {' '.join(r.split())}")
    meds = {k: [m for run in same for m in process_medians(run).get(k, [])] for k in process_medians(same[0])}
    slow_meds = {k: [m for run in slow for m in process_medians(run).get(k, [])] for k in meds}
    print(f"false alarms: {alarms} of {pairs} pairs of identical runs got a regression or improvement verdict")
    print(f"detections: {detected} of {total} (slowed vs identical) cell comparisons called a regression")
    for k, ms in meds.items():
        gm = math.exp(statistics.fmean(map(math.log, ms)))
        cv = statistics.stdev(ms) / statistics.fmean(ms) if len(ms) > 1 else float("nan")
        sm = slow_meds.get(k) or []
        ratio = math.exp(statistics.fmean(map(math.log, sm))) / gm if sm else float("nan")
        print(f"hidden {k}: {len(ms)} processes of identical code, median ms {min(ms):.3f}-{max(ms):.3f}, "
              f"CV of process medians {100 * cv:.1f}%; slowed/identical {ratio:.3f}")
    spread_by_steps(same, (*(k for k in (30, 50, 100, 200) if k < opts.iters), opts.iters))
    lines = [ln for run in same for ln in (run / "results.jsonl").read_text().splitlines()]
    durations = [json.loads(ln)["duration_s"] for ln in lines]
    print(f"cost: {statistics.median(durations):.2f} s per process (median; start-up included)")
    if loads:
        print(f"load average (1 min) while running: {min(loads):.2f}-{max(loads):.2f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
