"""Datasheet peak throughput of common NVIDIA GPUs (data/gpu_peaks.csv), keyed by the name nvidia-smi reports.

Three peaks per GPU, all dense (no 2:4 sparsity) and at the boost clock, as NVIDIA's datasheets state them:
fp32 on the CUDA cores, TF32 and bf16 (FP32 accumulate) on the tensor cores (empty where the GPU has no tensor
cores for that type). Each row cites its datasheet. A cell's % of peak uses the peak of its own precision. A name
that matches no pattern gets no peak: the report then shows no % of peak rather than a guess.
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
    bf16_tflops: float | None = None
    clock: str = "boost"

    def for_precision(self, precision: str | None) -> float | None:
        """The dense peak that matches a cell's arithmetic (fp32 when the record does not say)."""
        return {"tf32": self.tf32_tflops, "bf16": self.bf16_tflops}.get(precision or "fp32", self.fp32_tflops)


@cache
def _table() -> tuple[tuple[re.Pattern[str], GpuPeak], ...]:
    text = resources.files("orchestrator.report").joinpath("data").joinpath("gpu_peaks.csv").read_text(encoding="utf-8")
    rows = []
    for rec in csv.DictReader(text.splitlines()):
        peak = GpuPeak(rec["gpu"], float(rec["fp32_tflops"]), _optional(rec["tf32_tflops"]), rec["source"],
                       _optional(rec["bf16_tflops"]), rec["clock"])
        rows.append((re.compile(rec["pattern"], re.IGNORECASE), peak))
    return tuple(rows)


def _optional(text: str) -> float | None:
    return float(text) if text else None


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
        for g in gpus:  # a slot is a GPU's UUID (orchestrator/gpus.py), or its index in older runs
            if first in (str(g.get("index")), g.get("uuid")) and g.get("name"):
                return str(g["name"])
    names = {str(g["name"]) for g in gpus if g.get("name")}
    if len(names) == 1:
        return names.pop()
    reported = workload.device.name if workload is not None else None
    return str(reported) if reported else None
