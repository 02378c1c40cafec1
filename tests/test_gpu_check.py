"""scripts/gpu-check.sh (issue 18): one line and exit 1 without a GPU; with a stand-in GPU (a fake nvidia-smi and a
fake libnvidia-ml.so.1, tests/fixtures/fake_nvml) every step runs, in order, within its budget, and writes its file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FIXTURES, ROOT

SCRIPT = ROOT / "scripts" / "gpu-check.sh"
H200 = "GPU-00000000-0000-0000-0000-0000000000a0"


def test_without_a_gpu_it_says_so_in_one_line_and_writes_nothing(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi", path="/usr/bin:/bin"):
        pytest.skip("this host has nvidia-smi")
    out = tmp_path / "check"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env={"PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stdout == "" and proc.stderr == "gpu-check: no GPU on this host (nvidia-smi not found)\n"
    assert not out.exists()


@pytest.mark.slow
def test_with_a_stand_in_gpu_every_step_runs_and_keeps_its_output(tmp_path: Path) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the fake NVML library")
    lib, bin_dir = tmp_path / "lib", tmp_path / "bin"
    lib.mkdir()
    bin_dir.mkdir()
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib / "libnvidia-ml.so.1"),
                    str(FIXTURES / "fake_nvml" / "fake_nvml.c")], check=True, timeout=120)
    smi = bin_dir / "nvidia-smi"
    smi.write_text(f'#!/bin/sh\n[ "$1" = -L ] && echo "GPU 0: NVIDIA H200 (UUID: {H200})" || echo "fake $*"\n')
    smi.chmod(0o755)
    out = tmp_path / "check"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "LD_LIBRARY_PATH": str(lib),
           "PYTHON": sys.executable, "GPU_CHECK_BUDGET_S": "300"}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (out / "SUMMARY.txt").read_text()
    steps = [m.group(1) for m in re.finditer(r"^(\S+): exit \d+ after", summary, re.M)]
    assert steps == ["frameworks", "nvml", "bf16", "run-fp32", "run-tf32-bf16", "run-compiled"], summary
    assert "run-fp32: exit 0" in summary and "run-tf32-bf16: exit 0" in summary
    nvml = json.loads((out / "nvml.json").read_text())
    assert nvml["devices"][0]["id"] == H200 and len(nvml["problems"]) == 2
    assert nvml["samples"][H200]["reasons"] == ["sw-power-cap", "board-limit"]
    assert "error" in json.loads((out / "bf16.json").read_text())  # no torch here: said in the file, next step runs
    fp32 = sorted((out / "run-fp32" / "cells").glob("*/record.json"))
    assert {p.parent.name.split("-")[0] for p in fp32} == {"torch", "jax", "flax"}
    assert len(fp32) == 3 * 5  # torch, jax, flax x hidden 128..2048, on the stand-in's three usable devices (UUIDs)
    assert {json.loads(p.read_text())["slot"] for p in fp32} <= {d["id"] for d in nvml["devices"]}
    other = sorted((out / "run-tf32-bf16" / "cells").glob("*/record.json"))
    assert {json.loads(p.read_text())["precision"] for p in other} == {"tf32", "bf16"}
    assert (out / "run-fp32" / "report.md").is_file() and (out / "run-tf32-bf16" / "report.md").is_file()
    compiled = [p.parent.name for p in (out / "run-compiled" / "cells").glob("*/record.json")]
    assert compiled == ["torch-compiled-h512-r0"] and f"run-compiled {compiled[0]} on " in summary
    assert f"GPU 0: NVIDIA H200 (UUID: {H200})" in (out / "env.txt").read_text()
