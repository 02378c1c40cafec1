"""The Ray runner on a real local cluster (ray.cluster_utils): several raylets on this machine, each declaring one
CPU slot, running real containers through the machine's Docker engine; a node killed mid-run."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from orchestrator.plan import Cell
from orchestrator.runners import ray as ray_runner
from orchestrator.runners.base import PARAMS_FILE, Environment, Outcome
from orchestrator.runners.ray import NODE_LABEL, SLOT_RESOURCE, NodeSpec, RayRunner, pull_on_node
from tests.conftest import BUILD_ARG, FIXTURES, copy_project, default_signals, missing, run_cli
from tests.test_scheduler import assert_one_cell_per_slot, intervals, load_records

try:
    import ray
except ImportError:
    missing("ray is not installed: pip install 'ray[default]' (extra lstm-bench[ray])", module_level=True)
from ray.cluster_utils import Cluster

pytestmark = pytest.mark.docker
STORE_MB = 80 << 20  # the object store holds only small results: keep each raylet's share small
# Each cell sleeps iters x 0.5 s in its container, plus ~1.5 s of container start-up on this machine.
CELLS = ["--only", "chaos:slow", "--device", "cpu", "--runner", "ray", "--build-arg", BUILD_ARG, "--no-report", "-q",
         "--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "warmup=1",
         "--set", "repeats=1"]
SESSION = {"label": f"lstm-bench.session={os.environ['LSTM_BENCH_SESSION']}"}


def add_worker(cluster: Cluster) -> Any:
    node = cluster.add_node(num_cpus=1, resources={SLOT_RESOURCE: 1}, object_store_memory=STORE_MB)
    cluster.wait_for_nodes()
    return node


@pytest.fixture(scope="module")
def cluster(docker_client: Any, base_image: str) -> Iterator[Cluster]:
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                      "object_store_memory": STORE_MB})
    try:
        for _ in range(2):
            add_worker(c)
        yield c
    finally:
        c.shutdown()


def workers(cluster: Cluster) -> dict[str, Any]:
    """Live worker nodes (those with slots) by node id; the head has no slot and runs no cell."""
    return {n.node_id: n for n in cluster.list_all_nodes() if n is not cluster.head_node}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("ray") / "project", {"chaos": FIXTURES / "chaos"})


def cli(project: Path, cluster: Cluster, out: Path, *extra: str) -> list[str]:
    return ["matrix.yaml", *CELLS, "--ray-address", cluster.address, "--out", str(out), *extra]


def start(project: Path, args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.Popen([sys.executable, "-m", "orchestrator", *args], cwd=project, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)


def wait_for(predicate: Any, proc: subprocess.Popen[str], what: str, limit_s: float = 150) -> Any:
    deadline = time.monotonic() + limit_s
    while True:
        got = predicate()
        if got:
            return got
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def running_cells(docker_client: Any, max_age_s: float = float("inf")) -> dict[str, str]:
    """cell id -> Ray node id, for this session's containers running for less than max_age_s."""
    out = {}
    for c in docker_client.containers.list(filters=SESSION):
        started = dt.datetime.fromisoformat(c.attrs["State"]["StartedAt"][:26].rstrip("Z") + "+00:00")
        young = (dt.datetime.now(dt.timezone.utc) - started).total_seconds() < max_age_s
        with_node = c.labels.get(NODE_LABEL)
        if with_node and young:
            out[c.labels["lstm-bench.cell"]] = with_node
    return out


def test_cells_spread_over_nodes_one_per_slot(cluster: Cluster, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "spread"
    proc = run_cli(cli(project, cluster, out, "--hidden", "16,17,18,19", "--set", "iters=2"), cwd=project)
    assert proc.returncode == 0, proc.stderr
    records = load_records(out)
    assert [r.status.value for r in records] == ["ok"] * 4
    nodes = {r.slot.rsplit("/", 1)[1] for r in records if r.slot}
    assert nodes == {node_id[:8] for node_id in workers(cluster)}, [r.slot for r in records]
    assert_one_cell_per_slot(records)  # one slot per node here, so one cell per node at a time
    iv = intervals(records)
    assert any(a[0] != b[0] and a[1] < b[2] and b[1] < a[2] for a in iv for b in iv), "nodes never ran together"
    image = records[0].image or {}
    assert image["strategy"] == "build-on-node" and image["tag"].startswith("lstm-bench/chaos-slow:")


def test_a_gpu_run_on_a_cluster_without_gpus_is_refused(cluster: Cluster, project: Path, tmp_path: Path) -> None:
    args = cli(project, cluster, tmp_path / "gpu", "--hidden", "16")
    args[args.index("cpu")] = "gpu"
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 1, proc.stderr
    assert "offers 'GPU'" in proc.stderr
    assert not (tmp_path / "gpu").exists()


def test_an_address_where_nothing_listens_fails_fast(project: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    started = time.monotonic()
    proc = run_cli(["matrix.yaml", *CELLS, "--ray-address", f"127.0.0.1:{port}", "--hidden", "16",
                    "--out", str(tmp_path / "none")], cwd=project, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert f"nothing answers at 127.0.0.1:{port}" in proc.stderr
    assert time.monotonic() - started < 60  # ray.init alone would retry for minutes
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("retries", [2, 0])
def test_a_lost_node_costs_only_its_cell(cluster: Cluster, project: Path, docker_client: Any, tmp_path: Path,
                                         retries: int) -> None:
    out = tmp_path / f"lost-{retries}"
    proc = start(project, cli(project, cluster, out, "--hidden", "16,17,18,19,20", "--set", "iters=4",
                              "--ray-retries", str(retries)))
    try:
        # Let two cells finish first: they must survive the node loss untouched.
        wait_for(lambda: len(list((out / "cells").glob("*/record.json"))) >= 2, proc, "two finished cells")
        before = {p.parent.name: p.read_text() for p in (out / "cells").glob("*/record.json")}
        # A cell that has just started (its container lives ~4 s): it cannot finish before its node is gone.
        victim_cell, victim_node = next(iter(wait_for(lambda: running_cells(docker_client, 1.5), proc,
                                                      "a cell starting").items()))
        cluster.remove_node(workers(cluster)[victim_node], allow_graceful=False)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        add_worker(cluster)  # the next test finds two workers again
    assert proc.returncode == 0, err
    records = {r.cell_id: r for r in load_records(out)}
    assert len(records) == 5, sorted(records)
    for cell_id, text in before.items():  # nothing finished is lost or rewritten
        assert (out / "cells" / cell_id / "record.json").read_text() == text
    lost = records[victim_cell]
    if retries:
        assert lost.status.value == "ok", lost.reason
        assert lost.slot and victim_node[:8] not in lost.slot, "the retry ran on the node that was removed"
    else:
        assert lost.status.value == "crashed"
        assert "lost its Ray worker or node 1 time(s)" in (lost.reason or ""), lost.reason
    others = [r for cid, r in records.items() if cid != victim_cell]
    assert all(r.status.value == "ok" for r in others), [(r.cell_id, r.reason) for r in others]
    assert docker_client.containers.list(all=True, filters=SESSION) == []


def test_ctrl_c_cancels_the_tasks_and_their_containers(cluster: Cluster, project: Path, docker_client: Any,
                                                       tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    # Each cell would run ~30 s: a container still there when the CLI has exited was left by the abort, and a cell
    # recorded at all was taken from a task after Ctrl-C.
    proc = start(project, cli(project, cluster, out, "--hidden", "16,17,18", "--set", "iters=60"))
    try:
        wait_for(lambda: len(running_cells(docker_client)) >= 2, proc, "two running cells")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert docker_client.containers.list(all=True, filters=SESSION) == []
    # Both cells in flight were cancelled by us: not results, so no records (--resume runs them again).
    assert not (out / "results.jsonl").exists() or load_records(out) == []


# ------------------------------------------------------------- Ctrl-C against a task that ignores Ray's polite cancel
# Ray's soft cancel is best effort: on a loaded machine it was seen not to reach the task, whose cell then finished
# ~10 s after Ctrl-C and was recorded ok. These drive RayRunner.run against a scripted cluster to make that
# interleaving happen every time.

TASK = "task-ref"


class ScriptedRay:
    """The few calls RayRunner makes on `ray`: the cell's task answers `finish_after` polls after Ctrl-C (never
    when None) whatever it was told; every sweep of the cell's containers answers at once."""

    exceptions = ray.exceptions

    def __init__(self, runner: RayRunner, finish_after: int | None) -> None:
        self.runner, self.finish_after = runner, finish_after
        self.log: list[tuple[str, Any]] = []
        self.polls_since_abort = 0

    def wait(self, refs: list[Any], timeout: float | None = None, num_returns: int = 1) -> tuple[list[Any], list[Any]]:
        if refs != [TASK]:
            return refs, []
        if not self.runner._aborted.is_set():
            self.runner.abort()  # Ctrl-C while the cell runs
            return [], refs
        self.polls_since_abort += 1
        if self.finish_after is not None and self.polls_since_abort >= self.finish_after:
            self.log.append(("finished", None))
            return refs, []
        return [], refs

    def get(self, ref: Any) -> dict[str, Any]:
        ok = Outcome(0, False, False, '{"status": "ok"}', "", 5.0)
        return {**dataclasses.asdict(ok), "placement": "127.0.0.1/node", "started_at": None}

    def cancel(self, ref: Any, force: bool = False) -> None:
        self.log.append(("cancel", force))


def run_interrupted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, finish_after: int | None
                    ) -> tuple[Outcome, list[tuple[str, Any]]]:
    runner = RayRunner(NodeSpec("run-1", "cpu", "4g", 256, {}, 60), "auto", retries=2)
    runner.nodes = [{"node_id": "n1", "engine_id": "e1"}, {"node_id": "n2", "engine_id": "e2"}]
    fake = ScriptedRay(runner, finish_after)
    sweeps = fake.log

    class Pinned:
        def __init__(self, node_id: str) -> None:
            self.node_id = node_id

        def remote(self, run_id: str, cell_id: str) -> str:
            sweeps.append(("sweep", (self.node_id, run_id, cell_id)))
            return f"sweep-{self.node_id}"

    monkeypatch.setattr(ray_runner, "_ray", lambda: fake)
    monkeypatch.setattr(RayRunner, "_submit", lambda *a: TASK)
    monkeypatch.setattr(RayRunner, "_on", lambda self, node_id, fn: Pinned(node_id))
    (tmp_path / PARAMS_FILE).write_text("{}")
    cell = Cell("chaos", "slow", "default", 16, 0)
    outcome = runner.run(cell, Environment(cell.image_key, "img", {}), tmp_path, "ray0", 600)
    return outcome, fake.log


def test_a_cell_answering_after_ctrl_c_is_aborted_and_its_containers_swept(monkeypatch: pytest.MonkeyPatch,
                                                                            tmp_path: Path) -> None:
    outcome, log = run_interrupted(monkeypatch, tmp_path, finish_after=3)
    assert outcome.error == "aborted", outcome  # not the ok it answered: no record, --resume runs it again
    assert log[0] == ("cancel", False)
    sweeps = [i for i, (what, _) in enumerate(log) if what == "sweep"]
    finished = log.index(("finished", None))
    assert {log[i][1] for i in sweeps} == {("n1", "run-1", "chaos-slow-h16-r0"), ("n2", "run-1", "chaos-slow-h16-r0")}
    assert sweeps[0] < finished < sweeps[-1], log  # swept while it ignored the cancel, and once it had ended
    assert ("cancel", True) not in log  # it ended within the grace: no need to kill its worker


def test_a_task_that_never_ends_after_ctrl_c_is_forced_and_swept(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    monkeypatch.setattr(ray_runner, "ABORT_GRACE_S", 0)
    monkeypatch.setattr(ray_runner, "SWEEP_EVERY_S", 0)
    outcome, log = run_interrupted(monkeypatch, tmp_path, finish_after=None)
    assert outcome.error == "aborted", outcome
    forced = log.index(("cancel", True))
    assert [what for what, _ in log[forced + 1:]] == ["sweep", "sweep"], log  # both engines, after the kill


def test_registry_images_are_pushed_once_and_pulled_by_nodes(cluster: Cluster, project: Path, docker_client: Any,
                                                             registry: str, tmp_path: Path) -> None:
    out = tmp_path / "registry"
    args = cli(project, cluster, out, "--hidden", "16,17", "--set", "iters=1", "--set", f"registry={registry}/t")
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 0, proc.stderr
    records = load_records(out)
    assert [r.status.value for r in records] == ["ok", "ok"]
    image = records[0].image or {}
    ref = image["tag"]
    assert image["strategy"] == "registry" and ref.startswith(f"{registry}/t/lstm-bench/chaos-slow:"), image
    assert requests.get(f"http://{registry}/v2/_catalog", timeout=5).json() == {
        "repositories": ["t/lstm-bench/chaos-slow"]
    }
    # On one machine every node shares the driver's engine, which has the image already; a node without it pulls.
    docker_client.images.remove(ref)  # only the registry tag: the local lstm-bench/... tag keeps the layers
    pulled = pull_on_node(ref)
    assert pulled == {"id": image["id"], "cached": False}
    assert pull_on_node(ref)["cached"] is True
