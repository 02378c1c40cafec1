"""Slots: one cell per slot at a time, real parallelism, GPU discovery and selection, Ctrl-C with cells in flight."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from orchestrator import gpus
from orchestrator.errors import InputError
from orchestrator.results import CellRecord
from orchestrator.scheduler import SlotPool, cpusets, run_on_slots
from tests.conftest import BUILD_ARG, FIXTURES, copy_project, default_signals, missing, run_cli

# Two timed steps of chaos:slow sleep 1 s; with container start-up a cell takes ~2.5-3 s on this machine.
SLOW = ["--only", "chaos:slow", "--device", "cpu", "--build-arg", BUILD_ARG, "--no-report", "-q",
        "--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=2", "--set", "warmup=1",
        "--set", "repeats=1"]
FOUR_CELLS = ["--hidden", "16,17,18,19"]


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def intervals(records: list[CellRecord]) -> list[tuple[str | None, float, float]]:
    """(slot, start, end) per cell; end = start + the runner's own measured duration."""
    out = []
    for r in records:
        assert r.started_at is not None, r.cell_id
        start = _ts(r.started_at)
        out.append((r.slot, start, start + r.duration_s))
    return out


def assert_one_cell_per_slot(records: list[CellRecord]) -> None:
    by_slot: dict[str | None, list[tuple[float, float]]] = defaultdict(list)
    for slot, start, end in intervals(records):
        by_slot[slot].append((start, end))
    for slot, spans in by_slot.items():
        spans.sort()
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end, f"two cells held slot {slot} at once: {spans}"


def span_s(records: list[CellRecord]) -> float:
    iv = intervals(records)
    return max(e for _, _, e in iv) - min(s for _, s, _ in iv)


def load_records(run_dir: Path) -> list[CellRecord]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return [CellRecord.model_validate_json(line) for line in lines if line.strip()]


# ------------------------------------------------------------------------------------------------ in-process


def test_run_on_slots_never_gives_one_slot_to_two_items() -> None:
    held: dict[str | None, int] = defaultdict(int)
    peak = [0]
    lock = threading.Lock()
    seen: list[tuple[int, str | None]] = []

    def work(item: int, slot: str | None) -> None:
        with lock:
            held[slot] += 1
            assert held[slot] == 1, f"slot {slot} held twice"
            peak[0] = max(peak[0], sum(held.values()))
            seen.append((item, slot))
        time.sleep(0.02)
        with lock:
            held[slot] -= 1

    interrupted = run_on_slots(list(range(24)), ["a", "b", "c"], work, threading.Event(), lambda: None)
    assert not interrupted
    assert sorted(i for i, _ in seen) == list(range(24))
    assert {s for _, s in seen} == {"a", "b", "c"}
    assert peak[0] == 3


def test_run_on_slots_stops_starting_work_after_an_error() -> None:
    started: list[int] = []

    def work(item: int, slot: str | None) -> None:
        started.append(item)
        if item == 0:
            raise OSError("disk full")
        time.sleep(0.01)

    with pytest.raises(OSError, match="disk full"):
        run_on_slots(list(range(50)), ["only"], work, threading.Event(), lambda: None)
    assert len(started) < 50


def test_slot_pool_returns_the_slot_when_the_holder_fails() -> None:
    pool = SlotPool(["gpu0"])
    with pytest.raises(RuntimeError), pool.hold():
        raise RuntimeError("cell blew up")
    got: list[str | None] = []
    t = threading.Thread(target=lambda: got.append(pool.hold().__enter__()))
    t.start()
    t.join(timeout=2)
    assert got == ["gpu0"]


def test_cpusets_split_cores_evenly_and_refuse_oversubscription() -> None:
    assert cpusets(["cpu0", "cpu1"], [0, 1, 2, 3, 4]) == {"cpu0": "0,1", "cpu1": "2,3"}
    assert cpusets(["cpu0"], [3, 1]) == {"cpu0": "1,3"}
    with pytest.raises(InputError, match="3 slots but only 2 CPUs"):
        cpusets(["a", "b", "c"], [0, 1])


NVIDIA_SMI_L = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-2f5a6c1e-0000-1111-2222-333344445555)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-9b1c0d2e-6666-7777-8888-999900001111)
  MIG 1g.5gb      Device  0: (UUID: MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff)
GPU 3: Tesla V100-PCIE-16GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
"""


def test_parse_nvidia_smi_list_gives_whole_gpus_or_a_mig_gpus_devices() -> None:
    found = gpus.parse_nvidia_smi_list(NVIDIA_SMI_L)
    # GPU 1 is in MIG mode: CUDA sees only its MIG device, so that is the slot (item 5 of issue 18).
    assert [(g.index, g.name, g.parent) for g in found] == [
        ("0", "NVIDIA H100 80GB HBM3", None),
        ("1:0", "NVIDIA A100-SXM4-40GB MIG 1g.5gb", "1"),
        ("3", "Tesla V100-PCIE-16GB", None),
    ]
    assert found[1].uuid == "MIG-0a1b2c3d-aaaa-bbbb-cccc-ddddeeeeffff"


def test_select_gpus_gives_uuids() -> None:
    found = gpus.Discovery(gpus.parse_nvidia_smi_list(NVIDIA_SMI_L), "nvidia-smi")
    h100, mig, v100 = (g.uuid for g in found.gpus or [])
    assert gpus.select("all", found) == [h100, mig, v100]
    assert gpus.select((3, 0), found) == [v100, h100]
    assert gpus.select((1,), found) == [mig]
    with pytest.raises(InputError, match=r"GPU 2 not found; usable: GPU 0, 1:0, 3 \(asked nvidia-smi\)"):
        gpus.select((0, 2), found)
    with pytest.raises(InputError, match="no usable GPU found"):
        gpus.select("all", gpus.Discovery([], "nvml"))
    # Nobody could be asked: explicit ids are trusted, "all" means the engine's GPU 0.
    assert gpus.select((1, 2), gpus.Discovery(None, "none")) == ["1", "2"]
    assert gpus.select("all", gpus.Discovery(None, "none")) == ["0"]


def test_cli_rejects_malformed_gpu_lists(tmp_path: Path) -> None:
    proc = run_cli([str(tmp_path / "absent.yaml"), "--gpus", "0,x"])
    assert proc.returncode == 2
    assert "--gpus '0,x': expected 'all' or GPU indices" in proc.stderr


@pytest.mark.docker
def test_container_probe_without_nvidia_runtime_finds_nothing_and_cleans_up(docker_client: Any, base_image: str
                                                                          ) -> None:
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime; the probe would find real GPUs")
    before = {c.id for c in docker_client.containers.list(all=True)}
    assert gpus.from_container(docker_client) is None
    assert {c.id for c in docker_client.containers.list(all=True)} == before


# ------------------------------------------------------------------------------------------------ real runs


@pytest.fixture(scope="module")
def chaos_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_project(tmp_path_factory.mktemp("sched") / "project", {"chaos": FIXTURES / "chaos"})


@pytest.mark.docker
def test_two_slots_run_cells_in_parallel_one_per_slot(chaos_project: Path, base_image: str, tmp_path: Path) -> None:
    spans = {}
    for slots in (2, 1):  # 2 first: it builds the image, which is outside the measured span either way
        out = tmp_path / f"slots{slots}"
        proc = run_cli(["matrix.yaml", *SLOW, *FOUR_CELLS, "--slots", str(slots), "--out", str(out)],
                       cwd=chaos_project)
        assert proc.returncode == 0, proc.stderr
        records = load_records(out)
        assert [r.status.value for r in records] == ["ok"] * 4
        assert {r.slot for r in records} == {f"cpu{i}" for i in range(slots)}
        assert_one_cell_per_slot(records)
        spans[slots] = span_s(records)
    # Sleeping cells barely use a core, so two slots should nearly halve the span; allow for container start-up
    # on two busy cores.
    assert spans[2] < 0.75 * spans[1], spans
    iv = intervals(load_records(tmp_path / "slots2"))
    overlapping = [(a, b) for a in iv for b in iv if a[0] != b[0] and a[1] < b[2] and b[1] < a[2]]
    assert overlapping, "no two cells ever ran at the same time"


@pytest.mark.docker
def test_pinned_cpu_slots_get_disjoint_cpusets(chaos_project: Path, base_image: str, docker_client: Any,
                                               tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        missing("needs at least two CPUs to pin two slots")
    out = tmp_path / "pinned"
    env = {**os.environ, "PYTHONPATH": str(chaos_project)}
    cmd = [sys.executable, "-m", "orchestrator", "matrix.yaml", *SLOW, *FOUR_CELLS, "--slots", "2", "--pin-cpus",
           "--out", str(out)]
    seen: dict[str, str] = {}
    session = {"label": f"lstm-bench.session={os.environ['LSTM_BENCH_SESSION']}"}
    proc = subprocess.Popen(cmd, cwd=chaos_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    try:
        while proc.poll() is None:
            for c in docker_client.containers.list(filters=session):
                seen[c.labels["lstm-bench.cell"]] = c.attrs["HostConfig"]["CpusetCpus"]
            time.sleep(0.3)
    finally:
        _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    expected = cpusets(["cpu0", "cpu1"], cpus)
    slot_of = {r.cell_id: r.slot for r in load_records(out)}
    assert seen, "saw no running container"
    for cell_id, cpuset in seen.items():
        assert cpuset == expected[slot_of[cell_id]], (cell_id, cpuset, expected)
    assert len(set(seen.values())) == 2


@pytest.mark.docker
def test_ctrl_c_with_two_cells_in_flight_keeps_finished_cells_only(chaos_project: Path, base_image: str,
                                                                   docker_client: Any, tmp_path: Path) -> None:
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": str(chaos_project)}
    # Six timed steps: each cell sleeps 3 s, long enough to be interrupted with both slots busy.
    args = ["matrix.yaml", *SLOW, *FOUR_CELLS, "--slots", "2", "--set", "iters=6", "--out", str(out)]
    cmd = [sys.executable, "-m", "orchestrator", *args]
    session = {"label": f"lstm-bench.session={os.environ['LSTM_BENCH_SESSION']}"}
    proc = subprocess.Popen(cmd, cwd=chaos_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals)
    try:
        deadline = time.monotonic() + 120
        while len(docker_client.containers.list(filters=session)) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "two cells never ran at once"
            time.sleep(0.2)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert docker_client.containers.list(all=True, filters=session) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "interrupted"
    # Both cells in flight were killed by us, which is not a result: no record, so --resume runs them again.
    assert not (out / "results.jsonl").exists() or load_records(out) == []
    proc2 = run_cli([*args, "--resume"], cwd=chaos_project)
    assert proc2.returncode == 0, proc2.stderr
    assert [r.status.value for r in load_records(out)] == ["ok"] * 4


@pytest.mark.docker
def test_each_gpu_slot_pins_exactly_its_own_gpu(docker_client: Any, base_image: str, tmp_path: Path) -> None:
    """What the engine stores for a GPU cell on each slot: one explicit device id, never a count.

    Containers are only created (starting one needs the NVIDIA runtime), which is where the request is recorded.
    """
    from orchestrator.plan import Cell
    from orchestrator.runners.base import Environment
    from orchestrator.runners.docker import DockerRunner

    slots = gpus.select("all", gpus.Discovery(gpus.parse_nvidia_smi_list(NVIDIA_SMI_L), "nvidia-smi"))
    runner = DockerRunner("gpu-pin-test", "gpu", "1g", 64, client=docker_client)
    env = Environment(("numpy-reference", None), base_image, {})
    assert slots[0].startswith("GPU-")  # UUIDs: the toolkit takes them, and they mean one GPU to every reader
    for i, slot in enumerate(slots):
        cell_dir = tmp_path / slot
        cell_dir.mkdir()
        (cell_dir / "params.json").write_text("{}\n")  # mounted read-only into the container
        cell = Cell("numpy-reference", None, "default", 16, i)
        container = docker_client.containers.create(**runner.container_config(cell, env, cell_dir, slot))
        try:
            (request,) = container.attrs["HostConfig"]["DeviceRequests"]
        finally:
            container.remove(force=True)
        assert request["DeviceIDs"] == [slot] and not request["Count"], request
        assert request["Capabilities"] == [["gpu"]]
