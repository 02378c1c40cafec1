"""Host-side judgement of a workload result that says "ok": is what it measured what the cell asked for?

Kept apart from classify.py on purpose (one call from there): the precision read-back and the validity gates of
docs/contract.md ("Precision" and "Validity"). A failed check makes the cell `invalid-output` with the reason.
"""

from __future__ import annotations

from orchestrator.workload_result import WorkloadResult

# Sum of the per-step times vs the wall time of the timed loop: within 1%, plus the harness's own loop overhead
# (a few microseconds a step, which is more than 1% of a sub-millisecond CPU step of a tiny test cell).
TIMES_SUM_TOLERANCE = 0.01
LOOP_OVERHEAD_MS_PER_STEP = 0.05
# Steady-state time per batch above this multiple of the per-step latency: the per-step sync cannot have covered
# the queued work (a no-op sync makes the latency loop time only the launches). Reported, not failed: on a busy
# CPU a few-step cell can be this noisy.
THROUGHPUT_OVER_LATENCY_FLAG = 1.5


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


def gate_problems(doc: WorkloadResult) -> list[str]:
    """Failed validity gates: the loss rose over the timed steps, or the per-step times do not add up."""
    gates = doc.validity
    out = []
    if gates is not None and gates.loss_trend in ("increasing", "not-finite"):
        out.append(f"the loss is {gates.loss_trend.replace('-', ' ')} over the timed steps "
                   f"(relative change {gates.loss_trend_rel})")
    wall, times = doc.timed_wall_ms, doc.times_ms
    if wall is not None and wall > 0 and times:
        gap = abs(wall - sum(times))
        if gap > TIMES_SUM_TOLERANCE * wall and gap > LOOP_OVERHEAD_MS_PER_STEP * len(times):
            out.append(f"the per-step times add up to {sum(times):.3f} ms but the timed loop took {wall:.3f} ms "
                       f"(more than {TIMES_SUM_TOLERANCE:.0%} apart)")
    return out


def flags(doc: WorkloadResult) -> list[str]:
    """What a reader must know about an ok cell but that does not invalidate it."""
    gates = doc.validity
    if gates is None:
        return []
    out = []
    if gates.loss_trend == "flat":
        out.append("loss flat over the timed steps: the lr is too small to tell a learning model from a stuck one")
    ratio = gates.throughput_over_latency
    if ratio is not None and ratio > THROUGHPUT_OVER_LATENCY_FLAG:
        out.append(f"steady-state time per batch is {ratio:.2f}x the per-step latency: the per-step sync may not "
                   "cover all queued work")
    return out


def judge(doc: WorkloadResult) -> str | None:
    """Why an ok result is not valid, or None."""
    if doc.status != "ok":
        return None
    problems = [p for p in [precision_problem(doc), *gate_problems(doc)] if p]
    return "; ".join(problems) or None
