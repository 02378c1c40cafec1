"""Compare two runs cell by cell at the level of fresh processes (repeats), and say only what the data supports.

    python -m orchestrator compare RUN_A RUN_B [--markdown FILE]

A cell's time is the geometric mean of its repeats' medians (one repeat: that process's median); the batches of one
process give its median only (orchestrator/report/stats.py says why). B/A is the ratio of the two cells' times and
its 95% interval comes from Welch's t test on the logarithms of the repeats' medians (scipy.stats.ttest_ind), so the
interval is as wide as the measured run-to-run spread makes it. The verdicts (VERDICT_HELP) need that interval to
clear a 5% band: a change must be larger than 5% by more than the spread's margin of error to be called one.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.report.load import LoadedRun, load_run, workload_times
from orchestrator.report.stats import Difference, TimeStats, describe_repeats, difference
from orchestrator.results import CellRecord, Status
from orchestrator.store import write_atomic
from orchestrator.text import md_text, visible

THRESHOLD = 0.05  # the smallest change called one: the whole 95% interval of B/A must lie beyond 1 +- 5%
SUGGESTED_REPEATS = 3
VERDICT_HELP = (
    "Each cell's time is the geometric mean of its repeats' medians (each repeat is a fresh process or container; "
    "--set repeats=N); B/A is the ratio of the two times with a 95% interval from Welch's t test on the logs of "
    "the repeats' medians, so it is as wide as the measured run-to-run spread. Verdicts: REGRESSION when the whole "
    "interval lies above 1.05 (B slower by more than 5%, beyond noise), improvement when it lies below 1/1.05, "
    "no change when it lies within 1/1.05-1.05, and cannot tell otherwise, with the reason: fewer than 2 repeats on "
    "a side (one process per side cannot separate a change from run-to-run noise: run with --set repeats=3 or "
    "more) or an interval too wide for the 5% band (more repeats narrow it). Cells in one run only, or whose status "
    "changed, say so. A verdict on cells that ran on a busy host (other processes took their CPUs) says so: the "
    "machine's state can drift between runs, which repeats within one run cannot see. Notes flag runs whose "
    "settings or machine state differ."
)
# framework, variant, impl, hidden, precision, and the cell's own batch where it differs from its run's (else None)
Key = tuple[str, str | None, str, int, str, int | None]
# Matrix keys that change what a cell measures: a difference makes the comparison suspect.
_SAME_KEYS = ("batch", "seq_len", "vocab", "classes", "lr", "warmup", "iters", "seed", "device", "data_batches")


@dataclass(frozen=True)
class Side:
    status: str
    stats: TimeStats | None  # over the ok repeats; None when none has times
    busy: bool = False  # an ok repeat ran while other processes took its CPUs (machine.host_busy)

    @property
    def median(self) -> float | None:
        return self.stats.median if self.stats else None

    @property
    def repeats(self) -> int:
        return self.stats.repeats if self.stats else 0


def judge(d: Difference, threshold: float = THRESHOLD) -> tuple[str, str]:
    """The verdict on one cell and why: REGRESSION, improvement, no change or cannot tell (VERDICT_HELP)."""
    ra, rb = d.repeats
    if min(ra, rb) < 2:
        where = "per side" if ra == rb else ("in A" if ra < rb else "in B")
        return "cannot tell", (f"{min(ra, rb)} repeat {where}; run with --set repeats={SUGGESTED_REPEATS} or more "
                               "(one process cannot separate a change from run-to-run noise)")
    assert d.low is not None and d.high is not None
    up, down = 1.0 + threshold, 1.0 / (1.0 + threshold)
    if d.low > up:
        return "REGRESSION", ""
    if d.high < down:
        return "improvement", ""
    if d.low >= down and d.high <= up:
        return "no change", ""
    return "cannot tell", (f"95% interval {d.low:.3f}-{d.high:.3f} reaches past +-{threshold:.0%}: more repeats "
                           "narrow it")


@dataclass(frozen=True)
class Row:
    key: Key
    label: str
    a: Side | None
    b: Side | None
    diff: Difference | None

    @property
    def ratio(self) -> float | None:
        return self.diff.ratio if self.diff else None

    @property
    def judged(self) -> tuple[str, str]:
        if self.a is None:
            return "only in B", ""
        if self.b is None:
            return "only in A", ""
        if self.a.status != self.b.status:
            return f"status {self.a.status} -> {self.b.status}", ""
        if not self.diff:
            return "", ""
        verdict, why = judge(self.diff)
        busy = [side for side, s in (("A", self.a), ("B", self.b)) if s.busy]
        if busy and not why:  # the machine's state can drift between runs, which repeats within a run cannot see
            why = f"busy host in {' and '.join(busy)}: other processes took the cells' CPUs; rerun to confirm"
        return verdict, why

    @property
    def verdict(self) -> str:
        return self.judged[0]

    @property
    def reason(self) -> str:
        return self.judged[1]


@dataclass(frozen=True)
class Comparison:
    a: LoadedRun
    b: LoadedRun
    rows: list[Row]
    notes: list[str]

    @property
    def geomean(self) -> float | None:
        ratios = [r.ratio for r in self.rows if r.ratio]
        return float(math.exp(sum(math.log(x) for x in ratios) / len(ratios))) if ratios else None


def _sides(run: LoadedRun, impls: dict[tuple[str, str | None], set[str]]) -> tuple[dict[Key, Side], dict[Key, str]]:
    pooled: dict[Key, list[CellRecord]] = {}
    labels: dict[Key, str] = {}
    default_batch = (run.manifest.get("matrix") or {}).get("batch")
    for rec in run.records:
        # never pool across precisions, nor across batch sizes
        key = (rec.framework, rec.variant, rec.impl, rec.hidden, rec.precision, rec.batch_apart(default_batch))
        pooled.setdefault(key, []).append(rec)
        several = len(impls[(rec.framework, rec.variant)]) > 1
        label = f"{rec.label} [{rec.impl}]" if several else rec.label
        label = label if rec.precision == "fp32" else f"{label} ({rec.precision})"
        labels.setdefault(key, label if key[5] is None else f"{label} (batch {key[5]})")
    sides = {}
    for key, recs in pooled.items():
        ok = [r for r in recs if r.status is Status.OK and workload_times(r)]
        stats = describe_repeats([workload_times(r) for r in ok]) if ok else None
        busy = any(r.machine and r.machine.host_busy for r in ok)
        sides[key] = Side("ok" if ok else recs[0].status.value, stats, busy)
    return sides, labels


def _notes(a: LoadedRun, b: LoadedRun) -> list[str]:
    notes = []
    ma, mb = a.manifest.get("matrix") or {}, b.manifest.get("matrix") or {}
    for k in _SAME_KEYS:
        if k in ma and k in mb and ma[k] != mb[k]:
            notes.append(f"the runs differ in {k}: {ma[k]} (A) vs {mb[k]} (B); compare with care")
    ga = sorted({str(g.get("name")) for g in a.manifest.get("gpus") or [] if isinstance(g, dict)})
    gb = sorted({str(g.get("name")) for g in b.manifest.get("gpus") or [] if isinstance(g, dict)})
    if ga != gb:
        notes.append(f"different GPUs: {', '.join(ga) or 'none'} (A) vs {', '.join(gb) or 'none'} (B)")
    return notes + machine_notes(a, b)


# GPU settings (manifest "gpus", from nvidia-smi and NVML) that change what a GPU can do.
_GPU_SETTINGS = (("driver", "driver"), ("power_limit_w", "power limit (W)"),
                 ("application_clocks_mhz", "application clocks (MHz)"), ("clocks_locked", "clocks locked"))


def _gpu_setting(run: LoadedRun, key: str) -> str:
    values = sorted({str(g.get(key)) for g in run.manifest.get("gpus") or [] if isinstance(g, dict) and key in g})
    return ", ".join(values)


def machine_notes(a: LoadedRun, b: LoadedRun) -> list[str]:
    """The comparability guard: the machine state differed between the runs, or one of them ran disturbed."""
    notes = []
    for key, name in _GPU_SETTINGS:
        va, vb = _gpu_setting(a, key), _gpu_setting(b, key)
        if va and vb and va != vb:
            notes.append(f"the GPUs' {name} differ: {va} (A) vs {vb} (B); compare with care")
    for side, run in (("A", a), ("B", b)):
        throttled = sum(1 for r in run.records if r.machine and r.machine.throttled)
        busy = sum(1 for r in run.records if r.machine and r.machine.host_busy)
        if throttled:
            notes.append(f"run {side}: the GPU throttled (power or heat) in {throttled} cell(s); compare with care")
        if busy:
            notes.append(f"run {side}: {busy} cell(s) ran on a busy host (other processes took their CPUs); "
                         "compare with care")
        shared = sum(1 for r in run.records if r.machine and r.machine.gpu_shared)
        if shared:
            notes.append(f"run {side}: {shared} cell(s) shared their GPU with another process; compare with care")
    return notes


def build(run_a: Path, run_b: Path) -> Comparison:
    a, b = load_run(Path(run_a)), load_run(Path(run_b))
    impls: dict[tuple[str, str | None], set[str]] = {}
    for rec in (*a.records, *b.records):
        impls.setdefault((rec.framework, rec.variant), set()).add(rec.impl)
    sa, la = _sides(a, impls)
    sb, lb = _sides(b, impls)
    rows = []
    for key in list(dict.fromkeys([*sa, *sb])):
        x, y = sa.get(key), sb.get(key)
        diff = difference(x.stats, y.stats) if x and y and x.stats and y.stats and x.stats.median > 0 else None
        rows.append(Row(key, la.get(key) or lb[key], x, y, diff))
    return Comparison(a, b, rows, _notes(a, b))


def _fmt(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


def _table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["cell", "hidden", "A ms", "B ms", "repeats A/B", "B/A", "95% interval", "verdict"]
    body = []
    for r in c.rows:
        a_txt = _fmt(r.a.median, ".3g") if r.a and r.a.median is not None else (r.a.status if r.a else "-")
        b_txt = _fmt(r.b.median, ".3g") if r.b and r.b.median is not None else (r.b.status if r.b else "-")
        reps = f"{r.a.repeats if r.a else 0}/{r.b.repeats if r.b else 0}"
        d = r.diff
        interval = f"{d.low:.3f}-{d.high:.3f}" if d and d.known else "-"
        verdict, why = r.judged
        body.append([r.label, str(r.key[3]), a_txt, b_txt, reps, _fmt(r.ratio, ".3f"), interval,
                     f"{verdict} ({why})" if why else verdict])
    return headers, body


def _summary(c: Comparison) -> list[str]:
    count = {w: sum(r.verdict == w for r in c.rows) for w in ("REGRESSION", "improvement", "no change", "cannot tell")}
    gm = c.geomean
    lines = [
        f"geometric mean of B/A over {sum(1 for r in c.rows if r.ratio)} cells: {_fmt(gm, '.3f')}"
        + (f" (B {'slower' if gm > 1 else 'faster'} by {abs(gm - 1) * 100:.1f}%)" if gm else ""),
        f"{count['REGRESSION']} regression(s), {count['improvement']} improvement(s), {count['no change']} "
        f"no change, {count['cannot tell']} cannot tell (a verdict needs the 95% interval of B/A, from 2+ repeats "
        f"per side, wholly beyond or within +-{THRESHOLD:.0%})",
    ]
    return lines + [f"note: {n}" for n in c.notes]


def to_text(c: Comparison) -> str:
    headers, body = _table(c)
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    out = [f"A: {c.a.root}  ({c.a.manifest.get('run_id', '?')})", f"B: {c.b.root}  ({c.b.manifest.get('run_id', '?')})",
           "", line, "-" * len(line)]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in body]
    return visible("\n".join([*out, "", *_summary(c)])) + "\n"  # data never drives the terminal


def _md(text: str) -> str:
    return md_text(text)


def to_markdown(c: Comparison) -> str:
    headers, body = _table(c)
    out = [f"# Comparison: {_md(str(c.a.manifest.get('run_id', c.a.root.name)))} (A) vs "
           f"{_md(str(c.b.manifest.get('run_id', c.b.root.name)))} (B)", "",
           "B/A is the ratio of the cells' ms per batch (above 1: B is slower); a cell's ms is the geometric mean "
           "of its repeats' medians (fresh processes). 95% interval: Welch's t test on the logs of the repeats' "
           "medians. A verdict needs that interval wholly beyond (or within) 1 +- 5%.", "",
           "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in body:
        cells = [_md(x) for x in row]
        if row[-1].startswith("REGRESSION"):
            cells[-1] = f"**{cells[-1]}**"
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join([*out, "", *(f"- {_md(s)}" for s in _summary(c))]) + "\n"


def compare(run_a: Path, run_b: Path, markdown_out: Path | None = None) -> str:
    """The comparison as text; also written as Markdown to `markdown_out` when given."""
    c = build(run_a, run_b)
    if markdown_out is not None:
        write_atomic(Path(markdown_out), to_markdown(c))
    return to_text(c)


def run_cli(run_a: Path, run_b: Path, markdown: Path | None) -> int:
    """`python -m orchestrator compare A B [--markdown FILE]`: 0 on success, 2 on bad input (one line, no trace)."""
    try:
        sys.stdout.write(compare(run_a, run_b, markdown))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
