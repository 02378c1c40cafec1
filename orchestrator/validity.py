"""Host-side judgement of a workload result that says "ok": is what it measured what the cell asked for, and could
it have been measured in the time the host saw the cell live?

Kept apart from classify.py on purpose (one call from there): the precision read-back and the validity gates of
docs/contract.md ("Validity"). A failed check makes the cell `invalid-output` with the reason; a check fails only
on what is physically impossible or clearly wrong. What a busy host causes (time between steps, a noisy steady
state, a flat loss at a tiny lr) is a flag the report shows, never a failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.workload_result import WorkloadResult
from workloads.harness import loss_trend

# The per-step intervals are disjoint parts of the timed loop, read from one monotonic clock: their sum cannot
# exceed the loop's wall time. The slack is float rounding of a sum of many terms, not tolerance for noise.
SUM_OVER_WALL_SLACK = 1e-6
SUM_OVER_WALL_SLACK_MS = 1e-3
# Time between steps (the loop's own bookkeeping, preemption, GC on a busy host): flagged above this share of the
# loop's wall time and above the harness's own loop overhead (a few microseconds a step).
GAP_FLAG_SHARE = 0.01
LOOP_OVERHEAD_MS_PER_STEP = 0.05
# The host's clocks against the workload's: the lifetime (monotonic, around the process or container) and the
# span (wall clock, the same kernel clock the container reads). Slack for clock reads and NTP slewing only.
LIFETIME_SLACK_S = 0.005
SPAN_SLACK_S = 0.5
# The kernel keeps a process's start in clock ticks (USER_HZ, 100 a second on Linux; harness.process_age_s): the
# workload's to_first_step_s may be one tick longer than the process has lived.
PROCESS_START_TICK_S = 0.01
# Steady-state time per batch above this multiple of the per-step latency: the per-step sync cannot have covered
# the queued work (a no-op sync makes the latency loop time only the launches). Reported, not failed: on a busy
# CPU a few-step cell can be this noisy.
THROUGHPUT_OVER_LATENCY_FLAG = 1.5


@dataclass(frozen=True)
class HostView:
    """What the host measured of the cell's process (or container), whatever the workload says."""

    lifetime_s: float  # monotonic time from before the process started to after it ended: an upper bound
    span: tuple[float, float] | None = None  # wall clock (time.time()) at those two moments, on the cell's host


def precision_problem(doc: WorkloadResult) -> str | None:
    """The read-back precision differs from the one asked for (params.precision; fp32 when absent)."""
    asked = doc.params.get("precision", "fp32")
    got = doc.precision_effective
    if got is None:
        # A workload without the read-back (older, or a drop-in that has none) can only claim float32.
        return None if asked == "fp32" else f"no precision read-back in the result of a {asked!r} cell"
    if got == asked:
        return None
    shown = ", ".join(f"{k}={v}" for k, v in doc.precision_switches.items())
    return f"precision read-back is {got!r}, not the {asked!r} asked for ({shown})"


def missing_fields(doc: WorkloadResult) -> str | None:
    """An ok result must carry what its gates are judged on; a gate never passes for want of its input."""
    missing = [k for k in ("timed_wall_ms", "throughput_ms", "validity") if getattr(doc, k) is None]
    if missing:
        return f"an ok result without {', '.join(missing)} (null): its validity gates cannot be judged"
    if len(doc.losses) != len(doc.times_ms):
        return f"an ok result with {len(doc.losses)} losses for {len(doc.times_ms)} timed steps"
    return None


def trend(doc: WorkloadResult) -> tuple[str, float | None]:
    """The loss trend recomputed here from `losses` (the workload's own `validity.loss_trend` is not trusted)."""
    params = doc.params
    data_batches = params.get("data_batches", 4)
    precision = params.get("precision", "fp32")
    return loss_trend(list(doc.losses), int(data_batches) if isinstance(data_batches, int) else 4,
                      precision if isinstance(precision, str) else "fp32")


def gate_problems(doc: WorkloadResult) -> list[str]:
    """Failed validity gates: a loss not finite or rising over the timed steps, step times that add up to more
    than the loop that holds them."""
    out = []
    name, rel = trend(doc)
    if name == "not-finite":
        bad = [i for i, x in enumerate(doc.losses) if x is None]
        out.append(f"the loss is not finite at timed step(s) {bad[:5]}")
    elif name == "increasing":
        out.append(f"the loss is increasing over the timed steps (relative change {rel})")
    wall, times = doc.timed_wall_ms, doc.times_ms
    total = sum(times)
    if wall is not None and total > wall * (1 + SUM_OVER_WALL_SLACK) + SUM_OVER_WALL_SLACK_MS:
        out.append(f"the per-step times add up to {total:.3f} ms, more than the {wall:.3f} ms the timed loop "
                   "that holds them took")
    return out


def host_problems(doc: WorkloadResult, host: HostView) -> list[str]:
    """The workload's times against the host's: nothing timed may outlast the process, nor lie outside its span."""
    out = []
    life_ms = (host.lifetime_s + LIFETIME_SLACK_S) * 1000.0
    claims = {"the per-step times": sum(doc.times_ms), "the timed loop (timed_wall_ms)": doc.timed_wall_ms or 0.0,
              "the steady-state loop (throughput_ms x steps)": (doc.throughput_ms or 0.0) * len(doc.times_ms)}
    if doc.to_first_step_s is not None:  # from the process's own start: within what the host saw it live
        claims["import, build and first step (to_first_step_s)"] = (
            max(0.0, doc.to_first_step_s - PROCESS_START_TICK_S) * 1000.0)
    window = doc.timed_window
    if window is not None:
        claims["the timed window"] = (window[1] - window[0]) * 1000.0
    for what, ms in claims.items():
        if ms > life_ms:
            out.append(f"{what} add up to {ms:.1f} ms but the cell's process lived {host.lifetime_s * 1000:.1f} ms")
    if window is not None:
        loops_ms = (doc.timed_wall_ms or 0.0) + (doc.throughput_ms or 0.0) * len(doc.times_ms)
        if window[1] < window[0]:
            out.append(f"timed_window {list(window)} ends before it starts")
        elif (window[1] - window[0]) * 1000.0 * (1 + 1e-3) + 1.0 < loops_ms:
            out.append(f"timed_window spans {(window[1] - window[0]) * 1000:.3f} ms, less than the "
                       f"{loops_ms:.3f} ms of the timed loops it holds")
        span = host.span
        if span is not None and (window[0] < span[0] - SPAN_SLACK_S or window[1] > span[1] + SPAN_SLACK_S):
            out.append(f"timed_window {list(window)} lies outside the time the host saw the cell run "
                       f"[{span[0]:.3f}, {span[1]:.3f}]")
    return out


def flags(doc: WorkloadResult) -> list[str]:
    """What a reader must know about an ok cell but that does not invalidate it."""
    out = []
    if trend(doc)[0] == "flat":
        out.append("loss flat over the timed steps: the lr is too small to tell a learning model from a stuck one")
    wall, times = doc.timed_wall_ms, doc.times_ms
    if wall and times:
        gap = wall - sum(times)
        if gap > GAP_FLAG_SHARE * wall and gap > LOOP_OVERHEAD_MS_PER_STEP * len(times):
            out.append(f"{gap:.1f} ms ({gap / wall:.0%}) of the timed loop fell between steps (preemption, GC, a busy "
                       "host): the per-step times are the steps alone")
    ratio = doc.validity.throughput_over_latency if doc.validity else None
    if ratio is not None and ratio > THROUGHPUT_OVER_LATENCY_FLAG:
        out.append(f"steady-state time per batch is {ratio:.2f}x the per-step latency: the per-step sync may not "
                   "cover all queued work")
    return out


def judge(doc: WorkloadResult, host: HostView | None = None) -> str | None:
    """Why an ok result is not valid, or None. Without `host` (a result judged away from its run) the checks
    against the host's clocks are skipped."""
    if doc.status != "ok":
        return None
    missing = missing_fields(doc)
    problems = [p for p in [precision_problem(doc), missing, *([] if missing else gate_problems(doc))] if p]
    if host is not None:
        problems += host_problems(doc, host)
    return "; ".join(problems) or None
