"""The report's figures (matplotlib, Agg backend, PNG): time vs hidden size, speed-up vs 2016, % of peak."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")  # headless: no display on the hosts that render reports
import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.transforms import blended_transform_factory

from orchestrator.report.analyze import Analysis, Group, Row

DPI = 110
SIZE = (10.0, 5.2)
MARKERS = "osD^v<>ph*P"  # no "X": that marks failed cells


def row_colors(n: int) -> list[Any]:
    """n distinct colours, one per row: tab10, then tab20 (pairs of shades), then evenly spaced on 'turbo'.

    Cycling "C0".."C9" would give the 11th row the first row's colour.
    """
    if n <= 10:
        return list(matplotlib.colormaps["tab10"].colors[:n])
    if n <= 20:
        return list(matplotlib.colormaps["tab20"].colors[:n])
    return [tuple(c) for c in matplotlib.colormaps["turbo"](np.linspace(0.05, 0.95, n))]


def _ok_series(a: Analysis, row: Row, value: str) -> tuple[list[int], list[float], list[Group]]:
    xs, ys, gs = [], [], []
    for h in a.hidden:
        g = a.group(row, h)
        v = getattr(g, value) if g else None
        if g is not None and v is not None:
            xs.append(h)
            ys.append(v)
            gs.append(g)
    return xs, ys, gs


def _log2_ticks(ax: plt.Axes, hidden: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(hidden)
    ax.set_xticklabels([str(h) for h in hidden])
    ax.minorticks_off()


def _legend(ax: plt.Axes) -> None:
    # Outside the axes: with a dozen rows an inside legend would hide the lines it names.
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI, format="png", metadata={"Software": None})
    plt.close(fig)
    return path


def time_plot(a: Analysis, path: Path) -> Path | None:
    if not a.groups:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    any_ok = False
    failed_y = 0.97
    colors = row_colors(len(a.rows))
    for i, row in enumerate(a.rows):
        xs, ys, gs = _ok_series(a, row, "median")
        color = colors[i]
        if xs:
            any_ok = True
            lo = [g.median - g.stats.ci_low for g in gs if g.stats and g.median is not None]
            hi = [g.stats.ci_high - g.median for g in gs if g.stats and g.median is not None]
            ax.errorbar(xs, ys, yerr=[lo, hi], marker=MARKERS[i % len(MARKERS)], color=color, capsize=3,
                        label=row.label)
        failed = [g for h in a.hidden if (g := a.group(row, h)) is not None and g.stats is None]
        if failed:
            # A failed cell has no time: draw it on a band at the top, labelled with the 2016 table's word.
            trans = blended_transform_factory(ax.transData, ax.transAxes)
            for k, g in enumerate(failed):
                ax.plot([g.hidden], [failed_y], marker="X", color=color, markersize=9, transform=trans,
                        clip_on=False, linestyle="none", label=row.label if not xs and k == 0 else None)
                last = g.hidden == max(a.hidden)  # the right-most label goes left of its marker, inside the axes
                ax.annotate(g.word, (g.hidden, failed_y), xycoords=trans, xytext=(-8 if last else 8, -3),
                            textcoords="offset points", fontsize=8, color=color, ha="right" if last else "left")
            failed_y -= 0.05
    _log2_ticks(ax, a.hidden)
    ax.set_xlim(min(a.hidden) / 1.25, max(a.hidden) * 1.25)
    if any_ok:
        ax.set_yscale("log")
    ax.set_xlabel("hidden size (= embedding size)")
    ax.set_ylabel("ms per batch (median, 95% CI)")
    ax.set_title("Time per training step (log-log); X = failed cell")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def speedup_plot(a: Analysis, path: Path) -> Path | None:
    series = [(i, row, *_ok_series(a, row, "speedup")) for i, row in enumerate(a.rows) if row.original_row]
    series = [s for s in series if s[2]]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    colors = row_colors(len(a.rows))  # indexed by the row's place in the table, as in the other figures
    for i, row, xs, ys, _ in series:
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=colors[i],
                label=f"{row.label} vs 2016 {a.baseline.labels[row.original_row or '']}")
    ax.axhline(1.0, color="grey", linewidth=1, linestyle="--")
    _log2_ticks(ax, a.hidden)
    ax.set_yscale("log")
    ax.set_xlabel("hidden size")
    ax.set_ylabel("speed-up (2016 ms / our ms)")
    ax.set_title("Speed-up over the 2016 GTX 980 numbers (above 1: faster now)")
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def peak_plot(a: Analysis, path: Path) -> Path | None:
    series = [(i, row, *_ok_series(a, row, "pct_fp32")) for i, row in enumerate(a.rows)]
    series = [s for s in series if s[2]]
    if not series:
        return None
    fig, ax = plt.subplots(figsize=SIZE)
    colors = row_colors(len(a.rows))
    for i, row, xs, ys, gs in series:
        color = colors[i]
        ax.plot(xs, ys, marker=MARKERS[i % len(MARKERS)], color=color, label=f"{row.label} (% fp32)")
        tf = [(g.hidden, g.pct_tf32) for g in gs if g.pct_tf32 is not None]
        if tf:
            ax.plot(*zip(*tf, strict=True), linestyle=":", color=color, label=f"{row.label} (% TF32)")
    _log2_ticks(ax, a.hidden)
    ax.set_xlabel("hidden size")
    ax.set_ylabel("% of datasheet peak")
    ax.set_title("Achieved TFLOP/s as % of the GPU's dense peak")
    ax.grid(True, alpha=0.3)
    _legend(ax)
    return _save(fig, path)


PLOTS = (
    ("ms_vs_hidden.png", time_plot, "Milliseconds per batch vs hidden size (log-log), 95% CI bars; failed cells "
                                    "as X markers labelled with their status"),
    ("speedup_vs_2016.png", speedup_plot, "Speed-up over the 2016 table (2016 ms / our ms)"),
    ("pct_of_peak.png", peak_plot, "Achieved TFLOP/s as % of the GPU's dense fp32 (solid) and TF32 (dotted) peak"),
)
SKIPPED = {
    "speedup_vs_2016.png": "no speed-up plot: no ok cell of a 2016 row at a 2016 hidden size",
    "pct_of_peak.png": "no % of peak plot: no ok cell ran on a GPU in the peak table",
}


def render_plots(a: Analysis, out_dir: Path) -> tuple[list[tuple[Path, str]], list[str]]:
    made, skipped = [], []
    for name, fn, caption in PLOTS:
        path = fn(a, out_dir / name)
        if path is not None:
            made.append((path, caption))
        elif name in SKIPPED:
            skipped.append(SKIPPED[name])
            (out_dir / name).unlink(missing_ok=True)  # a stale figure of an earlier render must not linger
    return made, skipped
