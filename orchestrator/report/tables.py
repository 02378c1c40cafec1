"""The report's content as plain tables of strings, shared by report.md and report.html (one source of truth)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from orchestrator.matrix import PRECISIONS
from orchestrator.report.analyze import ORIGINAL_PARAMS, Analysis, Group, Missing2016, Row, processes_line, ranked
from orchestrator.report.equivalence import TOLERANCES
from orchestrator.report.fmt import fmt_ms, fmt_pct, fmt_x
from orchestrator.report.stats import MODIFIED_Z_LIMIT, overlaps

NOT_RUN = "not run"
NOT_IN_RUN = "not in this run"
FASTEST, TIED = "fastest", "tied"  # marks of a table cell (report.html highlights them)
REASON_CHARS = 600


@dataclass
class Table:
    key: str
    title: str
    headers: list[str]
    rows: list[list[str]]
    intro: str = ""
    notes: list[str] = field(default_factory=list)
    marks: dict[tuple[int, int], str] = field(default_factory=dict)  # (row, column) -> FASTEST or TIED


def one_line(text: str | None, limit: int = REASON_CHARS) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def cell_text(g: Group | None) -> str:
    if g is None:
        return NOT_RUN
    if g.stats:
        return fmt_ms(g.stats.median) + ("†" if g.failures else "")
    return g.word


@dataclass
class Standing:
    """Who is fastest at one hidden size and precision: the timed cells, fastest median first."""

    hidden: int
    precision: str
    ranked: list[Group]
    batch: int | None = None  # a batch size other than the run's (a capacity search by batch), ranked on its own

    def ratio(self, g: Group) -> float | None:
        """g's median time as a multiple of the fastest's (1.50 = takes 1.5 times as long)."""
        best = self.ranked[0].median
        return g.median / best if g.median is not None and best else None

    def tied(self, g: Group) -> bool:
        """This run cannot say which of g and the fastest is faster (stats.overlaps: over repeats when both have
        2+, else their batch intervals)."""
        best = self.ranked[0]
        return g is not best and g.stats is not None and best.stats is not None and overlaps(g.stats, best.stats)


def standings(a: Analysis) -> list[Standing]:
    """One per hidden size and precision of the run (the sizes in order; precisions fp32, tf32, bf16), and per batch
    size where cells of other batch sizes than the run's are present."""
    present = {g.precision for g in a.groups.values()}
    precisions = [p for p in PRECISIONS if p in present] + sorted(present - set(PRECISIONS)) or ["fp32"]
    apart = sorted({g.batch for g in a.groups.values() if g.batch is not None})

    def has(h: int, p: str, b: int | None) -> bool:  # another batch size: only where a cell of it was timed
        return any(g.precision == p and g.hidden == h and g.batch == b and (b is None or g.stats)
                   for g in a.groups.values())

    return [Standing(h, p, ranked(a, h, p, b), b) for h in a.hidden for p in precisions for b in [None, *apart]
            if has(h, p, b) or (b is None and not apart and len(precisions) == 1)]


def _with_ratio(s: Standing, g: Group) -> str:
    return f"{g.row.label} {fmt_x(s.ratio(g))}"


def answer_line(s: Standing, name_precision: bool) -> str:
    """`hidden-512: fastest torch (12.3 ms); tied with jax 1.02× (...); then keras (jax) 1.80× ≈ mxnet 1.85×`."""
    where = (f"hidden-{s.hidden}" + (f", {s.precision}" if name_precision else "")
             + (f", batch {s.batch}" if s.batch is not None else ""))
    if not s.ranked:
        return f"{where}: no framework finished ok"
    best = s.ranked[0]
    parts = [f"{where}: fastest {best.row.label} ({fmt_ms(best.median)} ms)"]
    if len(s.ranked) == 1:
        return parts[0] + ", the only one timed"
    tied = [g for g in s.ranked[1:] if s.tied(g)]
    rest = [g for g in s.ranked[1:] if not s.tied(g)]
    if tied:
        parts.append(f"tied with {', '.join(_with_ratio(s, g) for g in tied)} "
                     "(this run cannot rank them)")
    if rest:
        chain = _with_ratio(s, rest[0])
        for prev, g in itertools.pairwise(rest):
            close = prev.stats is not None and g.stats is not None and overlaps(prev.stats, g.stats)
            chain += (" ≈ " if close else ", ") + _with_ratio(s, g)
        parts.append(f"then {chain}")
    return "; ".join(parts)


def answer_lines(a: Analysis) -> list[str]:
    """The report's first answer: one line per hidden size (and precision, when the run has several)."""
    found = standings(a)
    several = len({s.precision for s in found}) > 1
    return [answer_line(s, several) for s in found]


ANSWER_INTRO = ("Per hidden size, among the cells timed ok: the fastest by median time per batch, and every other "
                "framework as a multiple of its time (1.50× = takes 1.5 times as long). Tied, and ≈ between two "
                "neighbours: this run cannot rank them (with 2+ repeats each, the 95% interval of their time ratio "
                "over fresh processes contains 1; with one process, their 95% intervals of the median overlap). "
                "Cells of different precisions are never ranked against each other.")


def _mark(a: Analysis, rows: list[Row | Missing2016]) -> dict[tuple[int, int], str]:
    """(row, column) of the fastest cell of each hidden column (per precision) and of the cells tied with it."""
    index = {id(item): i for i, item in enumerate(rows)}
    marks: dict[tuple[int, int], str] = {}
    for s in standings(a):
        column = 1 + a.hidden.index(s.hidden)
        for g in s.ranked:
            kind = FASTEST if g is s.ranked[0] else TIED if s.tied(g) else None
            if kind and id(g.row) in index:
                marks[(index[id(g.row)], column)] = kind
    return marks


def relative_table(a: Analysis) -> Table:
    """The original table's rows and columns, each timed cell as a multiple of its column's fastest."""
    by_key = {(s.hidden, s.precision, s.batch): s for s in standings(a)}
    rows = []
    for row in a.rows:
        cells = []
        for h in a.hidden:
            g = a.group(row, h)
            s = by_key.get((h, row.key[3], row.key[4]))
            cells.append(fmt_x(s.ratio(g)) if g is not None and g.stats and s and s.ranked else cell_text(g))
        rows.append([row.label, *cells])
    return Table("relative", "Relative to the fastest of each column",
                 ["framework", *(f"hidden-{h}" for h in a.hidden)], rows,
                 "Median time per batch as a multiple of the fastest cell of the same hidden size and precision "
                 "(1.00× = the fastest; highlighted: the fastest, and lighter, the cells tied with it).",
                 marks=_mark(a, list(a.rows)))


def original_table(a: Analysis) -> Table:
    headers = ["framework", *(f"hidden-{h}" for h in a.hidden), "note"]
    rows, notes = [], []
    items = a.table_rows()
    for item in items:
        if isinstance(item, Missing2016):
            # Not in this run's plan: said once, not as a "not run" in every column.
            cells = [NOT_RUN] * len(a.hidden) if item.in_plan else [NOT_IN_RUN, *([""] * (len(a.hidden) - 1))]
            rows.append([item.label_2016, *cells, item.why])
            continue
        row: Row = item
        cont = f"continues 2016 '{a.baseline.labels[row.original_row]}'" if row.original_row else "not in 2016"
        rows.append([row.label, *(cell_text(a.group(row, h)) for h in a.hidden), cont])
    if any(g.failures and g.stats for g in a.groups.values()):
        notes.append("† some repeats of this cell failed; the number rests on the ok ones (see Failures).")
    if line := processes_line(a):
        notes.append(line)
    return Table("original", "Milliseconds per batch, in the 2016 table's shape", headers, rows,
                 "Median time of one forward + backward + SGD update on a batch; failed cells show the 2016 "
                 "table's words. Every row of the 2016 table is listed, in its order.", notes, _mark(a, items))


def baseline_table(a: Analysis) -> Table:
    rows = []
    for row in a.rows:
        if row.original_row is None:
            continue
        for h in a.hidden:
            g = a.group(row, h)
            b = a.baseline.cell(row.original_row, h)
            if b is None or (g is not None and g.baseline is None):  # no 2016 cell, or not the 2016 workload
                continue
            then = fmt_ms(b.ms) if b.ms is not None else (b.word or "")
            if b.ms_alt is not None:
                then += f" (or {fmt_ms(b.ms_alt)}, see caveats)"
            speed = fmt_x(g.speedup) if g else ""
            if g and g.speedup_alt is not None:
                speed += f" (vs {fmt_ms(b.ms_alt)}: {fmt_x(g.speedup_alt)})"
            rows.append([a.baseline.labels[row.original_row], row.label, str(h), then, cell_text(g), speed])
    meta = a.baseline.meta
    intro = (f"2016: {meta.get('gpu', 'GTX 980')}, {meta.get('method', '')} Speed-up = 2016 ms / our median ms "
             "(above 1: faster now), shown only for cells run with the 2016 workload on a GPU "
             f"({', '.join(f'{k} {v}' for k, v in ORIGINAL_PARAMS.items())}). "
             "Read the caveats below before drawing conclusions.")
    return Table("baseline", "Against the 2016 table", ["2016 row", "ours", "hidden", "2016 ms", "ours ms", "speed-up"],
                 rows, intro)


def _equivalence_text(g: Group) -> str:
    e = g.equivalence
    if e is None:
        return ""
    if e.verdict == "n/a":
        return f"n/a ({e.why})"
    ref = "reference" if e.reference and e.reference.source == g.records[0].cell_id else ""
    if ref:
        return ref
    # A mismatch names what differs: the parameter tensors whose update is wrong, else the losses.
    return f"{e.symbol} {', '.join(e.mismatched)}" if e.mismatched else f"{e.symbol} {e.rel_dev:.1e}"


def _params_text(g: Group) -> str:
    e = g.equivalence
    if e is None or e.params_ok is None:
        return ""
    return "✓" if e.params_ok else f"✗ {e.param_count} ≠ {e.param_count_expected}"


def detail_table(a: Analysis) -> Table:
    from orchestrator.report.startup import to_first_step_text  # it builds on this module's Table

    headers = ["framework", "precision", "hidden", "status", "repeats", "batches", "median ms", "95% CI ms", "CV",
               "outliers", "steady ms", "TFLOP/s", "% of peak", "equivalence", "params", "to first step s"]
    rows = []
    for row in a.rows:
        for h in a.hidden:
            g = a.group(row, h)
            if g is None:
                continue
            s = g.stats
            rows.append([
                row.label, g.precision, str(h), g.status.value,
                f"{len(g.records) - len(g.failures)}/{len(g.records)} ok",
                str(s.n) if s else "", fmt_ms(s.median) if s else "",
                f"{fmt_ms(s.ci_low)}–{fmt_ms(s.ci_high)}" if s else "",
                f"{100 * s.cv:.1f}%" if s and s.cv is not None else "",
                str(s.outliers) if s else "",
                fmt_ms(g.throughput_ms) if g.throughput_ms is not None else "",
                f"{g.tflops:.3g}" if g.tflops is not None else "",
                fmt_pct(g.pct_peak), _equivalence_text(g), _params_text(g), to_first_step_text(g),
            ])
    intro = (
        "Repeats: fresh processes (containers), the unit of evidence. Median ms: with 2+ ok repeats the geometric "
        "mean of their medians, 95% CI Student's t over them (log scale); with one, that process's median and the "
        "distribution-free order-statistic interval of its batches. Batches, CV (standard deviation / mean) and "
        f"outliers (|modified z| > {MODIFIED_Z_LIMIT}, MAD based) describe the timed batches of the ok repeats. "
        "Steady ms: the same timed steps queued back to back with one sync at the end, per batch (median ms syncs "
        "after every step). TFLOP/s: analytic FLOPs of one training step / median time. % of peak: against the "
        "GPU's datasheet dense peak of the cell's own precision (fp32, TF32 or bf16; blank: CPU cell, or a GPU or "
        "precision not in the peak table). Equivalence: the larger relative deviation of the first two losses "
        "from the float32 NumPy reference (✓ within the precision's tolerance: "
        + ", ".join(f"{k} {v:g}" for k, v in TOLERANCES.items()) + "). To first step s: from the process's start "
        "to the end of its first training step (imports, build, compilation, the first call), median of the ok "
        "repeats; not in any timing (see Start-up and first step). Rows of different precisions are never ranked "
        "against each other."
    )
    return Table("detail", "Every cell in detail", headers, rows, intro)


def failure_table(a: Analysis) -> Table:
    rows = []
    for row in a.rows:
        for h in a.hidden:
            g = a.group(row, h)
            for rec in g.failures if g else []:
                rows.append([row.label, str(h), str(rec.repeat), rec.status.word or rec.status.value,
                             one_line(rec.reason or rec.log_tail or "no reason recorded")])
    return Table("failures", "Failures", ["framework", "hidden", "repeat", "status", "reason"], rows,
                 "Why each failed cell failed (the workload's message, or the orchestrator's evidence).")


def peak_table(a: Analysis) -> Table:
    seen: dict[str, Any] = {}
    for g in a.groups.values():
        if g.gpu and g.gpu not in seen:
            seen[g.gpu] = g.peak
    rows = [[name, p.gpu if p else "not in the peak table: no % of peak", f"{p.fp32_tflops:g}" if p else "",
             f"{p.tf32_tflops:g}" if p and p.tf32_tflops else "", f"{p.bf16_tflops:g}" if p and p.bf16_tflops else "",
             p.clock if p else "", p.source if p else ""]
            for name, p in seen.items()]
    return Table("peaks", "Peak throughput used for % of peak",
                 ["GPU reported", "matched", "fp32 TFLOP/s", "TF32 TFLOP/s", "bf16 TFLOP/s", "clock", "source"], rows,
                 "Dense datasheet peaks (no 2:4 sparsity) at the boost clock: fp32 on the CUDA cores, TF32 and bf16 "
                 "(FP32 accumulate) on the tensor cores. A cell's % of peak uses its own precision's peak.")


def flat(value: Any, prefix: str = "", depth: int = 0) -> str:
    """'a 1, b.c 2' for nested mappings: one readable line per manifest entry (a few levels deep at most)."""
    if not isinstance(value, dict) or depth >= 4:
        return f"{prefix} {str(value)[:400]}".strip()
    parts = [flat(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
             for k, v in value.items() if v not in (None, "", {}, [])]
    return ", ".join(parts)


def manifest_table(manifest: dict[str, Any]) -> Table:
    rows: list[list[str]] = []

    def add(name: str, value: Any) -> None:
        if value not in (None, "", [], {}):
            rows.append([name, one_line(str(value), 400)])

    add("run id", manifest.get("run_id"))
    add("state", manifest.get("state"))
    add("started / finished", f"{manifest.get('started_at')} / {manifest.get('finished_at')}")
    git = manifest.get("git") or {}
    add("commit", f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}")
    add("tool version", manifest.get("tool_version"))
    add("command", " ".join(str(x) for x in manifest.get("command") or []))
    add("host", flat(manifest.get("host") or {}))
    add("runner", flat(manifest.get("runner") or {}))
    add("NVML", manifest.get("nvml"))
    for g in manifest.get("gpus") or []:
        if isinstance(g, dict):
            add(f"GPU {g.get('index', '')}", flat({k: v for k, v in g.items() if k != "index"}))
    for key, env in (manifest.get("environments") or {}).items():
        add(f"environment {key}", flat(env))
    matrix = manifest.get("matrix") or {}
    add("matrix", ", ".join(f"{k}={v}" for k, v in matrix.items() if k != "frameworks" and v is not None))
    return Table("manifest", "Where and how this ran", ["what", "value"], rows)


def versions_table(a: Analysis) -> Table:
    rows = []
    for row in a.rows:
        rec = next((r for h in a.hidden if (g := a.group(row, h)) for r in g.records if r.workload), None)
        if rec is None:
            continue
        w = rec.workload
        versions = ", ".join(f"{k} {v}" for k, v in (w.versions if w else {}).items() if v)
        image = rec.image or {}
        ident = image.get("tag") or image.get("image") or image.get("python") or ""
        if image.get("id"):
            ident = f"{ident} ({str(image['id'])[:19]})"
        rows.append([row.label, versions, (w.device.name if w else None) or rec.device, one_line(ident, 200)])
    return Table("versions", "Versions and images", ["framework", "versions", "device", "image / interpreter"], rows)


def all_tables(a: Analysis) -> list[Table]:
    from orchestrator.report.capacity_table import capacity_table  # these build on this module's Table
    from orchestrator.report.impls_table import impls_table
    from orchestrator.report.machine import machine_table
    from orchestrator.report.startup import startup_table

    return [original_table(a), relative_table(a), baseline_table(a), detail_table(a), failure_table(a), peak_table(a),
            machine_table(a), versions_table(a), manifest_table(a.run.manifest),
            capacity_table(a), impls_table(a), startup_table(a)]
