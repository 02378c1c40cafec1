"""One cached virtual environment per framework (variant) from its pinned CPU requirements, as nox and asv do.

Requirements: images/<name>/requirements-cpu-<variant>.txt, else images/<name>/requirements-cpu.txt; build
constraints (the versions of the tools that build an sdist, e.g. setuptools==73.0.1 for a setup.py that imports
pkg_resources): images/<name>/build-constraints.txt, passed to uv as `--build-constraint`.
Cache: $LSTM_BENCH_VENVS or ~/.cache/lstm-bench/venvs/<name>[-<variant>]-<hash>, the hash covering the
requirements text, the build constraints and this Python's version, so a changed pin makes a new environment.

Made with `python -m venv` (seeded with this Python's own pip and setuptools) and uv (`uv pip install -r`), not pip
alone: the environments repeat multi-GB stacks (torch's CUDA build in torch and keras (torch); tensorflow twice; jax
four times), and uv downloads and unpacks each wheel once into its own cache and links the files into every
environment. Measured on a 2-core machine: torch's environment (4.7 GB) cold in 23 s (pip: 76 s), keras (torch)
beside it in under a second (pip: the same again).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from orchestrator.frameworks import Framework
from orchestrator.rootcause import root_cause

COMPLETE = ".lstm-bench-complete"


def cache_root() -> Path:
    env = os.environ.get("LSTM_BENCH_VENVS")
    return Path(env) if env else Path.home() / ".cache" / "lstm-bench" / "venvs"


def requirements_file(framework: Framework, variant: str | None) -> Path | None:
    if variant:
        specific = framework.directory / f"requirements-cpu-{variant}.txt"
        if specific.is_file():
            return specific
    return framework.cpu_requirements


def venv_path(framework: Framework, variant: str | None, requirements: Path) -> Path:
    h = hashlib.sha256(requirements.read_bytes())
    h.update(sys.version.encode())
    if (constraints := framework.build_constraints) is not None:
        h.update(b"\0build-constraints\0" + constraints.read_bytes())
    name = f"{framework.name}{'-' + variant if variant else ''}-{h.hexdigest()[:12]}"
    return cache_root() / name


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


class VenvError(Exception):
    pass


def ensure_venv(
    framework: Framework, variant: str | None, on_line: Callable[[str], None] | None = None, timeout_s: float = 3600
) -> Path:
    """The Python of a ready environment for this framework, creating it (once, under a lock) if needed."""
    requirements = requirements_file(framework, variant)
    if requirements is None:
        raise VenvError(f"{framework.directory}: no requirements-cpu.txt to build a local environment from")
    venv = venv_path(framework, variant, requirements)
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs (or test workers) may ask at once
        if (venv / COMPLETE).is_file():
            return python_of(venv)
        shutil.rmtree(venv, ignore_errors=True)  # a half-made one from an interrupted attempt
        # The standard library's venv, seeded as before with this Python's own pip and setuptools (some frameworks
        # import pkg_resources, as the images' bases provide it); uv then installs the pins. --native-tls: the
        # system's CA store, as a PIP_CERT setup expects (a TLS-inspecting proxy's CA).
        from uv import find_uv_bin  # only here: `--python current` (a GPU host's own Python) never needs uv

        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [find_uv_bin(), "pip", "install", "--quiet", "--native-tls", "--python", str(python_of(venv)), "-r",
             str(requirements)],
        ]
        if (constraints := framework.build_constraints) is not None:
            steps[1] += ["--build-constraint", str(constraints)]  # uv's isolated sdist builds, not the install
        for cmd in steps:
            if on_line:
                on_line(" ".join(cmd))
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
            if proc.returncode != 0:
                output = proc.stdout + proc.stderr
                tail = "\n".join(output.strip().splitlines()[-20:])[-3000:]
                what = f"{Path(cmd[0]).name} {' '.join(cmd[1:3])}"
                # The cause first (what the console shows), then which command and its output's tail.
                raise VenvError(f"{root_cause(output) or 'no error line in its output'}\n"
                                f"`{what} ...` failed (exit {proc.returncode}):\n{tail}")
        (venv / COMPLETE).write_text(requirements.read_text())
    return python_of(venv)
