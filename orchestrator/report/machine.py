"""The report's view of each cell's machine state (CellRecord.machine): a table, and warnings for flagged cells."""

from __future__ import annotations

from orchestrator.machine.summary import BUSY_SHARE, MachineState
from orchestrator.report.analyze import Analysis
from orchestrator.report.flops import flops_for_params, tflops_per_s
from orchestrator.report.tables import Table
from orchestrator.results import CellRecord


def _records(a: Analysis) -> list[tuple[str, CellRecord]]:
    return [(row.label, r) for row in a.rows for h in a.hidden if (g := a.group(row, h)) for r in g.records]


def flags(m: MachineState) -> list[str]:
    out = []
    if m.throttled:
        out.append("THROTTLED")
    if m.host_busy:
        out.append("BUSY HOST")
    if m.gpu_shared:
        out.append("GPU SHARED")
    if m.window == "cell":
        out.append("whole cell")  # no timed window from the workload: the figures include set-up
    if m.window_clipped_s:
        out.append("window clipped")  # part of the workload's window lies outside what the host sampled
    return out


def energy_text(m: MachineState) -> str:
    """J/batch, labelled when it comes from integrated power samples rather than NVML's energy counter."""
    if m.j_per_batch is None:
        return ""
    return f"{m.j_per_batch:.3g}" + (" (from power samples)" if m.gpu_energy_source == "power-samples" else "")


def tflops_per_watt(rec: CellRecord, m: MachineState) -> float | None:
    params = rec.cell_params  # the cell's own, never the workload's echo
    if not m.gpu_avg_w or not rec.median_ms or not params:
        return None
    try:
        return tflops_per_s(flops_for_params(params), rec.median_ms) / m.gpu_avg_w
    except (KeyError, TypeError, ValueError):
        return None


def _median(m: MachineState, key: str, spec: str) -> str:
    s = m.gauges.get(key)
    return format(s.median, spec) if s else ""


def machine_table(a: Analysis) -> Table:
    headers = ["framework", "hidden", "repeat", "flags", "other load", "cell CPU s", "SM MHz", "power W", "max °C",
               "GPU reasons", "J/batch", "TFLOP/s per W"]
    rows = []
    for label, rec in _records(a):
        m = rec.machine
        if m is None:
            continue
        temp = m.gauges.get("gpu_temp_c")
        per_w = tflops_per_watt(rec, m)
        rows.append([
            label, str(rec.hidden), str(rec.repeat), " ".join(flags(m)),
            f"{100 * m.host_others_share:.0f}%" if m.host_others_share is not None else "",
            f"{m.cell_cpu_s:.2f}" if m.cell_cpu_s is not None else "",
            _median(m, "gpu_sm_mhz", ".0f"), _median(m, "gpu_power_w", ".0f"), f"{temp.max:.0f}" if temp else "",
            ", ".join(m.gpu_reasons), energy_text(m),
            f"{per_w:.3g}" if per_w is not None else "",
        ])
    intro = (
        "Sampled on the host every few tenths of a second while each cell ran, summarised over its timed part "
        f"(docs/report.md). BUSY HOST: other processes took more than {BUSY_SHARE:.0%} of the cell's CPUs' time "
        "(other load). GPU SHARED: NVML listed a compute process on the cell's GPU that is not the cell's during its "
        "timed part. THROTTLED: the GPU reported a power or thermal clock reason. clocks-set-by-user: application "
        "or locked clocks (whether clocks were locked is in the manifest's GPU rows; this tool never changes them). "
        "J/batch: NVML's energy counter over the timed part / timed batches (on a GPU without that counter, the "
        "power samples integrated over it, labelled \"from power samples\"). TFLOP/s per W: TFLOP/s at the median "
        "/ average power. Raw samples: cells/<cell>/machine.jsonl."
    )
    notes = sorted({f"{k}: {v}" for _, r in _records(a) if r.machine for k, v in r.machine.unavailable.items()})
    return Table("machine", "Machine state during each cell", headers, rows, intro, notes)


def machine_warnings(a: Analysis) -> list[str]:
    throttled = [f"{label} hidden-{r.hidden}" for label, r in _records(a) if r.machine and r.machine.throttled]
    busy = [f"{label} hidden-{r.hidden}" for label, r in _records(a) if r.machine and r.machine.host_busy]
    shared = [f"{label} hidden-{r.hidden}" for label, r in _records(a) if r.machine and r.machine.gpu_shared]
    out = []
    if shared:
        out.append(f"another process used the GPU during {', '.join(shared)}: their times are not this GPU's alone; "
                   "see Machine state")
    if throttled:
        out.append(f"the GPU throttled (power or heat) during {', '.join(throttled)}: their times are not the "
                   "GPU's best; see Machine state")
    if busy:
        out.append(f"other processes took more than {BUSY_SHARE:.0%} of the CPUs during {', '.join(busy)}: their "
                   "times may be slower than this machine can do; see Machine state")
    return out
