"""Per-cell resource caps (issue 17), on the real engine with the chaos fixture framework: a cell that writes into
/results until the disk is full costs that cell, not the run; the container log and memory are capped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.errors import InputError
from orchestrator.plan import Cell
from orchestrator.runners.base import Environment
from orchestrator.runners.docker import LOG_CONFIG, MEMORY_RESERVE, DockerRunner, memory_limit
from tests.conftest import run_cli
from tests.test_faults import assert_nothing_corrupt, one_line, project, run_args  # noqa: F401 (project: fixture)

pytestmark = pytest.mark.docker


def test_a_cell_that_fills_results_is_invalid_output_naming_the_size_and_the_run_goes_on(
    base_image: str, project: Path, tmp_path: Path  # noqa: F811
) -> None:
    (project / "fill.yaml").write_text("frameworks:\n  - name: chaos\n    variants: [fillresults, ok]\n"
                                       "device: cpu\nhidden: [16]\n")
    out = tmp_path / "run"
    args = ["fill.yaml", *run_args(out)[1:], "--set", "results_max_mb=8"]
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    cells = assert_nothing_corrupt(out)
    filled = cells["chaos-fillresults-h16-r0"]
    assert filled["status"] == "invalid-output", filled
    assert "into /results, over its cap of 8 MiB" in filled["reason"]
    assert not (out / "cells" / "chaos-fillresults-h16-r0" / "io").exists()
    assert cells["chaos-ok-h16-r0"]["exit_code"] == 0  # the next cell ran, in full
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"


def test_the_container_log_and_memory_are_capped_in_the_container_itself(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    runner = DockerRunner(run_id="caps", device="cpu", memory="auto", pids_limit=64, client=docker_client)
    info = runner.preflight()
    total = docker_client.info()["MemTotal"]
    assert info["caps"]["memory_bytes"] == total - max(MEMORY_RESERVE[0], total // MEMORY_RESERVE[1])
    (tmp_path / "params.json").write_text("{}")
    cell = Cell("chaos", "ok", "default", 16, 0)
    config = runner.container_config(cell, Environment(("chaos", "ok"), base_image, {}), tmp_path, None)
    container = docker_client.containers.create(**config)
    try:
        host = container.attrs["HostConfig"]
    finally:
        container.remove(force=True)
    assert host["LogConfig"] == {"Type": LOG_CONFIG["type"], "Config": LOG_CONFIG["config"]}
    assert host["Memory"] == info["caps"]["memory_bytes"] < total


def test_a_memory_limit_above_the_hosts_ram_is_one_line_exit_2(
    docker_client: Any, project: Path, tmp_path: Path  # noqa: F811
) -> None:
    out = tmp_path / "run"
    proc = run_cli(run_args(out, "--only", "chaos:ok", "--set", "memory=100000g"), cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "memory: 100000g is more than the engine host's RAM" in one_line(proc.stderr)
    assert not out.exists()
    with pytest.raises(InputError):
        memory_limit("9g", 8 << 30)
