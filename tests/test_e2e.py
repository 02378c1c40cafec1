"""End to end on the real Docker engine: matrix -> images -> containers -> JSON -> report, as a user runs it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from orchestrator.results import RECORD_SCHEMA_VERSION
from tests.conftest import BUILD_ARG, FIXTURES, TINY, run_cli

pytestmark = pytest.mark.docker
OUTPUTS = ("results.jsonl", "report.md", "report.html", "results.csv", "manifest.json")


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_small_cpu_matrix_end_to_end(base_image: str, project_copy, tmp_path: Path) -> None:
    project = project_copy({"chaos": FIXTURES / "chaos"})
    out = tmp_path / "run"
    args = [
        "matrix.yaml",
        "--only",
        "numpy-reference,chaos:ok",
        "--hidden",
        "8,16",
        "--device",
        "cpu",
        "--build-arg",
        BUILD_ARG,
        "--out",
        str(out),
        *TINY,
    ]
    proc = run_cli(args, cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    records = lines(out / "results.jsonl")
    assert [(r["framework"], r["hidden"]) for r in records] == [
        ("numpy-reference", 8),
        ("numpy-reference", 16),
        ("chaos", 8),
        ("chaos", 16),
    ]
    for r in records:
        assert r["schema_version"] == RECORD_SCHEMA_VERSION and r["status"] == "ok", r
        assert r["median_ms"] > 0 and r["mean_ms"] > 0
        assert r["workload"]["params"]["batch"] == 4 and len(r["workload"]["times_ms"]) == 5
        assert r["image"]["tag"].startswith("lstm-bench/") and r["image"]["id"].startswith("sha256:")
        # Start-up, read inside the container from its entrypoint's start: within what the host saw it live.
        w = r["workload"]
        assert 0 < w["import_s"] < w["to_first_step_s"] <= r["duration_s"] + 0.01, w
        assert w["first_step_s"] > 0 and w["build_s"] <= w["setup_s"], w
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "complete"
    assert manifest["runner"]["docker_version"]
    assert manifest["environments"]["numpy-reference"]["versions"]["numpy"]
    assert manifest["matrix"]["hidden"] == [8, 16]
    table = (out / "report.md").read_text()
    assert "hidden-8" in table and "hidden-16" in table and "numpy (reference)" in table
    assert "## Start-up and first step" in table and "| to first step s |" in table

    # An unchanged image is not rebuilt; `report DIR` re-renders without running anything.
    again = run_cli([*args[: -len(TINY) - 2], "--out", str(tmp_path / "run2"), *TINY], cwd=project)
    assert again.returncode == 0, again.stderr
    assert all(r["image"]["cached"] for r in lines(tmp_path / "run2" / "results.jsonl"))
    (out / "report.md").unlink()
    rerender = run_cli(["report", str(out)], cwd=project)
    assert rerender.returncode == 0, rerender.stderr
    assert (out / "report.md").read_text() == table


def test_dropping_in_a_framework_folder_is_enough(base_image: str, project_copy, tmp_path: Path) -> None:
    """A new framework = a new images/<name>/ folder (+ its workload); the orchestrator is not edited."""
    project = project_copy()
    folder = project / "images" / "tiny-numpy"
    folder.mkdir()
    (folder / "Dockerfile").write_text(
        textwrap.dedent("""\
        ARG BASE_IMAGE=lstm-bench/base:bookworm-numpy
        FROM ${BASE_IMAGE}
        COPY workloads/__init__.py workloads/harness.py workloads/numpy_reference.py workloads/tiny_numpy.py \\
             /opt/lstm-bench/workloads/
        WORKDIR /opt/lstm-bench
        USER 10001
        ENTRYPOINT ["python3", "-m", "workloads.tiny_numpy"]
        """)
    )
    (project / "workloads" / "tiny_numpy.py").write_text(
        textwrap.dedent("""\
        from workloads import harness
        from workloads.numpy_reference import NumpyReference


        class TinyNumpy(NumpyReference):
            name = "tiny-numpy"


        if __name__ == "__main__":
            raise SystemExit(harness.run(TinyNumpy))
        """)
    )
    matrix = project / "all.yaml"
    matrix.write_text("frameworks: all\nhidden: [8]\ndevice: cpu\n")
    listed = run_cli([str(matrix), "--dry-run"], cwd=project)
    assert listed.returncode == 0 and "tiny-numpy hidden=8" in listed.stdout, listed.stdout + listed.stderr
    out = tmp_path / "run"
    proc = run_cli(
        [str(matrix), "--only", "tiny-numpy", "--build-arg", BUILD_ARG, "--out", str(out), *TINY], cwd=project
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = lines(out / "results.jsonl")
    assert record["framework"] == "tiny-numpy" and record["status"] == "ok"
    assert record["workload"]["param_count"] == record["workload"]["param_count_expected"]


def test_resume_runs_only_missing_cells(base_image: str, project_copy, tmp_path: Path) -> None:
    project = project_copy()
    out = tmp_path / "run"
    base = [
        "matrix.yaml",
        "--only",
        "numpy-reference",
        "--device",
        "cpu",
        "--build-arg",
        BUILD_ARG,
        "--out",
        str(out),
        "--no-report",
        *TINY,
    ]
    assert run_cli([*base, "--hidden", "8,16"], cwd=project).returncode == 0
    first = {r["cell_id"]: r["finished_at"] for r in lines(out / "results.jsonl")}
    (out / "cells" / "numpy-reference-loop-h16-r0" / "record.json").unlink()
    proc = run_cli([*base, "--hidden", "8,16", "--resume"], cwd=project)
    assert proc.returncode == 0, proc.stderr
    after = {r["cell_id"]: r["finished_at"] for r in lines(out / "results.jsonl")}
    assert after["numpy-reference-loop-h8-r0"] == first["numpy-reference-loop-h8-r0"]
    assert set(after) == set(first)
    changed = run_cli([*base, "--hidden", "8,32", "--resume"], cwd=project)
    assert changed.returncode == 2 and "the matrix differs" in changed.stderr, changed.stderr


def test_local_runner_picks_the_variant_environment() -> None:
    """A framework with only per-variant CPU requirements (keras) gets its variant's venv, not this Python."""
    import sys

    from orchestrator.frameworks import discover
    from orchestrator.runners.local import LocalRunner
    from orchestrator.venvs import requirements_file
    from tests.conftest import ROOT

    keras = discover(ROOT / "images")["keras"]
    assert keras.cpu_requirements is None
    req = requirements_file(keras, "jax")
    assert req is not None and req.name == "requirements-cpu-jax.txt"
    env = LocalRunner(device="cpu").prepare(keras, "jax")
    assert env.error is None and env.ref != sys.executable and "keras-jax" in str(env.ref)
