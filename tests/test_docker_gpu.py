"""The Docker runner's GPU access (issue 18, items 3 and 8): which device request a cell gets (CDI or the toolkit's
`--gpus`), and the per-slot check, one throw-away container with the cell's image and exact request, whose failure
makes the cell `unsupported` with the reason instead of `crashed`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestrator import PROJECT_ROOT
from orchestrator.classify import classify
from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix
from orchestrator.pipeline import Events, execute
from orchestrator.plan import expand
from orchestrator.results import Status
from orchestrator.runners.docker import DockerRunner, cdi_gpus, gpu_request, has_nvidia_runtime
from orchestrator.store import RunStore
from tests.report_helpers import TINY, _yaml

UUID = "GPU-00000000-0000-0000-0000-0000000000a0"
INFO_CDI = {"Runtimes": {"runc": {}}, "CDISpecDirs": ["/etc/cdi", "/var/run/cdi"], "DiscoveredDevices": [
    {"Source": "cdi", "ID": "nvidia.com/gpu=0"}, {"Source": "cdi", "ID": f"nvidia.com/gpu={UUID}"},
    {"Source": "cdi", "ID": "nvidia.com/gpu=all"}, {"Source": "cdi", "ID": "vendor.com/fpga=0"},
]}


def test_cdi_devices_are_detected_and_a_slot_with_a_cdi_name_gets_a_cdi_request() -> None:
    assert cdi_gpus(INFO_CDI) == ["nvidia.com/gpu=0", f"nvidia.com/gpu={UUID}", "nvidia.com/gpu=all"]
    assert has_nvidia_runtime(INFO_CDI)  # no `nvidia` runtime, but CDI devices: a route to the GPUs
    # CDI spec dirs alone (Docker 28 always has them) are not GPUs; nothing here needs an environment variable.
    assert not has_nvidia_runtime({"Runtimes": {"runc": {}}, "CDISpecDirs": ["/etc/cdi"]})
    cdi = gpu_request(UUID, cdi_gpus(INFO_CDI))
    assert (cdi["Driver"], cdi["DeviceIDs"], cdi["Capabilities"]) == ("cdi", [f"nvidia.com/gpu={UUID}"], [])
    legacy = gpu_request("MIG-1234", cdi_gpus(INFO_CDI))  # no CDI name for it: the toolkit's --gpus device=
    assert (legacy["Driver"], legacy["DeviceIDs"], legacy["Capabilities"]) == ("", ["MIG-1234"], [["gpu"]])


@pytest.mark.docker
def test_a_gpu_the_engine_cannot_give_makes_the_cells_unsupported_with_the_reason(
    docker_client: Any, base_image: str, tmp_path: Path
) -> None:
    """This engine has no NVIDIA toolkit: the check's container fails to start, as a driverless CDI setup does."""
    if has_nvidia_runtime(docker_client.info()):
        pytest.skip("this engine can give containers GPUs")
    runner = DockerRunner(run_id="gpucheck", device="gpu", memory="1g", pids_limit=256, client=docker_client)
    runner.prepare = lambda fw, variant, on_line=None: _env(fw, variant, base_image)  # type: ignore[method-assign]
    doc = {"name": "gpucheck", "frameworks": ["numpy-reference"], "hidden": [8, 16], **TINY, "device": "gpu"}
    plan = expand(parse_matrix(_yaml(doc), "<test>"), discover(PROJECT_ROOT / "images"))
    store = RunStore(tmp_path / "run")
    store.open_for_run()
    try:
        summary = execute(plan, runner, store, "gpucheck", [UUID], Events())
    finally:
        store.close()
    assert [r.status for r in summary.records] == [Status.UNSUPPORTED, Status.UNSUPPORTED]
    reason = summary.records[0].reason or ""
    assert reason.startswith("the Docker engine cannot give this container its GPU (")
    assert "NVIDIA Container Toolkit" in reason and "--device cpu" in reason and "Traceback" not in reason
    assert list(runner._gpu_checked) == [UUID]  # one check per slot, not per cell
    mine = docker_client.containers.list(all=True, filters={"label": "lstm-bench.run-id=gpucheck"})
    assert mine == []  # the check's container is gone (other sessions' containers come and go on this engine)
    status, why, _ = classify(runner.run(plan.cells[0], _env(None, None, base_image), tmp_path, UUID, 60), 60)
    assert (status, why) == (Status.UNSUPPORTED, reason)


def test_a_rootless_engine_runs_cells_as_the_namespaces_root(tmp_path: Path) -> None:
    runner = DockerRunner(run_id="r", device="cpu", memory="1g", pids_limit=64, client=object())
    runner.rootless = True
    assert runner._user(tmp_path) == "0:0"  # the host user who owns io/, not a subordinate uid that cannot write it
    runner.rootless = False
    assert runner._user(tmp_path) != "0:0"


def _env(fw: Any, variant: str | None, image: str) -> Any:
    from orchestrator.runners.base import Environment

    return Environment((getattr(fw, "name", "numpy-reference"), variant), image, {"image": image})


def test_a_persistent_cuda_cache_is_mounted_into_gpu_cells_only_when_asked(tmp_path: Path, monkeypatch: Any) -> None:
    from orchestrator.runners.base import Environment

    runner = DockerRunner(run_id="r", device="gpu", memory="1g", pids_limit=64, client=object())
    cell = type("C", (), {"cell_id": "c"})()
    cell_dir = tmp_path / "cell"
    cell_dir.mkdir()
    env = Environment(("tensorflow", None), "img", {})
    config = runner.container_config(cell, env, cell_dir, UUID)  # type: ignore[arg-type]
    assert "CUDA_CACHE_PATH" not in config["environment"] and len(config["mounts"]) == 2
    monkeypatch.setenv("LSTM_BENCH_CUDA_CACHE", str(tmp_path / "cache"))
    config = runner.container_config(cell, env, cell_dir, UUID)  # type: ignore[arg-type]
    assert config["environment"]["CUDA_CACHE_PATH"] == "/cuda-cache"
    assert config["mounts"][-1]["Target"] == "/cuda-cache" and config["mounts"][-1]["Source"] == str(tmp_path / "cache")
    assert config["device_requests"][0]["DeviceIDs"] == [UUID]
    assert "CUDA_CACHE_PATH" not in DockerRunner(run_id="r", device="cpu", memory="1g", pids_limit=64, client=object(
        )).container_config(cell, env, cell_dir, "cpu0")["environment"]  # type: ignore[arg-type]
