"""Raw samples + the timed window -> the compact summary a record keeps (CellRecord.machine).

Gauges (clocks, power, temperature, utilisation, memory) become min/median/max over the samples inside the window
(the nearest one on each side when the window is shorter than a sampling period). Counters (CPU seconds, energy)
become their increase over the window, interpolated linearly between the samples around it. Without an energy
counter, energy is the integral of the power samples over the window (`gpu_energy_source` says which).

The window comes from the workload (untrusted): it is clipped to the time the host sampled, so nothing is
extrapolated beyond the samples (`window_clipped_s` says how much was cut off); a window that lies outside the
samples altogether, or is not a window, falls back to the whole cell (`window` "cell", flagged).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy.integrate import trapezoid

from orchestrator.machine.gpu import THROTTLING, reason_names
from orchestrator.machine.sampler import Sample

GAUGES = ("gpu_sm_mhz", "gpu_mem_mhz", "gpu_power_w", "gpu_temp_c", "gpu_util_pct", "gpu_mem_used_mib",
          "cell_mem_bytes")
# A cell whose CPUs were more than this busy with other processes' work during its timed part is flagged.
BUSY_SHARE = 0.25


class Spread(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min: float
    median: float
    max: float


class MachineState(BaseModel):
    """What the host saw while one cell ran; raw samples are in the cell's machine.jsonl."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window: Literal["timed", "cell"]  # timed: the harness's timed loop; cell: the whole cell (no window reported)
    window_s: float
    window_clipped_s: float | None = None  # seconds of the workload's window outside the samples, cut off
    period_s: float
    samples: int  # samples inside the window (plus the nearest one on each side)
    coverage: float | None = None  # share of the window that lies between samples with counters
    gauges: dict[str, Spread] = {}  # gpu_sm_mhz, gpu_power_w, ..., cell_mem_bytes: min/median/max in the window
    host_others_share: float | None = None  # share of the cell's CPUs' time that other processes took
    host_busy: bool | None = None  # host_others_share > BUSY_SHARE
    cell_cpu_s: float | None = None  # CPU seconds the cell's container (or process) used in the window
    gpu_energy_j: float | None = None  # from NVML's total-energy counter, else the integrated power samples
    gpu_energy_source: Literal["counter", "power-samples"] | None = None  # which of the two gave gpu_energy_j
    gpu_avg_w: float | None = None
    j_per_batch: float | None = None  # gpu_energy_j / timed batches
    gpu_reasons: list[str] = []  # clock-event reasons seen in the window (gpu-idle, sw-power-cap, ...)
    throttled: bool | None = None  # a power or thermal reason was seen; None without a GPU reading
    gpu_other_procs: int | None = None  # most compute processes not the cell's on its GPU at once, in the window
    gpu_shared: bool | None = None  # gpu_other_procs > 0; None when NVML could not list the GPU's processes
    settle: str | None = None  # what --gpu-settle found before the cell started
    sampler_cpu_s: float = 0.0  # the sampler's own CPU time over the whole cell
    unavailable: dict[str, str] = {}  # source (gpu, cell, host, window) -> "unavailable: <reason>"


def valid_window(raw: Any, samples: list[Sample]) -> tuple[float, float] | str:
    """The workload's [t0, t1] when it is usable, else why not (it comes from the container: untrusted)."""
    if not (isinstance(raw, list | tuple) and len(raw) == 2 and all(isinstance(x, int | float) for x in raw)):
        return "the result has no timed_window [t0, t1]"
    t0, t1 = float(raw[0]), float(raw[1])
    if not (math.isfinite(t0) and math.isfinite(t1) and t0 < t1):
        return f"timed_window {raw!r} is not an increasing pair of times"
    if samples and (t1 < samples[0]["t"] or t0 > samples[-1]["t"]):
        return "timed_window lies outside the time the cell was sampled"
    return t0, t1


def clip(window: tuple[float, float], samples: list[Sample]) -> tuple[tuple[float, float], float]:
    """The window cut to the first and last sample's times, and how many seconds were cut off."""
    t0, t1 = window
    lo, hi = max(t0, samples[0]["t"]), min(t1, samples[-1]["t"])
    return (lo, max(lo, hi)), (t1 - t0) - (max(lo, hi) - lo)


def counter_delta(samples: list[Sample], key: str, t0: float, t1: float) -> tuple[float, float] | None:
    """(increase of counter `key` over [t0, t1], share of the window between samples), or None."""
    pts = [(s["t"], s[key]) for s in samples if key in s]
    if len(pts) < 2:
        return None
    ts, vs = np.array(pts, dtype=np.float64).T
    lo = max(int(np.searchsorted(ts, t0, "right")) - 1, 0)
    hi = min(int(np.searchsorted(ts, t1, "left")), len(ts) - 1)
    ts, vs = ts[lo : hi + 1], vs[lo : hi + 1]
    a, b = max(t0, ts[0]), min(t1, ts[-1])
    if len(ts) < 2 or b <= a:
        return None
    rate = (np.interp(b, ts, vs) - np.interp(a, ts, vs)) / (b - a)
    return float(rate * (t1 - t0)), float((b - a) / (t1 - t0))


def integrated_power(samples: list[Sample], t0: float, t1: float) -> tuple[float, float] | None:
    """(joules over [t0, t1] from the power samples, share of the window between them), or None: for GPUs whose
    NVML has no total-energy counter (before Volta). Trapezoids between samples, linear in between; past the
    samples the covered part's average power is carried on, as counter_delta does."""
    pts = [(s["t"], s["gpu_power_w"]) for s in samples if "gpu_power_w" in s]
    if len(pts) < 2:
        return None
    ts, ws = np.array(pts, dtype=np.float64).T
    a, b = max(t0, ts[0]), min(t1, ts[-1])
    if b <= a:
        return None
    grid = np.concatenate(([a], ts[(ts > a) & (ts < b)], [b]))
    joules = float(trapezoid(np.interp(grid, ts, ws), grid))
    return joules * (t1 - t0) / (b - a), float((b - a) / (t1 - t0))


def _in_window(samples: list[Sample], t0: float, t1: float) -> list[Sample]:
    inside = [s for s in samples if t0 <= s["t"] <= t1]
    if inside:
        return inside
    before = [s for s in samples if s["t"] < t0][-1:]
    after = [s for s in samples if s["t"] > t1][:1]
    return before + after


def _spread(values: list[float]) -> Spread:
    return Spread(min=min(values), median=float(np.median(values)), max=max(values))


def others_share(samples: list[Sample], t0: float, t1: float) -> float | None:
    """Share of the cell's CPUs' time in the window that went to anything but the cell."""
    both = [s for s in samples if "host_busy_s" in s and "cell_cpu_s" in s]
    busy = counter_delta(both, "host_busy_s", t0, t1)
    total = counter_delta(both, "host_total_s", t0, t1)
    cell = counter_delta(both, "cell_cpu_s", t0, t1)
    if busy is None or total is None or cell is None or total[0] <= 0:
        return None
    return min(1.0, max(0.0, (busy[0] - cell[0]) / total[0]))


def summarise(
    samples: list[Sample],
    timed_window: Any,
    batches: int | None,
    period_s: float,
    unavailable: dict[str, str] | None = None,
    sampler_cpu_s: float = 0.0,
    settle: str | None = None,
) -> MachineState | None:
    """The record's summary; None when nothing was sampled (the cell never started)."""
    if not samples:
        return None
    missing = dict(unavailable or {})
    window = valid_window(timed_window, samples)
    kind: Literal["timed", "cell"] = "timed"
    clipped = None
    if isinstance(window, str):
        missing["window"] = f"unavailable: {window}; the summary covers the whole cell"
        window, kind = (samples[0]["t"], samples[-1]["t"]), "cell"
    else:
        window, cut = clip(window, samples)
        clipped = round(cut, 6) if cut > 0 else None
    t0, t1 = window
    span = max(t1 - t0, 0.0)
    chosen = _in_window(samples, t0, t1)
    gauges = {k: _spread([float(s[k]) for s in chosen if k in s]) for k in GAUGES if any(k in s for s in chosen)}
    masks = [int(s["gpu_reasons"]) for s in chosen if "gpu_reasons" in s]
    reasons = reason_names(int(np.bitwise_or.reduce(masks))) if masks else []
    cpu = counter_delta(samples, "cell_cpu_s", t0, t1) if span > 0 else None
    energy = counter_delta(samples, "gpu_energy_j", t0, t1) if span > 0 else None
    source: Literal["counter", "power-samples"] | None = "counter" if energy is not None else None
    if energy is None and span > 0 and (energy := integrated_power(samples, t0, t1)) is not None:
        source = "power-samples"
    coverages = [c[1] for c in (cpu, energy, counter_delta(samples, "host_busy_s", t0, t1) if span else None) if c]
    share = others_share(samples, t0, t1) if span > 0 else None
    joules = energy[0] if energy else None
    others = [int(s["gpu_other_procs"]) for s in chosen if "gpu_other_procs" in s]
    return MachineState(
        window=kind,
        window_s=round(span, 6),
        window_clipped_s=clipped,
        period_s=period_s,
        samples=len(chosen),
        coverage=round(min(coverages), 3) if coverages else None,
        gauges=gauges,
        host_others_share=None if share is None else round(share, 4),
        host_busy=None if share is None else share > BUSY_SHARE,
        cell_cpu_s=None if cpu is None else round(cpu[0], 4),
        gpu_energy_j=joules,
        gpu_energy_source=source,
        gpu_avg_w=joules / span if joules is not None and span > 0 else None,
        # Only for the whole timed window: a clipped one lacks some batches' energy.
        j_per_batch=joules / batches if joules is not None and batches and kind == "timed" and not clipped else None,
        gpu_reasons=reasons,
        throttled=bool(THROTTLING.intersection(reasons)) if masks else None,
        gpu_other_procs=max(others) if others else None,
        gpu_shared=max(others) > 0 if others else None,
        settle=settle,
        sampler_cpu_s=round(sampler_cpu_s, 6),
        unavailable=missing,
    )
