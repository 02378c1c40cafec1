"""A real cell container, inspected while it runs: locked down as docs/contract.md says, and removed afterwards."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix
from orchestrator.plan import Cell
from orchestrator.runners.base import PARAMS_FILE, Outcome
from orchestrator.runners.docker import FALLBACK_UID, DockerRunner
from orchestrator.store import write_json
from tests.conftest import FIXTURES, SESSION, copy_project

pytestmark = pytest.mark.docker

MEMORY = "256m"
PIDS = 200
MATRIX = f"frameworks: [chaos]\ndevice: cpu\nhidden: [16]\nbatch: 4\nseq_len: 8\nvocab: 100\nmemory: {MEMORY}\n"


def cell_containers(client: Any, cell: Cell) -> list[Any]:
    labels = [f"lstm-bench.session={SESSION}", f"lstm-bench.cell={cell.cell_id}"]
    return client.containers.list(all=True, filters={"label": labels}, ignore_removed=True)


@pytest.fixture(scope="module")
def running(docker_client: Any, base_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """chaos:timeout (it sleeps for an hour) started by the docker runner; aborted when the module is done."""
    root = tmp_path_factory.mktemp("hardening")
    project = copy_project(root / "project", {"chaos": FIXTURES / "chaos"})
    matrix = parse_matrix(MATRIX, "hardening.yaml")
    runner = DockerRunner(
        run_id="hardening-test",
        device="cpu",
        memory=MEMORY,
        pids_limit=PIDS,
        build_args={"BASE_IMAGE": base_image},
        root=project,
        client=docker_client,
    )
    env = runner.prepare(discover(project / "images")["chaos"], "timeout")
    assert env.error is None, env.error
    cell = Cell("chaos", "timeout", "default", 16, 0)
    cell_dir = root / "run" / "cells" / cell.cell_id
    cell_dir.mkdir(parents=True)
    write_json(cell_dir / PARAMS_FILE, cell.params(matrix))

    outcome: list[Outcome] = []
    thread = threading.Thread(target=lambda: outcome.append(runner.run(cell, env, cell_dir, None, 300)))
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not [c for c in cell_containers(docker_client, cell) if c.status == "running"]:
            assert thread.is_alive() and time.monotonic() < deadline, "the cell container did not start"
            time.sleep(0.1)
        (container,) = cell_containers(docker_client, cell)
        yield {
            "container": container,
            "attrs": container.attrs,
            "cell": cell,
            "cell_dir": cell_dir,
            "runner": runner,
            "thread": thread,
            "outcome": outcome,
            "client": docker_client,
            "project": project,
            "matrix": matrix,
        }
    finally:
        runner.abort()
        thread.join(timeout=60)


def exec_in(running: dict[str, Any], *cmd: str) -> tuple[int, str]:
    code, output = running["container"].exec_run(list(cmd))
    return code, output.decode(errors="replace").strip()


def test_runs_as_a_non_root_user(running: dict[str, Any]) -> None:
    # Root on the host would be root in the container: the runner then uses a fixed unprivileged uid.
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() else (FALLBACK_UID, FALLBACK_UID)
    assert running["attrs"]["Config"]["User"] == f"{uid}:{gid}"
    code, out = exec_in(running, "id", "-u")
    assert code == 0 and out == str(uid) and out != "0"


def test_not_privileged_and_every_capability_dropped(running: dict[str, Any]) -> None:
    host = running["attrs"]["HostConfig"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert not host["Devices"] and not host["DeviceRequests"]  # a CPU cell sees no device at all
    code, status = exec_in(running, "cat", "/proc/1/status")
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert code == 0 and fields["CapEff"].strip() == "0" * 16 and fields["CapBnd"].strip() == "0" * 16
    assert fields["NoNewPrivs"].strip() == "1"


def test_no_network(running: dict[str, Any]) -> None:
    assert running["attrs"]["HostConfig"]["NetworkMode"] == "none"
    code, out = exec_in(running, "ls", "/sys/class/net")
    assert code == 0 and out.split() == ["lo"]


def test_read_only_rootfs_and_the_results_dir_the_only_writable_mount(running: dict[str, Any]) -> None:
    assert running["attrs"]["HostConfig"]["ReadonlyRootfs"] is True
    assert not running["attrs"]["HostConfig"]["Binds"]
    mounts = sorted(running["attrs"]["Mounts"], key=lambda m: m["Destination"])
    # The cell's io/ is the only writable mount; params.json is read-only; record.json and log.txt are out of reach.
    assert [(m["Type"], m["Destination"], m["RW"]) for m in mounts] == [
        ("bind", "/params.json", False), ("bind", "/results", True)]
    assert Path(mounts[1]["Source"]) == (running["cell_dir"] / "io").resolve()
    assert list(running["attrs"]["HostConfig"]["Tmpfs"]) == ["/tmp"]  # scratch space in memory, not on the host
    code, out = exec_in(running, "touch", "/opt/lstm-bench/workloads/evil.py")
    assert code != 0 and "Read-only file system" in out
    code, out = exec_in(running, "sh", "-c", "echo x > /params.json")
    assert code != 0 and "Read-only file system" in out
    assert exec_in(running, "touch", "/results/probe")[0] == 0
    assert (running["cell_dir"] / "io" / "probe").is_file()


def test_memory_without_swap_and_a_pids_limit(running: dict[str, Any]) -> None:
    host = running["attrs"]["HostConfig"]
    assert host["Memory"] == 256 << 20 and host["MemorySwap"] == host["Memory"]  # equal: no swap, real OOM
    assert host["PidsLimit"] == PIDS


def test_init_reaps_and_forwards_signals(running: dict[str, Any]) -> None:
    assert running["attrs"]["HostConfig"]["Init"] is True
    code, out = exec_in(running, "cat", "/proc/1/cmdline")
    assert code == 0 and "init" in out.split("\0")[0]


def test_labelled_with_owner_and_run(running: dict[str, Any]) -> None:
    labels = running["attrs"]["Config"]["Labels"]
    assert labels["lstm-bench.managed"] == "true"
    assert labels["lstm-bench.run-id"] == "hardening-test"
    assert labels["lstm-bench.cell"] == running["cell"].cell_id
    assert labels["lstm-bench.pid"] == str(os.getpid())
    assert labels["lstm-bench.session"] == SESSION


def test_aborted_cell_is_removed_and_reported_as_aborted(running: dict[str, Any]) -> None:
    # Last in the module: it ends the container the other tests inspected.
    running["runner"].abort()
    running["thread"].join(timeout=60)
    assert not running["thread"].is_alive()
    (outcome,) = running["outcome"]
    assert outcome.error == "aborted" and not outcome.timed_out
    assert cell_containers(running["client"], running["cell"]) == []


def test_finished_cell_leaves_no_container(running: dict[str, Any], tmp_path: Path) -> None:
    runner, client = running["runner"], running["client"]
    env = runner.prepare(discover(running["project"] / "images")["chaos"], "ok")
    cell = Cell("chaos", "ok", "default", 16, 0)
    cell_dir = tmp_path / cell.cell_id
    cell_dir.mkdir()
    write_json(cell_dir / PARAMS_FILE, cell.params(running["matrix"]))
    fresh = DockerRunner("hardening-ok", "cpu", MEMORY, PIDS, runner.build_args, root=runner.root, client=client)
    outcome = fresh.run(cell, env, cell_dir, None, 120)
    assert outcome.exit_code == 0 and outcome.error is None and outcome.result_text
    assert cell_containers(client, cell) == []
