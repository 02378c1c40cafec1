"""Orchestrator memory and store cost at huge results (issue 17): a real run of N chaos:manybatches cells (each an ok
cell of 1.5M timed batches, legal by the schema) on the Docker engine, report included, then `report` again.

Measured: exit codes, wall time, the orchestrator's max RSS (the CLI is this script's only waited-for child, so
RUSAGE_CHILDREN's ru_maxrss is its peak; containers run under the engine, not here), results.jsonl's size.
`--before REV` runs the same thing with the orchestrator of REV (a `git archive` of it), side by side.

usage: python benchmarks/huge_results.py [--cells 8] [--before REV]   (needs lstm-bench/base:bookworm-numpy)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import BUILD_ARG, FIXTURES, copy_project, default_signals  # noqa: E402

SMALL = ["--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=2", "--set", "warmup=0"]


def measured(args: list[str], cwd: Path) -> tuple[int, float, float]:
    """(exit code, seconds, max RSS in GiB) of `python -m orchestrator ARGS`, in a fresh process of its own."""
    code = ("import resource, subprocess, sys, time\n"
            "t = time.perf_counter()\n"
            f"rc = subprocess.run([sys.executable, '-m', 'orchestrator', *{args!r}], cwd={str(cwd)!r}, "
            "stdout=subprocess.DEVNULL).returncode\n"
            "print(rc, time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"},
                         preexec_fn=default_signals).stdout.split()
    return int(out[0]), float(out[1]), int(out[2]) / (1 << 20)


def project_at(dest: Path, rev: str | None) -> Path:
    """A copy of the project (this checkout, or REV's orchestrator over it) with the chaos fixture framework."""
    root = copy_project(dest, {"chaos": FIXTURES / "chaos"})
    if rev is not None:
        archive = subprocess.run(["git", "archive", rev, "orchestrator"], cwd=ROOT, check=True, capture_output=True)
        subprocess.run(["rm", "-rf", str(root / "orchestrator")], check=True)
        subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    return root


def one_side(name: str, root: Path, cells: int) -> None:
    hidden = ",".join(str(8 * (i + 1)) for i in range(cells))
    (root / "huge.yaml").write_text("frameworks:\n  - name: chaos\n    variants: [manybatches]\ndevice: cpu\n")
    out = root.parent / "run"
    rc, secs, rss = measured(["huge.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", *SMALL,
                              "--hidden", hidden], root)
    size = (out / "results.jsonl").stat().st_size / (1 << 20) if (out / "results.jsonl").exists() else 0.0
    rrc, rsecs, rrss = measured(["report", str(out)], root)
    print(f"{name}: {cells} cells x 1.5M batches: run exit {rc}, {secs:.0f} s, max RSS {rss:.2f} GiB; "
          f"results.jsonl {size:.0f} MiB; `report` exit {rrc}, {rsecs:.0f} s, max RSS {rrss:.2f} GiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--before", help="git revision to measure side by side (e.g. dba937e)")
    args = ap.parse_args()
    started = time.perf_counter()
    for name, rev in ([("before " + args.before, args.before)] if args.before else []) + [("after", None)]:
        with tempfile.TemporaryDirectory() as tmp:
            one_side(name, project_at(Path(tmp) / "project", rev), args.cells)
    print(f"(benchmark wall {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
