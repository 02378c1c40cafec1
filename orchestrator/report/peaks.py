"""Datasheet peak throughput of common NVIDIA GPUs (data/gpu_peaks.csv), keyed by the name nvidia-smi reports.

Two peaks per GPU, both dense (no 2:4 sparsity): fp32 on the CUDA cores, and TF32 on the tensor cores (empty
where the GPU has none for TF32). A name that matches no pattern gets no peak: the report then shows no % of peak
rather than a guess.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from orchestrator.workload_result import WorkloadResult


@dataclass(frozen=True)
class GpuPeak:
    gpu: str
    fp32_tflops: float
    tf32_tflops: float | None
    source: str


@cache
def _table() -> tuple[tuple[re.Pattern[str], GpuPeak], ...]:
    text = resources.files("orchestrator.report").joinpath("data").joinpath("gpu_peaks.csv").read_text(encoding="utf-8")
    rows = []
    for rec in csv.DictReader(text.splitlines()):
        peak = GpuPeak(rec["gpu"], float(rec["fp32_tflops"]),
                       float(rec["tf32_tflops"]) if rec["tf32_tflops"] else None, rec["source"])
        rows.append((re.compile(rec["pattern"], re.IGNORECASE), peak))
    return tuple(rows)


def lookup(name: str | None) -> GpuPeak | None:
    """The first table entry whose pattern matches the reported name; None for unknown GPUs."""
    if not name:
        return None
    clean = name.strip()
    for pattern, peak in _table():
        if pattern.search(clean):
            return peak
    return None


def gpu_name(
    record_slot: str | None, device: str, manifest: dict[str, Any], workload: WorkloadResult | None
) -> str | None:
    """The GPU a cell ran on: the manifest's GPU of its slot, the only GPU, or what the workload reported."""
    if device != "gpu":
        return None
    gpus = [g for g in manifest.get("gpus") or [] if isinstance(g, dict)]
    if record_slot is not None:
        first = str(record_slot).split(",")[0].strip()
        for g in gpus:
            if str(g.get("index")) == first and g.get("name"):
                return str(g["name"])
    names = {str(g["name"]) for g in gpus if g.get("name")}
    if len(names) == 1:
        return names.pop()
    reported = workload.device.name if workload is not None else None
    return str(reported) if reported else None
