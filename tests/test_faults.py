"""Faults around the run, on the real engine and a real CLI subprocess: no engine, no GPU runtime, Ctrl-C,
SIGKILL, two runs on one directory, unwritable or full output, a hanging build, a flooding workload, hostile names.

What every test checks, whatever the fault: one clear line and the documented exit code, nothing finished is lost
or corrupt, and no container is left behind (tests/conftest.py checks the last at the end of the session).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator.runners.base import io_dir
from tests.conftest import BUILD_ARG, FIXTURES, SESSION, copy_project, default_signals, missing, run_cli

pytestmark = pytest.mark.docker

# Tiny cells; iters/warmup low so that each chaos:slow cell (0.5 s per step) takes about two seconds.
SMALL = ["--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=2", "--set", "warmup=0"]
INTERRUPT_MATRIX = "frameworks:\n  - name: chaos\n    variants: [ok, slow]\ndevice: cpu\nhidden: [16, 24, 32, 40]\n"
OK_CELLS = [f"chaos-ok-h{h}-r0" for h in (16, 24, 32, 40)]
SLOW_CELLS = [f"chaos-slow-h{h}-r0" for h in (16, 24, 32, 40)]


# ---------------------------------------------------------------------------------------------- helpers


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = copy_project(tmp_path / "project", {"chaos": FIXTURES / "chaos"})
    (root / "faults.yaml").write_text(INTERRUPT_MATRIX)
    return root


def run_args(out: Path, *extra: str) -> list[str]:
    return ["faults.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", "--no-report", *SMALL, *extra]


def start_cli(args: list[str], cwd: Path, logs: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"}
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=env,
        stdout=(logs / "stdout").open("wb"),
        stderr=(logs / "stderr").open("wb"),
        preexec_fn=default_signals,
    )


def session_containers(client: Any, cell_id: str | None = None, running: bool = False) -> list[Any]:
    labels = [f"lstm-bench.session={SESSION}"] + ([f"lstm-bench.cell={cell_id}"] if cell_id else [])
    filters: dict[str, Any] = {"label": labels}
    if running:
        filters["status"] = "running"
    return client.containers.list(all=not running, filters=filters, ignore_removed=True)


def wait_for_running(client: Any, cell_id: str, proc: subprocess.Popen[bytes], timeout: float = 600) -> None:
    """Until the cell's container runs (the first call also waits for the images to be built)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if session_containers(client, cell_id, running=True):
            return
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {cell_id} started"
        time.sleep(0.1)
    raise AssertionError(f"{cell_id} did not start within {timeout} s")


def record_texts(out: Path) -> dict[str, str]:
    return {p.parent.name: p.read_text() for p in sorted((out / "cells").glob("*/record.json"))}


def assert_nothing_corrupt(out: Path) -> dict[str, dict[str, Any]]:
    """Every stored file parses; results.jsonl holds exactly the cells that have a record.json."""
    records = {cid: json.loads(text) for cid, text in record_texts(out).items()}
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(r["cell_id"] for r in lines) == sorted(records)
    json.loads((out / "manifest.json").read_text())
    return records


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def stderr_of(logs: Path) -> str:
    return (logs / "stderr").read_text(errors="replace")


# ---------------------------------------------------------------------------------------------- 1, 2: preflight


def test_unreachable_engine_is_one_line_exit_1_and_writes_nothing(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(run_args(out), cwd=project, env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("error: cannot reach the Docker engine at unix:///nonexistent.sock")
    assert not out.exists()


def test_gpu_without_nvidia_runtime_names_the_toolkit_and_cpu(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    if "nvidia" in (docker_client.info().get("Runtimes") or {}):
        pytest.skip("this engine has the NVIDIA runtime, so a GPU run is allowed here")
    # A framework no earlier test built: had a build started, its image would exist afterwards.
    name = f"nobuild{uuid.uuid4().hex[:8]}"
    (project / "images" / name).mkdir()
    (project / "images" / name / "Dockerfile").write_text(f"FROM {base_image}\nRUN true\n")
    out = tmp_path / "run"
    proc = run_cli(run_args(out, "--only", name, "--device", "gpu"), cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert "NVIDIA Container Toolkit" in line and "--device cpu" in line
    assert not out.exists()
    assert docker_client.images.list(filters={"label": f"lstm-bench.framework={name}"}) == []


# ---------------------------------------------------------------------------------------------- 3: Ctrl-C


def test_sigint_stops_cells_keeps_finished_ones_and_resume_finishes(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    proc = start_cli(run_args(out), project, tmp_path / "logs")
    wait_for_running(docker_client, SLOW_CELLS[0], proc)
    before = record_texts(out)
    assert sorted(before) == sorted(OK_CELLS)  # one slot: the ok cells finished before the first slow one

    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, stderr_of(tmp_path / "logs")
    assert time.monotonic() - sent < 10
    assert session_containers(docker_client) == []  # stopped and removed before the CLI exited

    records = assert_nothing_corrupt(out)
    assert record_texts(out) == before  # the interrupted cell has no record: --resume runs it again
    assert all(r["status"] == "ok" for r in records.values())
    assert json.loads((out / "manifest.json").read_text())["state"] == "interrupted"
    assert "Traceback" not in stderr_of(tmp_path / "logs")

    resumed = run_cli(run_args(out, "--resume"), cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    after = record_texts(out)
    assert sorted(after) == sorted(OK_CELLS + SLOW_CELLS)
    assert {cid: after[cid] for cid in OK_CELLS} == before  # untouched, same finished_at
    assert all(r["status"] == "ok" for r in assert_nothing_corrupt(out).values())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "complete" and len(manifest["resumed_at"]) == 1


def test_sigterm_stops_the_run_like_ctrl_c(docker_client: Any, base_image: str, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = start_cli(run_args(out, "--only", "chaos:slow", "--hidden", "16,24"), project, tmp_path / "logs")
    wait_for_running(docker_client, SLOW_CELLS[0], proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130, stderr_of(tmp_path / "logs")
    assert session_containers(docker_client) == []
    assert record_texts(out) == {}
    assert json.loads((out / "manifest.json").read_text())["state"] == "interrupted"


def build_containers(client: Any, token: str) -> list[Any]:
    """The legacy builder's step containers whose command holds `token` (no labels of ours on them)."""
    containers = client.containers.list(all=True, ignore_removed=True)
    return [c for c in containers if token in " ".join(c.attrs["Config"]["Cmd"] or [])]


def hanging_framework(project: Path) -> str:
    token = uuid.uuid4().hex[:12]
    (project / "images" / "hang").mkdir()
    (project / "images" / "hang" / "Dockerfile").write_text(
        f"ARG BASE_IMAGE\nFROM ${{BASE_IMAGE}}\nRUN echo hang-{token} && sleep 600\n"
        'ENTRYPOINT ["python3"]\n'  # its own entrypoint: no shared tail (it has no workload to copy)
    )
    return token


def test_ctrl_c_during_a_build_stops_it(docker_client: Any, base_image: str, project: Path, tmp_path: Path) -> None:
    token = hanging_framework(project)
    out = tmp_path / "run"
    proc = start_cli(run_args(out, "--only", "hang,chaos:ok", "--hidden", "16"), project, tmp_path / "logs")
    deadline = time.monotonic() + 120
    while not build_containers(docker_client, token):
        assert proc.poll() is None and time.monotonic() < deadline, stderr_of(tmp_path / "logs")
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130, stderr_of(tmp_path / "logs")
    assert record_texts(out) == {}
    assert json.loads((out / "manifest.json").read_text())["state"] == "interrupted"
    deadline = time.monotonic() + 30
    while build_containers(docker_client, token) and time.monotonic() < deadline:
        time.sleep(1)
    assert build_containers(docker_client, token) == []  # the engine cancelled the abandoned build


# ---------------------------------------------------------------------------------------------- 4: SIGKILL


def test_sigkill_leaves_orphans_that_clean_and_the_next_preflight_remove(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = start_cli(run_args(out), project, tmp_path / "logs1")
    wait_for_running(docker_client, SLOW_CELLS[0], first)
    first.kill()
    first.wait(timeout=30)
    before = record_texts(out)
    assert sorted(before) == sorted(OK_CELLS)
    assert_nothing_corrupt(out)
    assert len(session_containers(docker_client, SLOW_CELLS[0])) == 1  # nobody was left to remove it

    cleaned = run_cli(["clean"], cwd=project)
    assert cleaned.returncode == 0, cleaned.stderr
    assert int(cleaned.stdout.split()[1]) >= 1, cleaned.stdout  # "removed N container(s)"
    assert session_containers(docker_client) == []

    # Killed again mid-resume; this time the next run's preflight finds the orphan.
    second = start_cli(run_args(out, "--resume"), project, tmp_path / "logs2")
    wait_for_running(docker_client, SLOW_CELLS[0], second)
    second.kill()
    second.wait(timeout=30)
    assert len(session_containers(docker_client, SLOW_CELLS[0])) == 1
    assert_nothing_corrupt(out)

    final = run_cli(run_args(out, "--resume"), cwd=project)
    assert final.returncode == 0, final.stdout + final.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runner"]["orphans_removed"] >= 1 and manifest["state"] == "complete"
    records = assert_nothing_corrupt(out)
    assert sorted(records) == sorted(OK_CELLS + SLOW_CELLS)
    assert all(r["status"] == "ok" for r in records.values())
    assert {cid: record_texts(out)[cid] for cid in OK_CELLS} == before
    assert session_containers(docker_client) == []


# ---------------------------------------------------------------------------------------------- 5: one dir, two runs


def test_second_run_on_the_same_out_is_refused(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    # The first run's cell is held (up to 200 steps of 0.5 s) until the two others have been refused, then released.
    args = run_args(out, "--only", "chaos:held", "--hidden", "16", "--set", "iters=200")
    first = start_cli(args, project, tmp_path / "logs")
    wait_for_running(docker_client, "chaos-held-h16-r0", first)
    fresh = run_cli(args, cwd=project)  # a used --out is only ever finished with --resume
    assert fresh.returncode == 2 and "--resume" in one_line(fresh.stderr), fresh.stdout + fresh.stderr
    second = run_cli([*args, "--resume"], cwd=project)
    assert second.returncode == 1, second.stdout + second.stderr
    line = one_line(second.stderr)
    assert f"output directory {out} is in use by another run" in line and "another --out" in line

    (io_dir(out / "cells" / "chaos-held-h16-r0") / "release").touch()
    assert first.wait(timeout=300) == 0, stderr_of(tmp_path / "logs")  # the first run did not notice
    records = assert_nothing_corrupt(out)
    assert [r["status"] for r in records.values()] == ["ok"]
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"


# ---------------------------------------------------------------------------------------------- 6: output dir


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Any]:
    """Mounts a tmpfs with the given options at a fresh directory; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(options: str) -> Path:
        target = tmp_path / f"mnt{len(mounted)}"
        target.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], capture_output=True)
        if proc.returncode != 0:
            missing(f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", str(target)], check=False)


@pytest.mark.parametrize("case", ["under-a-file", "read-only", "full"])
def test_unusable_out_fails_before_any_cell(
    case: str, docker_client: Any, base_image: str, project: Path, tmp_path: Path, mount_point: Any
) -> None:
    if case == "under-a-file":
        (tmp_path / "plain-file").write_text("x")
        out, expected = tmp_path / "plain-file" / "run", "is not writable"
    elif case == "read-only":
        out, expected = mount_point("ro,size=1m") / "run", "is not writable"
    else:
        out, expected = mount_point("size=1m") / "run", "MiB free; need at least"
    name = f"nobuild{uuid.uuid4().hex[:8]}"
    (project / "images" / name).mkdir()
    (project / "images" / name / "Dockerfile").write_text(f"FROM {base_image}\nRUN true\n")
    proc = run_cli(run_args(out, "--only", name), cwd=project)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith(f"error: output directory {out}") and expected in line, line
    assert docker_client.images.list(filters={"label": f"lstm-bench.framework={name}"}) == []
    assert not (out / "results.jsonl").exists()


def fill_up(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * (1 << 20)):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)


def test_disk_filling_up_mid_run_is_one_line_and_loses_nothing(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path, mount_point: Any
) -> None:
    disk = mount_point("size=24m")  # just above the room a run asks for at the start
    out = disk / "run"
    proc = start_cli(run_args(out), project, tmp_path / "logs")
    wait_for_running(docker_client, SLOW_CELLS[0], proc)
    before = record_texts(out)
    assert sorted(before) == sorted(OK_CELLS)
    fill_up(disk)
    assert proc.wait(timeout=120) == 1, stderr_of(tmp_path / "logs")
    line = one_line(stderr_of(tmp_path / "logs"))
    assert line.startswith("error: No space left on device") and f"--resume --out {out}" in line, line
    assert session_containers(docker_client) == []

    # Nothing finished is lost or torn: every file parses, the finished records are byte for byte the same.
    after = record_texts(out)
    assert {cid: after[cid] for cid in before} == before
    stored = {json.loads(text)["cell_id"] for text in after.values()}
    listed = {json.loads(line)["cell_id"] for line in (out / "results.jsonl").read_text().splitlines()}
    assert listed <= stored
    (disk / "filler").unlink()
    resumed = run_cli(run_args(out, "--resume"), cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    records = assert_nothing_corrupt(out)
    assert sorted(records) == sorted(OK_CELLS + SLOW_CELLS)
    assert {cid: record_texts(out)[cid] for cid in before} == before


# ---------------------------------------------------------------------------------------------- 7: hanging build


def test_hanging_build_times_out_and_the_run_goes_on(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    token = hanging_framework(project)
    out = tmp_path / "run"
    started = time.monotonic()
    proc = run_cli(run_args(out, "--only", "hang,chaos:ok", "--hidden", "16", "--set", "build_timeout_s=5"), project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert time.monotonic() - started < 300  # not the build's 600 s
    records = assert_nothing_corrupt(out)
    hang = records["hang-h16-r0"]
    assert hang["status"] == "build-failed" and "timed out after 5 s" in hang["reason"]
    assert f"hang-{token}" in hang["reason"]  # the build log's tail came along
    assert records["chaos-ok-h16-r0"]["status"] == "ok"

    # The engine dropped the abandoned build step, rather than leaving it asleep for ten minutes.
    deadline = time.monotonic() + 30
    while build_containers(docker_client, token) and time.monotonic() < deadline:
        time.sleep(1)
    assert build_containers(docker_client, token) == []


# ---------------------------------------------------------------------------------------------- 8: flood


MAX_RSS = """
import resource, subprocess, sys
rc = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
"""
FLOOD_BYTES = 200_000 * 1001  # tests/fixtures/chaos/workload.py, variant floodfail


def cli_with_peak_rss(project: Path, args: list[str]) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run the CLI under a fresh parent; the peak RSS (bytes) of it and of the processes it waited for."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    proc = subprocess.run(
        [sys.executable, "-c", MAX_RSS, sys.executable, "-m", "orchestrator", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc, int(proc.stdout.strip().splitlines()[-1]) * 1024  # ru_maxrss is in KiB on Linux


@pytest.mark.parametrize("runner", ["docker", "local"])
def test_flooding_workload_costs_bounded_memory_and_keeps_its_last_words(
    runner: str, request: pytest.FixtureRequest, project: Path, tmp_path: Path
) -> None:
    if runner == "docker":
        request.getfixturevalue("base_image")
    out = tmp_path / "run"
    args = run_args(out, "--only", "chaos:floodfail", "--hidden", "16", "--runner", runner)
    _, peak = cli_with_peak_rss(project, args)
    # The same run of a cell that writes almost nothing: what the orchestrator itself needs (its imports, the
    # report), so that the bound below is about the flood alone, whatever the orchestrator's own size.
    _, quiet = cli_with_peak_rss(project, run_args(tmp_path / "quiet", "--only", "chaos:crash", "--hidden", "16",
                                                   "--runner", runner))
    # The orchestrator (and, with the local runner, the workload it waits for) never held the flood.
    assert peak - quiet < FLOOD_BYTES / 2, \
        f"peak RSS {peak >> 20} MiB with a {FLOOD_BYTES >> 20} MB flood, {quiet >> 20} MiB without"
    cell = assert_nothing_corrupt(out)["chaos-floodfail-h16-r0"]
    assert cell["status"] == "crashed" and cell["exit_code"] == 5
    assert "chaos: flooded both streams, now crashing" in cell["log_tail"]
    assert "chaos: flooded both streams, now crashing" in cell["reason"]
    assert len(cell["log_tail"]) <= 4000


@pytest.mark.parametrize("runner", ["docker", "local"])
def test_huge_result_file_is_not_read_whole(
    runner: str, request: pytest.FixtureRequest, project: Path, tmp_path: Path
) -> None:
    if runner == "docker":
        request.getfixturevalue("base_image")
    out = tmp_path / "run"
    args = run_args(out, "--only", "chaos:bigresult", "--hidden", "16", "--runner", runner)
    _, peak = cli_with_peak_rss(project, args)
    assert peak < 512 << 20, f"peak RSS {peak >> 20} MiB for a 2 GiB result file"
    cell = assert_nothing_corrupt(out)["chaos-bigresult-h16-r0"]
    assert cell["status"] == "invalid-output" and cell["reason"].startswith("result JSON")


# ---------------------------------------------------------------------------------------------- 10: hostile input


HOSTILE = ["../etc", "a/b", "a b", "x;rm -rf /", "$(id)", "`id`", "..", "Chaos", "x\ny", "chaos:../../x", "chaos:a b"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_in_only_exit_2_one_line(name: str, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(run_args(out, "--only", name), cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("error: ")
    assert not out.exists()


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_in_the_matrix_exit_2_one_line(name: str, project: Path, tmp_path: Path) -> None:
    framework, _, variant = name.partition(":")
    entry = {"name": framework, **({"variants": [variant]} if variant else {})}
    (project / "hostile.yaml").write_text(json.dumps({"frameworks": [entry], "device": "cpu"}))
    out = tmp_path / "run"
    proc = run_cli(["hostile.yaml", "--out", str(out)], cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert line.startswith("error: ")
    assert not out.exists()


@pytest.mark.parametrize("key", ["variants", "impls"])
def test_hostile_variant_in_a_framework_yaml_cannot_escape_the_run_dir(key: str, project: Path, tmp_path: Path) -> None:
    # Variants and impls become cell ids, i.e. directory names under RUN/cells/: "../.." would write elsewhere.
    (project / "images" / "evil").mkdir()
    (project / "images" / "evil" / "Dockerfile").write_text("FROM scratch\n")
    (project / "images" / "evil" / "framework.yaml").write_text(f'{key}: ["../../../../escaped"]\n')
    (project / "evil.yaml").write_text("frameworks: [evil]\ndevice: cpu\nhidden: [16]\n")
    out = tmp_path / "a" / "b" / "run"
    proc = run_cli(["evil.yaml", "--runner", "local", "--out", str(out)], cwd=project)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert "framework.yaml" in line and f"'{key}.0'" in line
    assert not (tmp_path / "a").exists()


def test_markup_in_an_error_message_is_escaped_in_the_html_report(
    base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = [a for a in run_args(out, "--only", "chaos:xss", "--hidden", "16") if a != "--no-report"]
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    cell = assert_nothing_corrupt(out)["chaos-xss-h16-r0"]
    assert cell["status"] == "crashed" and "<script>alert(1)</script>" in cell["reason"]
    html = (out / "report.html").read_text()
    assert "<script>alert(1)</script>" not in html and "<b>bold</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
