"""Machine-readable outputs: results.csv (one flat row per cell record) and report.json (the pooled summary)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from orchestrator.report.analyze import Analysis, Group
from orchestrator.report.load import workload_times
from orchestrator.report.startup import first_step_ratio, pooled
from orchestrator.report.stats import describe
from orchestrator.results import CellRecord
from orchestrator.workload_result import STARTUP_FIELDS

REPORT_SCHEMA_VERSION = 1
COLUMNS = (
    "run_id", "cell_id", "framework", "variant", "impl", "label", "original_row", "hidden", "batch", "repeat",
    "device", "gpu",
    "status", "status_word", "reason", "exit_code", "duration_s", "n_times", "median_ms", "mean_ms", "ci_low_ms",
    "ci_high_ms", "cv", "outliers", "min_ms", "max_ms", "flops_per_step", "tflops", "baseline_2016_ms",
    "loss_initial", "loss_after_one_step", "equivalence", "equivalence_rel_dev", "param_count",
    "param_count_expected", "peak_memory_bytes", "setup_s", *STARTUP_FIELDS, "first_step_over_median",
    "finished_at",
    "host_busy", "host_others_share", "throttled", "gpu_shared", "gpu_avg_w", "j_per_batch",
    "gpu_energy_source",  # CellRecord.machine
)


MACHINE_COLUMNS = COLUMNS[COLUMNS.index("host_busy"):]  # the last ones, all CellRecord.machine's


def trained_batch(rec: CellRecord) -> int | None:
    """The batch size the cell trained with: its own (a capacity search by batch), else its params' (the matrix's)."""
    if rec.batch is not None:
        return rec.batch
    got = (rec.cell_params or {}).get("batch")
    return got if isinstance(got, int) and not isinstance(got, bool) else None


def results_frame(a: Analysis) -> pd.DataFrame:
    """One row per record (repeats unpooled), with its own statistics and the pooled cell's derived columns."""
    rows = []
    for g in a.groups.values():
        for rec in g.records:
            times = workload_times(rec)
            s = describe(times) if times and rec.status.value == "ok" else None
            w = rec.workload
            e = g.equivalence
            rows.append({
                "run_id": rec.run_id, "cell_id": rec.cell_id, "framework": rec.framework, "variant": rec.variant,
                "impl": rec.impl, "label": g.row.label, "original_row": g.row.original_row, "hidden": rec.hidden,
                "batch": trained_batch(rec),
                "repeat": rec.repeat, "device": rec.device, "gpu": g.gpu, "status": rec.status.value,
                "status_word": rec.status.word, "reason": rec.reason, "exit_code": rec.exit_code,
                "duration_s": rec.duration_s, "n_times": s.n if s else 0,
                "median_ms": s.median if s else None, "mean_ms": s.mean if s else None,
                "ci_low_ms": s.ci_low if s else None, "ci_high_ms": s.ci_high if s else None,
                "cv": s.cv if s else None, "outliers": s.outliers if s else None,
                "min_ms": s.min if s else None, "max_ms": s.max if s else None,
                "flops_per_step": g.flops,
                "tflops": g.flops / s.median / 1e9 if s and g.flops and s.median > 0 else None,
                "baseline_2016_ms": g.baseline.ms if g.baseline else None,
                "loss_initial": w.loss_initial if w else None,
                "loss_after_one_step": w.loss_after_one_step if w else None,
                "equivalence": e.verdict if e else None, "equivalence_rel_dev": e.rel_dev if e else None,
                "param_count": w.param_count if w else None,
                "param_count_expected": w.param_count_expected if w else None,
                "peak_memory_bytes": w.peak_memory_bytes if w else None, "setup_s": w.setup_s if w else None,
                **{k: getattr(w, k) if w else None for k in STARTUP_FIELDS},
                "first_step_over_median": first_step_ratio(rec),
                "finished_at": rec.finished_at,
                **{k: getattr(rec.machine, k) if rec.machine else None
                   for k in MACHINE_COLUMNS},
            })
    order = {cid: i for i, cid in enumerate(r.cell_id for r in a.run.records)}
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if not frame.empty:
        frame = frame.sort_values("cell_id", key=lambda c: c.map(order)).reset_index(drop=True)
    return frame


def group_doc(g: Group) -> dict[str, Any]:
    s = g.stats
    return {
        "label": g.row.label, "framework": g.row.key[0], "variant": g.row.key[1], "impl": g.row.key[2],
        "precision": g.precision, "throughput_ms": g.throughput_ms, "flags": g.flags,
        "original_row": g.row.original_row, "hidden": g.hidden, "batch": trained_batch(g.records[0]),
        "status": g.status.value, "word": g.word,
        "cells": [r.cell_id for r in g.records], "repeats_ok": len(g.records) - len(g.failures),
        "repeats": len(g.records), "repeat_medians_ms": g.repeat_medians,
        "stats_ms": s.as_dict() if s else None,
        "failures": [{"cell_id": r.cell_id, "repeat": r.repeat, "status": r.status.value, "reason": r.reason}
                     for r in g.failures],
        "baseline_2016": ({"ms": g.baseline.ms, "word": g.baseline.word, "ms_alt": g.baseline.ms_alt}
                          if g.baseline else None),
        "speedup_vs_2016": g.speedup, "speedup_vs_2016_alt": g.speedup_alt,
        "flops_per_step": g.flops, "tflops": g.tflops, "gpu": g.gpu,
        "peak": {"matched": g.peak.gpu, "fp32_tflops": g.peak.fp32_tflops, "tf32_tflops": g.peak.tf32_tflops,
                 "bf16_tflops": g.peak.bf16_tflops, "clock": g.peak.clock, "source": g.peak.source} if g.peak else None,
        "pct_of_peak_fp32": g.pct_fp32, "pct_of_peak_tf32": g.pct_tf32, "pct_of_peak": g.pct_peak,
        "equivalence": g.equivalence.as_dict() if g.equivalence else None,
        "startup_s": {k: pooled(g, k) for k in STARTUP_FIELDS},  # medians over the ok repeats; null: not recorded
    }


def report_doc(a: Analysis, original: list[list[str]], headers: list[str]) -> dict[str, Any]:
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run_id": a.run.manifest.get("run_id", a.run.root.name),
        "manifest": a.run.manifest,
        "hidden": a.hidden,
        "rows": [{"label": r.label, "framework": r.key[0], "variant": r.key[1], "impl": r.key[2],
                  "original_row": r.original_row, "note": r.note} for r in a.rows],
        "not_run_2016": [{"row": m.row, "label_2016": m.label_2016, "why": m.why} for m in a.missing],
        "original_table": {"headers": headers, "rows": original},
        "cells": [group_doc(g) for g in a.groups.values()],
        "warnings": a.warnings,
    }
