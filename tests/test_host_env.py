"""A GPU host as lent: the frameworks' usual neighbours installed, none of our own extras (no pydantic, uv, docker
SDK, requests, ray). With the device kit (scripts/device-kit.sh) and nothing else, the local runner must work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, TINY, copy_project, default_signals

# What such a host has (issue 18): the frameworks' own dependencies and the usual data stack.
HOST_PACKAGES = ["numpy", "scipy", "pandas", "jinja2", "rich", "pyyaml", "matplotlib", "nvidia-ml-py"]
ABSENT = ["uv", "docker", "requests", "ray"]
KIT_FOLDER = f"cp{sys.version_info.major}{sys.version_info.minor}"

pytestmark = pytest.mark.slow


def _missing(why: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


@pytest.fixture(scope="module")
def host_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare venv (no site packages) with only the host's packages, then the kit installed the documented way."""
    root = tmp_path_factory.mktemp("host")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=300)
    python = root / "venv" / "bin" / "python"
    uv = shutil.which("uv")  # only to fetch the host's packages quickly (its cache); the kit goes in with pip
    fetch = [uv, "pip", "install", "--quiet", "--python", str(python)] if uv else [str(python), "-m", "pip",
                                                                                    "install", "--quiet"]
    proc = subprocess.run([*fetch, *HOST_PACKAGES], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        _missing(f"cannot install the host's packages (no package index?): {proc.stderr[-500:]}")
    kit = root / "kit"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "device-kit.sh"), str(kit)], capture_output=True,
                          text=True, timeout=600)
    if proc.returncode != 0:
        _missing(f"scripts/device-kit.sh failed (no package index?): {proc.stdout[-300:]}{proc.stderr[-500:]}")
    size = sum(f.stat().st_size for f in kit.rglob("*.whl"))
    assert size < 40 << 20, f"the kit is {size} bytes: too large to carry"
    wheels = sorted(str(w) for w in (kit / KIT_FOLDER).glob("*.whl"))
    assert wheels, f"no wheels for this Python in {kit / KIT_FOLDER}"
    proc = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-index", "--no-deps", *wheels],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name in ABSENT:
        check = subprocess.run([str(python), "-c", f"import {name}"], capture_output=True, timeout=60)
        assert check.returncode != 0, f"{name} is importable in the host-like venv: the test proves nothing"
    return python


def test_local_runner_runs_with_only_the_hosts_packages_and_the_kit(host_python: Path, tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(
        [str(host_python), "-m", "orchestrator", "matrix.yaml", "--only", "numpy-reference", "--runner", "local",
         "--python", "current", "--device", "cpu", "--hidden", "8", *TINY, "--out", str(out), "-q"],
        cwd=project, env={**env, "PYTHONPATH": str(project), "COLUMNS": "200"}, capture_output=True, text=True,
        timeout=600, preexec_fn=default_signals,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (record_file,) = out.glob("cells/*/record.json")
    record = json.loads(record_file.read_text())
    assert record["status"] == "ok", record
    assert (out / "report.html").is_file()
