"""A drop-in whose sdist needs an old build tool (images/<name>/build-constraints.txt, docs/adding-a-framework.md):
Chainer 1.19.0 (tests/fixtures/chainer-2016), an sdist whose setup.py imports pkg_resources, runs `ok` and `✓` on
the local runner from empty uv and venv caches with no environment variable; without its build constraints the
reason's first line is the cause. Also: the root-cause line of uv, pip and docker output, the venv cache key, and
the static check of an image that has build constraints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.frameworks import Framework, FrameworkMeta
from orchestrator.rootcause import keep_first_line, root_cause
from orchestrator.venvs import venv_path
from tests.conftest import FIXTURES, TINY, copy_project, run_cli

CHAINER = FIXTURES / "chainer-2016"
UV_FAILURE = """\
error: Failed to build `chainer==1.19.0`
  cause: The build backend returned an error
  cause: Call to `setuptools.build_meta:__legacy__.get_requires_for_build_wheel` failed (exit status: 1)

         [stderr]
         Traceback (most recent call last):
           File "/tmp/x/chainer_setup_build.py", line 8, in <module>
             import pkg_resources
         ModuleNotFoundError: No module named 'pkg_resources'

hint: This error likely indicates that `chainer@1.19.0` depends on `pkg_resources`, but doesn't declare it
"""


def _cold_env(tmp_path: Path) -> dict[str, str]:
    """Empty uv and venv caches; no build-constraint variable from the caller's shell."""
    for name in ("UV_BUILD_CONSTRAINT", "PIP_BUILD_CONSTRAINT", "PIP_CONSTRAINT", "UV_CONSTRAINT"):
        os.environ.pop(name, None)  # run_cli starts from os.environ
    return {"LSTM_BENCH_VENVS": str(tmp_path / "venvs"), "UV_CACHE_DIR": str(tmp_path / "uv-cache")}


def _run_chainer(project: Path, out: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return run_cli(["matrix.yaml", "--only", "chainer-2016,numpy-reference", "--runner", "local", "--device", "cpu",
                    "--hidden", "8", *TINY, "--out", str(out)], cwd=project, env=env, timeout=900)


def test_an_sdist_only_2016_framework_runs_ok_and_equivalent_from_cold_caches(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", {"chainer-2016": CHAINER})
    out = tmp_path / "run"
    proc = _run_chainer(project, out, _cold_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["framework"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert records["chainer-2016"]["status"] == "ok", records["chainer-2016"]["reason"]
    (row,) = [line for line in (out / "report.md").read_text().splitlines()
              if line.startswith("| chainer (2016)") and "✓" in line]
    assert "✗" not in row
    assert "chainer-2016" in " ".join(p.name for p in (tmp_path / "venvs").iterdir())  # the cold cache was used


def test_without_build_constraints_the_reason_and_the_console_start_with_the_cause(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", {"chainer-2016": CHAINER})
    (project / "images" / "chainer-2016" / "build-constraints.txt").unlink()
    out = tmp_path / "run"
    proc = _run_chainer(project, out, _cold_env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = {r["framework"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    record = records["chainer-2016"]
    assert record["status"] == "build-failed"
    first = record["reason"].splitlines()[0]
    assert first == "environment for chainer-2016 failed: ModuleNotFoundError: No module named 'pkg_resources'"
    assert "No module named 'pkg_resources'" in proc.stdout + proc.stderr


@pytest.mark.docker
@pytest.mark.parametrize("constrained", [True, False], ids=["with", "without"])
def test_the_image_applies_its_build_constraints(docker_client: object, tmp_path: Path, constrained: bool) -> None:
    """The Docker path: the fixture's Dockerfile (the scaffold's shape) builds the sdist in pip's isolated build on
    the registry-free stand-in base (pip older than 25.3: PIP_CONSTRAINT reaches its build environments) and runs
    ok; without the constraints the build fails and its reason starts with the cause."""
    from tests.image_tiers import make_python_base

    base = make_python_base()
    project = copy_project(tmp_path / "project", {"chainer-2016": CHAINER})
    if not constrained:
        dockerfile = project / "images" / "chainer-2016" / "Dockerfile"
        dockerfile.write_text(dockerfile.read_text().replace(
            "PIP_CONSTRAINT=/opt/lstm-bench/build-constraints.txt PIP_BUILD_CONSTRAINT=/opt/lstm-bench/build-"
            "constraints.txt ", ""))
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "chainer-2016", "--device", "cpu", "--hidden", "8", *TINY,
                    "--build-arg", f"BASE_IMAGE={base}", "--out", str(out), "--no-report"], cwd=project, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = map(json.loads, (out / "results.jsonl").read_text().splitlines())
    if constrained:
        assert record["status"] == "ok", record["reason"]
        assert record["workload"]["versions"]["framework"] == "1.19.0"
    else:
        assert record["status"] == "build-failed"
        assert record["reason"].splitlines()[0] == "ModuleNotFoundError: No module named 'pkg_resources'", \
            record["reason"][:2000]


def test_the_venv_cache_key_covers_the_build_constraints(tmp_path: Path) -> None:
    folder = tmp_path / "fw"
    shutil.copytree(CHAINER, folder)
    fw = Framework("fw", folder, FrameworkMeta())
    requirements = folder / "requirements-cpu.txt"
    pinned_73 = venv_path(fw, None, requirements)
    (folder / "build-constraints.txt").write_text("setuptools==70.0.0\n")
    pinned_70 = venv_path(fw, None, requirements)
    (folder / "build-constraints.txt").unlink()
    assert len({pinned_73, pinned_70, venv_path(fw, None, requirements)}) == 3


def _check(project: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.dockerfile_check", "--offline", "chainer-2016"],
                          cwd=project, env={**os.environ, "PYTHONPATH": str(project)}, capture_output=True, text=True)


def test_dockerfile_check_requires_the_image_to_use_its_build_constraints(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project", {"chainer-2016": CHAINER})
    good = _check(project)
    assert good.returncode == 0 and "0 errors" in good.stdout, good.stdout + good.stderr
    dockerfile = project / "images" / "chainer-2016" / "Dockerfile"
    text = dockerfile.read_text()
    dockerfile.write_text(text.replace("PIP_CONSTRAINT=/opt/lstm-bench/build-constraints.txt PIP_BUILD_CONSTRAINT="
                                       "/opt/lstm-bench/build-constraints.txt ", ""))
    unused = _check(project)
    assert unused.returncode == 1, unused.stdout
    assert "build-constraints.txt" in unused.stdout and "not applied" in unused.stdout, unused.stdout
    dockerfile.write_text(text.replace(" images/chainer-2016/build-constraints.txt", ""))
    uncopied = _check(project)
    assert uncopied.returncode == 1 and "not copied into the image" in uncopied.stdout, uncopied.stdout
    dockerfile.write_text(text)
    (project / "images" / "chainer-2016" / "build-constraints.txt").write_text("setuptools<74\n")
    loose = _check(project)
    assert loose.returncode == 1 and "setuptools<74: not pinned with ==" in loose.stdout, loose.stdout


@pytest.mark.parametrize(
    ("output", "cause"),
    [
        (UV_FAILURE, "ModuleNotFoundError: No module named 'pkg_resources'"),
        ("Collecting numpy==9.9.9\n\x1b[31mERROR: Could not find a version that satisfies the requirement numpy==9.9.9"
         "\x1b[0m\nERROR: No matching distribution found for numpy==9.9.9\n",
         "ERROR: No matching distribution found for numpy==9.9.9"),
        ("  × No solution found when resolving dependencies:\n  ╰─▶ Because numpy==9.9.9 was not found in the package "
         "registry and you require numpy==9.9.9, we can conclude that your requirements are unsatisfiable.\n",
         "Because numpy==9.9.9 was not found in the package registry and you require numpy==9.9.9, we can conclude "
         "that your requirements are unsatisfiable."),
        ("error: subprocess-exited-with-error\nnote: This error originates from a subprocess\n", None),
        ("Successfully installed numpy-1.26.4\n", None),
    ],
)
def test_root_cause_is_the_last_meaningful_error_line(output: str, cause: str | None) -> None:
    assert root_cause(output) == cause


def test_a_long_reason_keeps_its_first_line() -> None:
    text = "ModuleNotFoundError: No module named 'pkg_resources'\n" + "log line\n" * 1000
    kept = keep_first_line(text, 400)
    assert len(kept) <= 400 and kept.startswith("ModuleNotFoundError: No module named 'pkg_resources'\n…\n")
    assert kept.endswith("log line\n")
