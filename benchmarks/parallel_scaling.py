"""Parallel scaling: wall time of an 8-cell CPU matrix on 1, 2 and 4 slots and on a 2-node Ray cluster, vs serial.

Two kinds of cell, because this machine has 2 cores:
  sleep  chaos:slow (tests/fixtures/chaos): each timed step sleeps 0.5 s inside its container, so the cells
         barely use a core and the figures measure the scheduler (slot hand-over, container start-up);
  cpu    numpy-reference at a size where one cell computes for a few seconds: bounded by the cores, an honest
         picture of CPU contention.
Each configuration is the real command (`python -m orchestrator ... -q --no-report`) in a throw-away copy of the
project, with fresh run directories; images are built before anything is timed. Ray: a local
ray.cluster_utils.Cluster (head without slots + 2 worker nodes, each declaring `lstm_bench_slot` slots),
started before and not counted.
  wall   the whole command (start-up, preflight, image lookup, cells, summary)
  span   first cell start to last cell end, from the records (started_at + duration_s)
  speed-up = serial / this; efficiency = speed-up / slots.
  step   the median over cells of each cell's own median ms per batch (what the report shows): CPU contention
         shows here as slower steps, whatever the wall clock says
  load   the 1-minute load average after the run: other work on the machine skews every figure; read it.

usage: python benchmarks/parallel_scaling.py [--kinds sleep,cpu] [--no-ray] [--cells 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.results import CellRecord  # noqa: E402
from tests.conftest import BUILD_ARG, FIXTURES, copy_project  # noqa: E402
from tests.test_scheduler import load_records, span_s  # noqa: E402

KINDS = {
    # 8 x (4 timed + 1 warm-up steps of 0.5 s) of sleeping
    "sleep": ["--only", "chaos:slow", "--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100",
              "--set", "iters=4", "--set", "warmup=1"],
    # about 2-3 s of NumPy LSTM per cell on one core of this machine
    "cpu": ["--only", "numpy-reference", "--set", "batch=32", "--set", "seq_len=32", "--set", "vocab=1000",
            "--set", "iters=25", "--set", "warmup=1"],
}


def hidden_axis(cells: int, kind: str) -> list[str]:
    base = 16 if kind == "sleep" else 128  # distinct sizes only because cells need distinct ids
    return ["--hidden", ",".join(str(base + i) for i in range(cells))]


def run(project: Path, kind: str, cells: int, out: Path, extra: list[str]) -> tuple[float, list[CellRecord]]:
    args = ["matrix.yaml", *KINDS[kind], *hidden_axis(cells, kind), "--device", "cpu", "--build-arg", BUILD_ARG,
            "-q", "--no-report", "--out", str(out), *extra]
    env = {**os.environ, "PYTHONPATH": str(project)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "orchestrator", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-3000:]}")
    records = load_records(out)
    bad = [(r.cell_id, r.status.value, r.reason) for r in records if r.status.value != "ok"]
    if len(records) != cells or bad:
        raise SystemExit(f"expected {cells} ok cells, got {len(records)}; not ok: {bad}")
    return wall, records


def ray_cluster(slots_per_node: int) -> object:
    from ray.cluster_utils import Cluster

    store = 80 << 20
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False, "object_store_memory": store})
    for _ in range(2):
        # As many logical CPUs as slots: Ray keeps that many idle workers, so a cell does not wait for a new
        # worker process (on this machine ~2 s of importing) when two run on one node.
        cluster.add_node(num_cpus=slots_per_node, resources={"lstm_bench_slot": slots_per_node},
                         object_store_memory=store)
    cluster.wait_for_nodes()
    return cluster


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kinds", default="sleep,cpu")
    ap.add_argument("--cells", type=int, default=8)
    ap.add_argument("--no-ray", action="store_true")
    opts = ap.parse_args()
    kinds = [k for k in opts.kinds.split(",") if k]
    configs: list[tuple[str, int, list[str], int]] = [  # label, slots, options, ray slots per node (0: no ray)
        ("docker --slots 1", 1, ["--slots", "1"], 0),
        ("docker --slots 2", 2, ["--slots", "2"], 0),
        ("docker --slots 4", 4, ["--slots", "4"], 0),
    ]
    if not opts.no_ray:
        configs += [("ray 2 nodes x 1 slot", 2, ["--runner", "ray"], 1),
                    ("ray 2 nodes x 2 slots", 4, ["--runner", "ray"], 2)]
    with tempfile.TemporaryDirectory(prefix="lstm-bench-scaling-") as tmp:
        work = Path(tmp)
        project = copy_project(work / "project", {"chaos": FIXTURES / "chaos"})
        for kind in kinds:  # build the images once, untimed
            run(project, kind, 1, work / f"warm-{kind}", ["--slots", "1"])
        print(f"{os.cpu_count()} CPUs; {opts.cells} cells per run\n")
        print(f"{'kind':<6} {'configuration':<22} {'slots':>5} {'wall s':>7} {'span s':>7} "
              f"{'speed-up':>8} {'effic.':>7} {'span speed-up':>13} {'span effic.':>11} {'step ms':>8} {'load':>5}")
        serial: dict[str, tuple[float, float]] = {}
        cluster = None
        try:
            for label, slots, extra, per_node in configs:
                if per_node:
                    if cluster is not None:
                        cluster.shutdown()  # type: ignore[attr-defined]
                    cluster = ray_cluster(per_node)
                    extra = [*extra, "--ray-address", cluster.address]  # type: ignore[attr-defined]
                for kind in kinds:
                    out = work / f"{kind}-{label.replace(' ', '_')}"
                    wall, records = run(project, kind, opts.cells, out, extra)
                    span = span_s(records)
                    step = statistics.median(r.median_ms or 0.0 for r in records)
                    serial.setdefault(kind, (wall, span))
                    s_wall, s_span = serial[kind]
                    print(f"{kind:<6} {label:<22} {slots:>5} {wall:>7.1f} {span:>7.1f} {s_wall / wall:>8.2f} "
                          f"{s_wall / wall / slots:>7.2f} {s_span / span:>13.2f} {s_span / span / slots:>11.2f} "
                          f"{step:>8.1f} {os.getloadavg()[0]:>5.1f}", flush=True)
        finally:
            if cluster is not None:
                cluster.shutdown()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
