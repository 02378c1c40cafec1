"""The report of one run: report.md (+ PNG plots beside it), report.html (self-contained), results.csv, report.json.

    from orchestrator.report import render
    render(Path("runs/2026-11-24"))   # writes into the run directory; returns the files written
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["Analysis", "load_run", "render"]  # (`analyze` is the submodule; its function: report.analyze.analyze)
# The renderers pull in matplotlib and pandas (seconds); importing one light submodule (e.g. report.baseline, which
# the planner uses for the 2016 row order) must not, so they are imported where they are used.
_LAZY = {"Analysis": "analyze", "load_run": "load"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"orchestrator.report.{_LAZY[name]}"), name)
    raise AttributeError(name)


def render(run_dir: Path, out_dir: Path | None = None) -> list[Path]:
    """Render every report file of `run_dir` into `out_dir` (default: the run directory itself)."""
    from orchestrator.report.analyze import analyze
    from orchestrator.report.export import report_doc, results_frame
    from orchestrator.report.html import render_html
    from orchestrator.report.load import load_run
    from orchestrator.report.markdown import render_markdown
    from orchestrator.report.plots import render_plots
    from orchestrator.report.tables import all_tables
    from orchestrator.store import write_atomic
    from orchestrator.text import csv_cell

    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir
    out.mkdir(parents=True, exist_ok=True)
    analysis = analyze(load_run(run_dir))
    title = f"LSTM benchmark report: {analysis.run.manifest.get('run_id') or run_dir.name}"
    tables = all_tables(analysis)
    plots, skipped = render_plots(analysis, out)
    written = [p for p, _ in plots]

    md = render_markdown(analysis, title, tables, [(p.name, c) for p, c in plots], skipped)
    write_atomic(out / "report.md", md)
    write_atomic(out / "report.html", render_html(analysis, title, tables, plots, skipped))
    write_atomic(out / "results.csv", results_frame(analysis).map(csv_cell).to_csv(index=False))
    original = tables[0]
    doc = report_doc(analysis, original.rows, original.headers)
    write_atomic(out / "report.json", json.dumps(doc, indent=1, allow_nan=False, default=str) + "\n")
    return [out / "report.md", out / "report.html", out / "results.csv", out / "report.json", *written]
