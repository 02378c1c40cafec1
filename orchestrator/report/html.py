"""report.html: one self-contained file (inline CSS, plots as base64 data URIs, no script, no network)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape

from orchestrator.report.analyze import Analysis
from orchestrator.report.markdown import summary_line
from orchestrator.report.tables import ANSWER_INTRO, NOT_IN_RUN, NOT_RUN, Table, answer_lines
from orchestrator.results import Status
from orchestrator.text import visible

_NUMERIC = re.compile(r"[0-9.,–×%†e+ -]+")
_FAIL_WORDS = {s.word for s in Status if s is not Status.OK} | {s.value for s in Status if s is not Status.OK}


def _environment() -> Environment:
    # autoescape on for every template: failure reasons and labels come from workloads and must stay text;
    # finalize makes control and bidi characters visible in every expression before it is escaped.
    return Environment(loader=PackageLoader("orchestrator.report", "templates"),
                       autoescape=select_autoescape(default=True, default_for_string=True), finalize=visible)


def _classify(table: str, column: int, text: str) -> str:
    if text in (NOT_RUN, NOT_IN_RUN):
        return "notrun"
    if table in {"original", "relative", "detail"} and text in _FAIL_WORDS:
        return "fail"
    return "num" if column > 0 and _NUMERIC.fullmatch(text) and any(c.isdigit() for c in text) else ""


def cell_class(t: Table, row: int, column: int, text: str) -> str:
    """The CSS classes of one table cell: its kind (number, failure, not run) and its mark (fastest, tied)."""
    return " ".join(c for c in (_classify(t.key, column, text), t.marks.get((row, column), "")) if c)


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def render_html(a: Analysis, title: str, tables: list[Table], plots: list[tuple[Path, str]],
                skipped: list[str]) -> str:
    caveats = list(a.baseline.meta.get("general", []))
    caveats += [f"{a.baseline.labels[row]}: {c}" for row in a.baseline.rows for c in a.baseline.caveats.get(row, [])]
    caveats.append(f"Source: {a.baseline.meta.get('source', '')}.")
    template = _environment().get_template("report.html.j2")
    return template.render(
        title=title,
        summary=summary_line(a),
        answer_intro=ANSWER_INTRO,
        answers=answer_lines(a),
        warnings=a.warnings,
        tables={t.key: t for t in tables},
        caveats=caveats,
        plots=[{"caption": caption, "data_uri": data_uri(path)} for path, caption in plots],
        skipped=skipped,
        cell_class=cell_class,
    )
