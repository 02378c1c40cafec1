"""Facts about where and how a run happened, gathered once and stored as manifest.json."""

from __future__ import annotations

import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
from typing import Any

from orchestrator import PROJECT_ROOT, __version__
from orchestrator.machine import gpu as nvml_gpu

MANIFEST_SCHEMA_VERSION = 1


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _run(cmd: list[str]) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=PROJECT_ROOT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_state() -> dict[str, Any]:
    commit = _run(["git", "rev-parse", "HEAD"])
    dirty = _run(["git", "status", "--porcelain", "--untracked-files=no"])
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def host_gpus() -> list[dict[str, str]]:
    """GPUs as the host's nvidia-smi sees them; empty without one (CPU hosts, or no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = _run(
        [
            "nvidia-smi",
            "--query-gpu=index,name,uuid,driver_version,memory.total,compute_cap",
            "--format=csv,noheader,nounits",
        ]
    )
    gpus = []
    for line in (out or "").splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 6:
            keys = ("index", "name", "uuid", "driver", "memory_mib", "compute_capability")
            gpus.append(dict(zip(keys, parts, strict=False)))
    cuda = _run(["nvidia-smi"])
    if cuda and gpus:
        for token in cuda.split("CUDA Version:")[1:2]:
            for gpu in gpus:
                gpu["cuda_driver_api"] = token.split()[0]
    return gpus


def with_settings(gpus: list[dict[str, Any]], settings: list[dict[str, Any]] | str) -> list[dict[str, Any]]:
    """nvidia-smi's GPU list with NVML's settings (power limit, persistence, ECC, clocks, locked) added by index."""
    if isinstance(settings, str):
        return gpus
    by_index = {s["index"]: s for s in settings}
    if not gpus:
        return [dict(s) for s in settings]
    return [{**by_index.get(g.get("index"), {}), **g} for g in gpus]


def initial_manifest(run_id: str, matrix: dict[str, Any], runner: dict[str, Any], argv: list[str]) -> dict[str, Any]:
    settings = nvml_gpu.facts()  # only read: clocks and power limits are the user's to set
    return {
        "schema_version": MANIFEST_SCHEMA_VERSION,
        "run_id": run_id,
        "state": "running",
        "started_at": now_iso(),
        "finished_at": None,
        "tool_version": __version__,
        "command": argv,
        "host": {
            "hostname": platform.node(),
            "os": platform.platform(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
        },
        "runner": runner,
        "gpus": with_settings(host_gpus(), settings),
        "nvml": "ok" if isinstance(settings, list) else settings,  # or "unavailable: <reason>"
        "git": git_state(),
        "matrix": matrix,
        "environments": {},
    }

