"""GPU reads through NVML (nvidia-ml-py, `import pynvml`). Only the reads live here; summary.py does the rest.

None of this can run without an NVIDIA driver: on such a host every entry point says "unavailable: <reason>".
tests/test_gpus_nvml.py runs these calls through the real bindings against a fake libnvidia-ml.so.1.
Units: NVML reports power in milliwatts and energy in millijoules; both become W and J here, once.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any

from orchestrator.machine.sampler import Sample, first_line

# Clock-event ("throttle") reason bits, as nvml.h defines them (nvmlClocksEventReason*).
REASONS = {
    0x1: "gpu-idle",
    0x2: "clocks-set-by-user",  # application clocks or locked clocks (nvidia-smi -ac / -lgc)
    0x4: "sw-power-cap",
    0x8: "hw-slowdown",
    0x10: "sync-boost",
    0x20: "sw-thermal",
    0x40: "hw-thermal",
    0x80: "hw-power-brake",
    0x100: "display-clock",
    0x200: "board-limit",  # nvmlClocksThrottleReasonBoardLimit
    0x400: "reliability",  # nvmlClocksThrottleReasonReliability (voltage reliability limits)
}
_KNOWN = sum(REASONS)
# The reasons that mean the GPU ran slower than it could have: power, heat or the board's limits, not the user's own
# choice.
THROTTLING = frozenset({"sw-power-cap", "hw-slowdown", "sw-thermal", "hw-thermal", "hw-power-brake", "board-limit",
                        "reliability"})


def reason_names(mask: int) -> list[str]:
    rest = mask & ~_KNOWN
    return [name for bit, name in REASONS.items() if mask & bit] + ([f"0x{rest:x}"] if rest else [])


def clock_event_reasons(nv: Any, handle: Any) -> int | None:
    """The clock-event ("throttle") reason mask: nvmlDeviceGetCurrentClocksEventReasons (driver 535+), else the
    deprecated ...ClocksThrottleReasons it replaces (to be removed with CUDA 14); None when neither answers."""
    for name in ("nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"):
        fn = getattr(nv, name, None)
        value = None if fn is None else _try(fn, handle)
        if value is not None:
            return int(value)
    return None


def handle_for(nv: Any, device: str) -> tuple[Any, str | None]:
    """The NVML handle to sample for a slot id (a UUID, or an NVML index), and a note when it is not the cell's own
    device: a MIG device has no clocks, power or temperature of its own, so its GPU's are read (shared with the
    other MIG devices on it)."""
    device = str(device)  # an int index from older callers
    if device.startswith(("GPU-", "MIG-")):
        handle = nv.nvmlDeviceGetHandleByUUID(device)
    elif device.isdigit():
        handle = nv.nvmlDeviceGetHandleByIndex(int(device))
    else:  # an inherited CUDA ordinal (gpus.CUDA_ORDINAL) that matches no NVML device for sure
        raise RuntimeError(f"unavailable: {device} is not tied to an NVML device (give CUDA_VISIBLE_DEVICES UUIDs, "
                           "or set CUDA_DEVICE_ORDER=PCI_BUS_ID)")
    if _try(nv.nvmlDeviceIsMigDeviceHandle, handle):
        return nv.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle), "MIG device: its whole GPU is sampled"
    return handle, None


def open_nvml() -> Any:
    """pynvml, initialised (NVML counts inits; pair each with close_nvml); RuntimeError("unavailable: ...")."""
    try:
        import pynvml  # type: ignore[import-not-found]
    except ImportError:
        raise RuntimeError("unavailable: nvidia-ml-py is not installed") from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...
        raise RuntimeError(f"unavailable: {first_line(exc)}") from None
    return pynvml


def close_nvml(nv: Any) -> None:
    with contextlib.suppress(Exception):
        nv.nvmlShutdown()


@contextlib.contextmanager
def nvml() -> Iterator[Any]:
    nv = open_nvml()
    try:
        yield nv
    finally:
        close_nvml(nv)


def _try(fn: Any, *args: Any) -> Any:
    """One NVML query; None when this GPU does not support it (e.g. no energy counter before Volta)."""
    try:
        return fn(*args)
    except Exception:
        return None


class NvmlGpu:
    """Sampler source for one GPU (a slot id: UUID or NVML index). Holds NVML open from construction to close()."""

    name = "gpu"

    def __init__(self, device: str, owned: Callable[[int], bool] | None = None) -> None:
        self.owned = owned  # is this pid the cell's? (cell.py owned_by); None: other processes are not counted
        self.nv = open_nvml()
        try:
            self.handle, self.note = handle_for(self.nv, device)
        except RuntimeError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise RuntimeError(f"unavailable: GPU {device}: {first_line(exc)}") from None

    def read(self) -> Sample:
        nv, h = self.nv, self.handle
        return from_nvml_units({
            "sm_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_SM),
            "mem_mhz": _try(nv.nvmlDeviceGetClockInfo, h, nv.NVML_CLOCK_MEM),
            "power_mw": _try(nv.nvmlDeviceGetPowerUsage, h),
            "temp_c": _try(nv.nvmlDeviceGetTemperature, h, nv.NVML_TEMPERATURE_GPU),
            "util_pct": getattr(_try(nv.nvmlDeviceGetUtilizationRates, h), "gpu", None),
            "mem_used_bytes": getattr(_try(nv.nvmlDeviceGetMemoryInfo, h), "used", None),
            "reasons": clock_event_reasons(nv, h),
            "energy_mj": _try(nv.nvmlDeviceGetTotalEnergyConsumption, h),  # since the driver loaded
            "other_procs": other_processes(_try(nv.nvmlDeviceGetComputeRunningProcesses, h), self.owned)
            if self.owned is not None else None,
        })

    def close(self) -> None:
        close_nvml(self.nv)


# NVML's units -> the sample's: (sample key, NVML key, factor). Power is in mW and energy in mJ.
_UNITS = (
    ("gpu_sm_mhz", "sm_mhz", 1.0),
    ("gpu_mem_mhz", "mem_mhz", 1.0),
    ("gpu_power_w", "power_mw", 1e-3),
    ("gpu_temp_c", "temp_c", 1.0),
    ("gpu_util_pct", "util_pct", 1.0),
    ("gpu_mem_used_mib", "mem_used_bytes", 1.0 / 2**20),
    ("gpu_energy_j", "energy_mj", 1e-3),
)


def other_processes(procs: Any, owned: Callable[[int], bool]) -> int | None:
    """How many of NVML's running compute processes are not the cell's; None when NVML could not list them.

    A pid this host cannot attribute to the cell (another container's, one in another pid namespace) counts as
    another process: the flag is about noticing a shared GPU, so doubt goes that way."""
    if procs is None:
        return None
    return sum(1 for p in procs if not owned(int(getattr(p, "pid", -1))))


def from_nvml_units(raw: dict[str, int | float | None]) -> Sample:
    """One sample from NVML's raw answers (None: not supported on this GPU, left out)."""
    out: Sample = {key: raw[src] * factor for key, src, factor in _UNITS if raw.get(src) is not None}  # type: ignore[operator]
    for key, src in (("gpu_reasons", "reasons"), ("gpu_other_procs", "other_procs")):
        if raw.get(src) is not None:
            out[key] = int(raw[src])  # type: ignore[arg-type]
    return out


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def facts() -> list[dict[str, Any]] | str:
    """Per GPU, the settings a number depends on (for the manifest); "unavailable: <reason>" without NVML.

    Never changes anything: locking clocks or power limits needs root and is the user's decision. `clocks_locked`
    is True when the application clocks differ from their defaults; a lock made with `nvidia-smi -lgc` has no NVML
    getter and shows instead as the reason "clocks-set-by-user" in the cells' samples.
    """
    try:
        with nvml() as nv:
            out = []
            for i in range(nv.nvmlDeviceGetCount()):
                try:
                    out.append(_facts_of(nv, i))
                except Exception as exc:  # NVMLError: NO_PERMISSION (a cgroup hides it), GPU_IS_LOST, ...
                    out.append({"index": str(i), "unavailable": f"unavailable: {first_line(exc)}"})
            return out
    except RuntimeError as exc:
        return str(exc)
    except Exception as exc:  # the count itself failed
        return f"unavailable: {first_line(exc)}"


def _facts_of(nv: Any, i: int) -> dict[str, Any]:
    h = nv.nvmlDeviceGetHandleByIndex(i)
    app = {k: _try(nv.nvmlDeviceGetApplicationsClock, h, c) for k, c in _clocks(nv)}
    default = {k: _try(nv.nvmlDeviceGetDefaultApplicationsClock, h, c) for k, c in _clocks(nv)}
    ecc = _try(nv.nvmlDeviceGetEccMode, h)
    mig = _try(nv.nvmlDeviceGetMigMode, h)
    return {
        "index": str(i),
        "name": _text(nv.nvmlDeviceGetName(h)),  # not _try: a GPU that cannot say its name is unreadable
        "uuid": _text(_try(nv.nvmlDeviceGetUUID, h)),
        "driver": _text(_try(nv.nvmlSystemGetDriverVersion)),
        "power_limit_w": _scaled(_try(nv.nvmlDeviceGetEnforcedPowerLimit, h), 1e-3),
        "default_power_limit_w": _scaled(_try(nv.nvmlDeviceGetPowerManagementDefaultLimit, h), 1e-3),
        "persistence_mode": _on(_try(nv.nvmlDeviceGetPersistenceMode, h)),
        "ecc": _on(ecc[0]) if ecc else None,
        "mig_mode": _on(mig[0]) if mig else None,
        "mig_devices": _mig_devices(nv, h) if mig and mig[0] else [],
        "application_clocks_mhz": app,
        "default_application_clocks_mhz": default,
        "max_clocks_mhz": {k: _try(nv.nvmlDeviceGetMaxClockInfo, h, c) for k, c in _clocks(nv)},
        "clocks_locked": None if None in app.values() or None in default.values() else app != default,
    }


def _mig_devices(nv: Any, h: Any) -> list[dict[str, Any]]:
    out = []
    for m in range(_try(nv.nvmlDeviceGetMaxMigDeviceCount, h) or 0):
        mig = _try(nv.nvmlDeviceGetMigDeviceHandleByIndex, h, m)
        if mig is not None:
            out.append({"index": m, "name": _text(_try(nv.nvmlDeviceGetName, mig)),
                        "uuid": _text(_try(nv.nvmlDeviceGetUUID, mig))})
    return out


def _clocks(nv: Any) -> tuple[tuple[str, int], ...]:
    return (("sm", nv.NVML_CLOCK_SM), ("mem", nv.NVML_CLOCK_MEM))


def _on(value: int | None) -> bool | None:
    return None if value is None else bool(value)


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def settle(device: str, max_temp_c: float, idle_pct: float = 5.0, timeout_s: float = 300.0) -> str:
    """Wait until the GPU of slot `device` is idle and at most `max_temp_c`; what happened, in words, for the record."""
    started = time.monotonic()
    try:
        with nvml() as nv:
            h, _ = handle_for(nv, device)
            while True:
                temp = nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)
                util = nv.nvmlDeviceGetUtilizationRates(h).gpu
                waited = time.monotonic() - started
                if temp <= max_temp_c and util <= idle_pct:
                    return f"settled: {util}% busy, {temp} °C after {waited:.1f} s"
                if waited >= timeout_s:
                    return f"not settled after {timeout_s:.0f} s: {util}% busy, {temp} °C (limit {max_temp_c:g} °C)"
                time.sleep(1.0)
    except RuntimeError as exc:
        return str(exc)
    except Exception as exc:
        return f"unavailable: {first_line(exc)}"
