"""Records -> the report's model: rows (ours and the 2016 ones), pooled cells with statistics, baseline,
efficiency and equivalence, and the warnings a reader must see."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from orchestrator import PROJECT_ROOT
from orchestrator.frameworks import Framework, discover
from orchestrator.report import peaks
from orchestrator.report.baseline import Baseline, BaselineCell, load_baseline, original_row_for
from orchestrator.report.equivalence import Equivalence, Oracle
from orchestrator.report.flops import flops_for_params, tflops_per_s
from orchestrator.report.load import LoadedRun, workload_times
from orchestrator.report.stats import CONFIDENCE, TimeStats, describe_repeats
from orchestrator.results import CellRecord, Status
from orchestrator.validity import flags as validity_flags

# framework, variant, impl, precision, batch: the cell's own batch where it differs from the run's (a capacity search
# by batch), else None. Cells of two batch sizes are two rows: never pooled, never ranked against each other.
RowKey = tuple[str, str | None, str, str, int | None]


@dataclass
class Row:
    key: RowKey
    label: str
    original_row: str | None  # the 2016 row this one continues
    note: str | None = None
    impl_note: str | None = None  # what this impl runs (framework.yaml impl_notes; report/impls_table.py)
    impl_label: str = ""  # the label without its precision and batch: every precision and batch run the same code


@dataclass
class Group:
    """One cell of the table: every repeat of one framework/variant/impl at one hidden size.

    `stats` rests on the ok repeats as fresh processes (report/stats.py describe_repeats): with 2+ of them its
    median and interval are over processes, with one over that process's batches.
    """

    row: Row
    hidden: int
    records: list[CellRecord]
    status: Status
    stats: TimeStats | None
    failures: list[CellRecord]
    baseline: BaselineCell | None = None
    flops: int | None = None
    tflops: float | None = None
    gpu: str | None = None
    peak: peaks.GpuPeak | None = None
    equivalence: Equivalence | None = None
    repeat_medians: list[float] = field(default_factory=list)
    throughput_ms: float | None = None  # steady state: median over ok repeats of (back-to-back steps) / iters
    flags: list[str] = field(default_factory=list)  # validity flags of ok repeats (orchestrator/validity.py)

    @property
    def precision(self) -> str:
        return self.row.key[3]

    @property
    def batch(self) -> int | None:
        """The batch size when it differs from the run's (the row says so), else None."""
        return self.row.key[4]

    @property
    def pct_peak(self) -> float | None:
        """% of the dense peak of the cell's own precision (fp32, TF32 or bf16)."""
        peak = self.peak.for_precision(self.precision) if self.peak else None
        return 100.0 * self.tflops / peak if self.tflops and peak else None

    @property
    def median(self) -> float | None:
        return self.stats.median if self.stats else None

    @property
    def speedup(self) -> float | None:
        """2016 time / ours: above 1 means we are faster than the GTX 980 number."""
        if self.median and self.baseline and self.baseline.ms:
            return self.baseline.ms / self.median
        return None

    @property
    def speedup_alt(self) -> float | None:
        if self.median and self.baseline and self.baseline.ms_alt:
            return self.baseline.ms_alt / self.median
        return None

    @property
    def pct_fp32(self) -> float | None:
        return 100.0 * self.tflops / self.peak.fp32_tflops if self.tflops and self.peak else None

    @property
    def pct_tf32(self) -> float | None:
        if self.tflops and self.peak and self.peak.tf32_tflops:
            return 100.0 * self.tflops / self.peak.tf32_tflops
        return None

    @property
    def word(self) -> str:
        return self.status.word


@dataclass
class Missing2016:
    row: str
    label_2016: str
    why: str
    in_plan: bool = False  # this run's plan had cells for it (and none finished); else it was not in this run


@dataclass
class Analysis:
    run: LoadedRun
    baseline: Baseline
    rows: list[Row]
    hidden: list[int]
    groups: dict[tuple[RowKey, int], Group]
    missing: list[Missing2016]
    warnings: list[str]

    def group(self, row: Row, hidden: int) -> Group | None:
        return self.groups.get((row.key, hidden))

    def table_rows(self) -> list[Row | Missing2016]:
        """The original-shaped table: every 2016 row in its order (ours, or why not run), then our other rows."""
        out: list[Row | Missing2016] = []
        for name in self.baseline.rows:
            mapped = [r for r in self.rows if r.original_row == name]
            out.extend(mapped or [m for m in self.missing if m.row == name])
        out.extend(r for r in self.rows if r.original_row is None)
        return out


def analyze(run: LoadedRun, frameworks: dict[str, Framework] | None = None) -> Analysis:
    frameworks = discover(PROJECT_ROOT / "images") if frameworks is None else frameworks
    baseline = load_baseline()
    default_batch = (run.manifest.get("matrix") or {}).get("batch")
    rows = _rows(run.records, frameworks, baseline, default_batch)
    by_key = {r.key: r for r in rows}
    oracle = Oracle(run.records)
    pooled: dict[tuple[RowKey, int], list[CellRecord]] = {}
    for rec in run.records:
        pooled.setdefault((row_key(rec, default_batch), rec.hidden), []).append(rec)
    groups = {}
    for (key, hidden), recs in pooled.items():
        groups[(key, hidden)] = _group(by_key[key], hidden, recs, run.manifest, baseline, oracle)
    matrix_hidden = [h for h in (run.manifest.get("matrix") or {}).get("hidden") or [] if isinstance(h, int)]
    # With neither a matrix nor a record to say, show the 2016 sizes rather than a table without columns.
    hidden = sorted(set(matrix_hidden) | {h for _, h in groups}) or sorted({h for _, h in baseline.cells})
    analysis = Analysis(run, baseline, rows, hidden, groups, _missing(rows, run, frameworks, baseline), [])
    from orchestrator.report.machine import machine_warnings  # it builds on this module's Analysis

    analysis.warnings = _warnings(analysis) + machine_warnings(analysis)
    return analysis


def row_key(rec: CellRecord, default_batch: Any) -> RowKey:
    return (rec.framework, rec.variant, rec.impl, rec.precision, rec.batch_apart(default_batch))


def _rows(records: tuple[CellRecord, ...], frameworks: dict[str, Framework], baseline: Baseline,
          default_batch: Any = None) -> list[Row]:
    impls: dict[tuple[str, str | None], set[str]] = {}
    for rec in records:
        impls.setdefault((rec.framework, rec.variant), set()).add(rec.impl)
    rows: dict[RowKey, Row] = {}
    for rec in records:
        key = row_key(rec, default_batch)
        if key in rows:
            continue
        fw = frameworks.get(rec.framework)
        impl_label = rec.label if len(impls[(rec.framework, rec.variant)]) == 1 else f"{rec.label} [{rec.impl}]"
        label = impl_label
        if rec.precision != "fp32":  # fp32 rows keep their plain label; every other precision says so
            label = f"{label} ({rec.precision})"
        if key[4] is not None:  # the run's batch keeps the plain label; another batch size says so
            label = f"{label} (batch {key[4]})"
        rows[key] = Row(key, label, original_row_for(rec.label, fw, rec.variant, baseline),
                        fw.meta.note if fw else None, _impl_note(fw, rec), impl_label)
    # 2016 rows first in the 2016 order; within one, and for the rest, the run's (plan) order; the batch sizes of
    # one row together, smallest first (a capacity search's probes run in search order, not size order).
    order = {name: i for i, name in enumerate(baseline.rows)}
    first = {k[:4]: i for i, k in reversed(list(enumerate(rows)))}
    return sorted(rows.values(), key=lambda r: (order.get(r.original_row or "", len(order)), first[r.key[:4]],
                                                r.key[4] or 0))


def _impl_note(fw: Framework | None, rec: CellRecord) -> str | None:
    """The description of the impl that ran, else of the one asked for: a fallback the workload records under its
    own name (TensorFlow's fused on a CPU records keras-loop) is described by the impl that was asked for."""
    notes = fw.meta.impl_notes if fw else {}
    asked = (rec.cell_params or {}).get("impl")
    return notes.get(rec.impl) or (notes.get(asked) if isinstance(asked, str) else None)


# The 2016 workload's parameters (../shared/seed/NOTES.md); the hidden size is matched cell by cell.
ORIGINAL_PARAMS = {"batch": 128, "seq_len": 64, "vocab": 10000, "classes": 5, "device": "gpu"}


def comparable_to_2016(params: dict[str, Any] | None) -> bool:
    """The 2016 workload: its sizes, on a GPU, in float32 (the 2016 frameworks had no TF32 or bf16)."""
    if not params or params.get("precision", "fp32") != "fp32":
        return False
    return all(params.get(k) == v for k, v in ORIGINAL_PARAMS.items())


def _group(row: Row, hidden: int, recs: list[CellRecord], manifest: dict[str, Any], baseline: Baseline,
           oracle: Oracle) -> Group:
    recs = sorted(recs, key=lambda r: r.repeat)
    ok = [r for r in recs if r.status is Status.OK and workload_times(r)]
    failures = [r for r in recs if r not in ok]
    stats = describe_repeats([workload_times(r) for r in ok]) if ok else None
    status = Status.OK if ok else failures[0].status
    params = next((r.cell_params for r in recs if r.cell_params), None)  # the cell's own, never the echo
    # A 2016 number is only a baseline for the same workload on a GPU; a smoke run at other sizes gets none.
    then = baseline.cell(row.original_row, hidden) if comparable_to_2016(params) else None
    g = Group(row, hidden, recs, status, stats, failures, then)
    g.repeat_medians = list(stats.repeat_medians) if stats else []
    steady = sorted(r.workload.throughput_ms for r in ok if r.workload and r.workload.throughput_ms is not None)
    g.throughput_ms = steady[len(steady) // 2] if steady else None
    g.flags = sorted({f for r in ok if r.workload for f in validity_flags(r.workload)})
    if params:
        g.flops = flops_for_params(params)
        if stats and stats.median > 0:
            g.tflops = tflops_per_s(g.flops, stats.median)
    first = recs[0]
    g.gpu = peaks.gpu_name(first.slot, first.device, manifest, first.workload)
    g.peak = peaks.lookup(g.gpu)
    g.equivalence = oracle.check(recs)
    return g


def _planned(manifest: dict[str, Any]) -> set[tuple[str, str | None]] | str | None:
    """(framework, variant) pairs the run's plan (its matrix, --only included) asked for, variant None meaning
    all of that framework's variants; "all"; or None when the manifest does not say."""
    fws = (manifest.get("matrix") or {}).get("frameworks")
    if fws == "all":
        return "all"
    if not isinstance(fws, list):
        return None
    out: set[tuple[str, str | None]] = set()
    for f in fws:
        if isinstance(f, dict):
            out.update((str(f.get("name")), v) for v in (f.get("variants") or [None]))
        else:
            name, _, variant = str(f).partition(":")
            out.add((name, variant or None))
    return out


def _missing(rows: list[Row], run: LoadedRun, frameworks: dict[str, Framework],
             baseline: Baseline) -> list[Missing2016]:
    asked = _planned(run.manifest)
    state = run.manifest.get("state")
    out = []
    for name in baseline.rows:
        if any(r.original_row == name for r in rows):
            continue
        candidates = [
            (fw, variant) for fw in frameworks.values()
            for variant in (fw.meta.variants or (None,))
            if original_row_for(fw.row_label(variant), fw, variant, baseline) == name
        ]
        shown = ", ".join(f"images/{fw.name}" + (f" (variant {v})" if v else "") for fw, v in candidates)
        planned = asked is None or asked == "all" or any(  # unknown plan: shown as "not run", as before
            (fw.name, v) in asked or (fw.name, None) in asked for fw, v in candidates)
        if not candidates:
            why, planned = "no framework in images/ continues this row", False
        elif asked is None:
            why = f"no cell of {shown} in this run (its manifest does not say what was planned)"
        elif not planned:
            why = f"not in this run's plan ({shown} continues it)"
        elif state == "interrupted":
            why = f"in this run's plan ({shown}), but the run was interrupted before a cell of it finished"
        else:
            why = f"in this run's plan ({shown}), but no cell of it is recorded (run {state or 'state unknown'})"
        out.append(Missing2016(name, baseline.labels[name], why, planned))
    return out


def processes_line(a: Analysis) -> str:
    """How many fresh processes (repeats) the table's numbers rest on, and what that allows."""
    counts: dict[int, int] = {}
    for g in a.groups.values():
        if g.stats:
            counts[g.stats.repeats] = counts.get(g.stats.repeats, 0) + 1
    if not counts:
        return ""
    parts = ", ".join(f"{k} fresh process{'es' if k > 1 else ''} ({v} cell{'s' if v > 1 else ''})"
                      for k, v in sorted(counts.items(), reverse=True))
    line = (f"Each number rests on {parts}: a fresh process or container per repeat; with several, the number is "
            "the geometric mean of their medians and its interval is over processes.")
    if 1 in counts:
        line += (" A number from one process cannot show run-to-run spread (a few % on a quiet machine, far more "
                 "on a busy one): rerun with --set repeats=3 before ranking close cells.")
    return line


def _warnings(a: Analysis) -> list[str]:
    out = list(a.run.warnings)
    precisions = sorted({g.precision for g in a.groups.values()})
    if len(precisions) > 1:
        out.append(f"this run mixes precisions ({', '.join(precisions)}): cells are compared and ranked only within "
                   "one precision; a faster cell of another precision is faster partly because of its arithmetic")
    batches = list(dict.fromkeys(g.batch for g in a.groups.values()))
    rankings = [ranked(a, h, p, b) for h in a.hidden for p in precisions for b in batches]
    single = [g for gs in rankings if len(gs) > 1 for g in gs if g.stats and g.stats.repeats < 2]
    if single:
        out.append(f"{len(single)} cell(s) rest on one fresh process: their order is checked against their own "
                   "batches only, not against run-to-run spread (rerun with --set repeats=3 to rank them)")
    few = [g for g in a.groups.values() if g.stats and g.stats.ci_coverage < CONFIDENCE]
    if few:
        cells = ", ".join(f"{g.row.label} hidden-{g.hidden} (n={g.stats.n})" for g in few if g.stats)
        out.append(f"too few timed batches for a 95% interval of the median in {cells}: the interval shown is "
                   "[min, max], with less than 95% confidence; use iters ≥ 6")
    for g in a.groups.values():
        if g.status is Status.OK and g.failures:
            words = ", ".join(f"repeat {r.repeat}: {r.status.word}" for r in g.failures)
            out.append(f"{g.row.label} hidden-{g.hidden}: pooled over the ok repeats only ({words})")
        e = g.equivalence
        if e and e.verdict == "mismatch":
            out.append(f"{g.row.label} hidden-{g.hidden} ({g.precision}): differs from the NumPy reference: "
                       f"{e.why}: it may not compute the benchmark")
        if e and e.params_ok is False:
            out.append(f"{g.row.label} hidden-{g.hidden}: {e.param_count} parameters, expected "
                       f"{e.param_count_expected}")
        out.extend(f"{g.row.label} hidden-{g.hidden}: {flag}" for flag in g.flags)
    return out


def ranked(a: Analysis, h: int, precision: str, batch: int | None = None) -> list[Group]:
    """The timed cells of one size and precision, fastest median first (cells of two precisions are never ranked
    against each other: a faster one would be faster partly because of its arithmetic; nor two batch sizes: a
    batch's time grows with its size). `batch` None: the run's own batch size."""
    return sorted((g for (_, gh), g in a.groups.items()
                   if gh == h and g.stats and g.precision == precision and g.batch == batch),
                  key=lambda g: g.median or 0)
