"""Every failure kind, made for real (tests/fixtures/chaos and broken) and classified through the CLI.

One docker run and one local run hold most kinds at once (images are content-hashed, so they are built once);
the timeout cells get their own short runs. Each test then checks one cell of those runs.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BUILD_ARG, FIXTURES, TINY, copy_project, run_cli

pytestmark = pytest.mark.docker

# Failure kinds both runners can make; host-oom needs a memory limit, which only the container has.
SHARED_VARIANTS = ["ok", "crash", "garbage", "noresult", "recursion", "devoom", "unsupported"]
REPORT_FILES = ("report.md", "report.html", "results.csv")


def records(run_dir: Path) -> dict[str, dict[str, Any]]:
    lines = (run_dir / "results.jsonl").read_text().splitlines()
    return {doc["cell_id"]: doc for doc in map(json.loads, lines)}


def write_matrix(project: Path, variants: list[str], extra: list[str]) -> Path:
    path = project / "failures.yaml"
    names = "\n".join(f"  - {e}" for e in extra)
    path.write_text(
        f"frameworks:\n  - name: chaos\n    variants: [{', '.join(variants)}]\n{names}\ndevice: cpu\nhidden: [16]\n"
    )
    return path


def run(
    project: Path, out: Path, *args: str, env: dict[str, str] | None = None
) -> tuple[dict[str, dict[str, Any]], Any]:
    proc = run_cli(["failures.yaml", "--out", str(out), "-q", *TINY, *args], cwd=project, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return records(out), proc


@pytest.fixture(scope="module")
def docker_cells(base_image: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("failures-docker")
    project = copy_project(root / "project", {"chaos": FIXTURES / "chaos", "broken": FIXTURES / "broken"})
    write_matrix(project, [*SHARED_VARIANTS, "hostoom"], ["broken"])
    out = root / "run"
    cells, _ = run(project, out, "--build-arg", BUILD_ARG, "--set", "memory=64m", "--set", "timeout_s=120")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "complete"
    for name in REPORT_FILES:
        assert (out / name).is_file(), f"{name} missing from {sorted(p.name for p in out.iterdir())}"
    return cells


@pytest.fixture(scope="module")
def local_cells(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("failures-local")
    project = copy_project(root / "project", {"chaos": FIXTURES / "chaos"})
    # The local runner's "build" is a venv from the framework's CPU requirements; this one cannot install
    # (a local path that does not exist, so pip fails without touching the network).
    badenv = project / "images" / "badenv"
    badenv.mkdir()
    (badenv / "Dockerfile").write_text("FROM scratch\n")
    (badenv / "requirements-cpu.txt").write_text("./no-such-project-dir\n")
    write_matrix(project, SHARED_VARIANTS, ["badenv"])
    out = root / "run"
    cells, _ = run(project, out, "--runner", "local", "--set", "timeout_s=120", env={"LSTM_BENCH_VENVS": str(root)})
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
    return cells


RUNNERS = ["docker_cells", "local_cells"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_ok_cell_still_runs_beside_failures(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-ok-h16-r0"]
    assert cell["status"] == "ok" and cell["reason"] is None and cell["median_ms"] >= 0
    assert len(cell["workload"]["times_ms"]) == 5


@pytest.mark.parametrize("runner", RUNNERS)
def test_crash_without_json_keeps_exit_code_and_stderr(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-crash-h16-r0"]
    assert cell["status"] == "crashed" and cell["exit_code"] == 3
    assert cell["reason"].startswith("exit code 3")
    assert "chaos: segfault-like crash, no JSON" in cell["reason"]
    assert "chaos: segfault-like crash, no JSON" in cell["log_tail"]
    assert cell["workload"] is None


@pytest.mark.parametrize("runner", RUNNERS)
def test_garbage_json_is_invalid_output(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-garbage-h16-r0"]
    assert cell["status"] == "invalid-output" and cell["exit_code"] == 0
    assert cell["reason"].startswith("result JSON does not parse")


@pytest.mark.parametrize("runner", RUNNERS)
def test_exit_zero_without_json_is_invalid_output(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-noresult-h16-r0"]
    assert cell["status"] == "invalid-output" and cell["exit_code"] == 0
    assert "without writing its result JSON" in cell["reason"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_recursion(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-recursion-h16-r0"]
    assert cell["status"] == "recursion"
    assert cell["reason"].startswith("RecursionError: maximum recursion depth")
    assert cell["workload"]["status"] == "recursion"


@pytest.mark.parametrize("runner", RUNNERS)
def test_device_oom_is_oom(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-devoom-h16-r0"]
    assert cell["status"] == "oom"
    assert "CUDA out of memory" in cell["reason"] and cell["reason"].startswith("DeviceOutOfMemory")


@pytest.mark.parametrize("runner", RUNNERS)
def test_unsupported(runner: str, request: pytest.FixtureRequest) -> None:
    cell = request.getfixturevalue(runner)["chaos-unsupported-h16-r0"]
    assert cell["status"] == "unsupported" and "no kernels in this build" in cell["reason"]
    assert cell["median_ms"] is None


def test_host_oom_under_the_container_memory_limit(docker_cells: dict[str, dict[str, Any]]) -> None:
    cell = docker_cells["chaos-hostoom-h16-r0"]
    assert cell["status"] == "host-oom", cell
    assert cell["exit_code"] == 137 and "memory limit" in cell["reason"]


def test_build_failure_keeps_the_log_tail_and_the_run_goes_on(docker_cells: dict[str, dict[str, Any]]) -> None:
    cell = docker_cells["broken-h16-r0"]
    assert cell["status"] == "build-failed" and cell["image"] is None and cell["exit_code"] is None
    assert "returned a non-zero code: 7" in cell["reason"]
    assert "this build step fails on purpose" in cell["reason"]  # the build log's tail, not only the error
    # Built and run in the same invocation, after nothing stopped at the broken image.
    assert docker_cells["chaos-ok-h16-r0"]["status"] == "ok"
    assert len(docker_cells) == len(SHARED_VARIANTS) + 2


def test_local_environment_failure_is_build_failed(local_cells: dict[str, dict[str, Any]]) -> None:
    cell = local_cells["badenv-h16-r0"]
    assert cell["status"] == "build-failed"
    assert "environment for badenv failed" in cell["reason"] and "no-such-project-dir" in cell["reason"]
    assert len(local_cells) == len(SHARED_VARIANTS) + 1


@pytest.mark.parametrize("runner", ["docker", "local"])
def test_timeout_kills_the_cell(runner: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    if runner == "docker":
        request.getfixturevalue("base_image")
    project = copy_project(tmp_path / "project", {"chaos": FIXTURES / "chaos"})
    (project / "failures.yaml").write_text(
        textwrap.dedent("""\
        frameworks: [chaos]
        device: cpu
        hidden: [16]
        """)
    )
    out = tmp_path / "run"
    extra = ["--build-arg", BUILD_ARG] if runner == "docker" else ["--runner", "local"]
    cells, _ = run(project, out, "--only", "chaos:timeout", "--set", "timeout_s=3", *extra)
    cell = cells["chaos-timeout-h16-r0"]
    assert cell["status"] == "timeout", cell
    assert cell["reason"] == "no result within 3 s; the cell was killed"
    # Killed at the limit, not after the workload's hour of sleep; the slack covers start-up and the kill.
    assert 3 <= cell["duration_s"] < 30
    for name in REPORT_FILES:
        assert (out / name).is_file(), name
