"""Compare two runs cell by cell: ratio of medians (B / A), a Mann-Whitney U test on the per-batch times, the
geometric mean of the ratios, and regressions / improvements (significant and more than 5%).

    python -m orchestrator compare RUN_A RUN_B [--markdown FILE]

The U test is scipy.stats.mannwhitneyu (two-sided; exact for small samples without ties, otherwise the normal
approximation with tie and continuity corrections), O(n log n) in the number of batches. Per-batch times of one
process are not fully independent (warm caches, clocks), so read p as a screen, not as proof.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

from orchestrator.errors import InputError
from orchestrator.report.load import LoadedRun, load_run, workload_times
from orchestrator.results import CellRecord, Status
from orchestrator.store import write_atomic
from orchestrator.text import md_text, visible

ALPHA = 0.05
THRESHOLD = 0.05  # a change must also exceed 5% of the median to count as a regression or improvement
Key = tuple[str, str | None, str, int, str]  # framework, variant, impl, hidden, precision
# Matrix keys that change what a cell measures: a difference makes the comparison suspect.
_SAME_KEYS = ("batch", "seq_len", "vocab", "classes", "lr", "warmup", "iters", "seed", "device", "data_batches")


@dataclass(frozen=True)
class UTest:
    u: float  # U of the first sample
    z: float
    p: float  # two-sided


def mann_whitney_u(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> UTest:
    """Two-sided Mann-Whitney U test of the first sample against the second (scipy.stats)."""
    a = np.asarray(x, dtype=np.float64)
    b = np.asarray(y, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("both samples need at least one value")
    mu = a.size * b.size / 2.0
    if np.ptp(np.concatenate([a, b])) == 0:
        return UTest(mu, 0.0, 1.0)  # every value identical: no evidence of a difference
    res = stats.mannwhitneyu(a, b, alternative="two-sided", method="auto")
    u, p = float(res.statistic), float(min(1.0, res.pvalue))
    z = math.copysign(float(stats.norm.isf(p / 2.0)), u - mu) if u != mu else 0.0
    return UTest(u, z, p)


@dataclass(frozen=True)
class Side:
    status: str
    times: list[float]

    @property
    def median(self) -> float | None:
        return float(np.median(self.times)) if self.times else None


@dataclass(frozen=True)
class Row:
    key: Key
    label: str
    a: Side | None
    b: Side | None
    ratio: float | None
    test: UTest | None

    @property
    def verdict(self) -> str:
        if self.a is None:
            return "only in B"
        if self.b is None:
            return "only in A"
        if self.a.status != self.b.status:
            return f"status {self.a.status} -> {self.b.status}"
        if self.ratio is None or self.test is None:
            return ""
        if self.test.p < ALPHA and self.ratio > 1 + THRESHOLD:
            return "REGRESSION"
        if self.test.p < ALPHA and self.ratio < 1 - THRESHOLD:
            return "improvement"
        return "no significant change" if self.test.p >= ALPHA else "significant, within 5%"


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
    for rec in run.records:
        key = (rec.framework, rec.variant, rec.impl, rec.hidden, rec.precision)  # never pool across precisions
        pooled.setdefault(key, []).append(rec)
        several = len(impls[(rec.framework, rec.variant)]) > 1
        label = f"{rec.label} [{rec.impl}]" if several else rec.label
        labels.setdefault(key, label if rec.precision == "fp32" else f"{label} ({rec.precision})")
    sides = {}
    for key, recs in pooled.items():
        ok = [r for r in recs if r.status is Status.OK and workload_times(r)]
        times = [t for r in ok for t in workload_times(r)]
        sides[key] = Side("ok" if ok else recs[0].status.value, times)
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
        ratio = test = None
        if x and y and x.median and y.median is not None:
            ratio = y.median / x.median
            test = mann_whitney_u(x.times, y.times)
        rows.append(Row(key, la.get(key) or lb[key], x, y, ratio, test))
    return Comparison(a, b, rows, _notes(a, b))


def _fmt(v: float | None, spec: str) -> str:
    return format(v, spec) if v is not None else "-"


def _table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    headers = ["cell", "hidden", "A ms", "B ms", "B/A", "p (U test)", "verdict"]
    body = []
    for r in c.rows:
        a_txt = _fmt(r.a.median, ".3g") if r.a and r.a.median is not None else (r.a.status if r.a else "-")
        b_txt = _fmt(r.b.median, ".3g") if r.b and r.b.median is not None else (r.b.status if r.b else "-")
        p = f"{r.test.p:.3g}" if r.test else "-"
        body.append([r.label, str(r.key[3]), a_txt, b_txt, _fmt(r.ratio, ".3f"), p, r.verdict])
    return headers, body


def _summary(c: Comparison) -> list[str]:
    regress = sum(r.verdict == "REGRESSION" for r in c.rows)
    improve = sum(r.verdict == "improvement" for r in c.rows)
    gm = c.geomean
    lines = [
        f"geometric mean of B/A over {sum(1 for r in c.rows if r.ratio)} cells: {_fmt(gm, '.3f')}"
        + (f" (B {'slower' if gm > 1 else 'faster'} by {abs(gm - 1) * 100:.1f}%)" if gm else ""),
        f"{regress} regression(s), {improve} improvement(s) (p < {ALPHA} and more than {THRESHOLD:.0%})",
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
           "B/A is the ratio of median ms per batch (above 1: B is slower). p: two-sided Mann-Whitney U test on "
           "the per-batch times (normal approximation).", "",
           "| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in body:
        cells = [_md(x) for x in row]
        if row[-1] == "REGRESSION":
            cells[-1] = "**REGRESSION**"
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
