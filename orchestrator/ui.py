"""rich live progress for builds and cells, and the summary table at the end."""

from __future__ import annotations

import statistics
import threading
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from orchestrator.pipeline import Events
from orchestrator.plan import Cell
from orchestrator.results import CellRecord, Status
from orchestrator.runners.base import Environment, strip_ansi
from orchestrator.text import visible

HEADLINE_CHARS = 160  # long enough for "exit code 1: ModuleNotFoundError: No module named '...'"
_STYLE = {Status.OK: "green", Status.SKIPPED: "dim", Status.UNSUPPORTED: "yellow", Status.OOM: "yellow"}


def headline(text: str, limit: int) -> str:
    """The first non-blank line, without terminal escapes, cut to `limit` characters (with an ellipsis)."""
    lines = [line.strip() for line in strip_ansi(text).splitlines() if line.strip()]
    first = lines[0] if lines else ""
    return first if len(first) <= limit else first[: limit - 1] + "…"


def _key_name(key: tuple[str, str | None]) -> str:
    return f"{key[0]}:{key[1]}" if key[1] else key[0]


class RichEvents(Events):
    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._builds: dict[tuple[str, str | None], Any] = {}
        self._cells_task: Any = None
        self._running: dict[str, str] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> RichEvents:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def build_started(self, key: tuple[str, str | None]) -> None:
        if key in self._builds:  # prepared again (each round of a capacity search): the same line
            self.progress.update(self._builds[key], description=f"build {_key_name(key)}", total=None, completed=0)
            return
        self._builds[key] = self.progress.add_task(f"build {_key_name(key)}", total=None)

    def build_line(self, key: tuple[str, str | None], line: str) -> None:
        if line.strip():
            short = escape(line.strip()[:70])
            self.progress.update(self._builds[key], description=f"build {_key_name(key)}: {short}")

    def build_finished(self, env: Environment) -> None:
        task = self._builds[env.key]
        if env.error:
            first = escape(headline(env.error, HEADLINE_CHARS))
            text = f"[red]build {_key_name(env.key)} failed[/]: {first}"
        else:
            cached = " (cached)" if env.details.get("cached") else ""
            text = f"[green]ready[/] {_key_name(env.key)}{cached} {env.ref}"
        self.progress.update(task, description=text, total=1, completed=1)

    def cells_planned(self, total: int, already_done: int) -> None:
        if self._cells_task is not None:  # more cells planned (the next round of a capacity search): one bar
            task = next(t for t in self.progress.tasks if t.id == self._cells_task)
            self.progress.update(self._cells_task, total=(task.total or 0) + total,
                                 completed=task.completed + already_done)
            return
        self._cells_task = self.progress.add_task("cells", total=total, completed=already_done)

    def cell_started(self, cell: Cell, slot: str | None) -> None:
        with self._lock:
            self._running[cell.cell_id] = slot or "-"
            self._refresh()

    def cell_finished(self, record: CellRecord) -> None:
        with self._lock:
            self._running.pop(record.cell_id, None)
            self._refresh()
        self.progress.advance(self._cells_task)
        style = _STYLE.get(record.status, "red")
        value = f"{record.median_ms:.1f} ms" if record.median_ms is not None else (record.reason or "")
        value = escape(visible(headline(value, HEADLINE_CHARS)))
        self.console.print(
            f"  [{style}]{record.status.value:>14}[/] {record.cell_id}  {value}", markup=True, highlight=False
        )

    def _refresh(self) -> None:
        running = ", ".join(sorted(self._running)) or "-"
        self.progress.update(self._cells_task, description=f"cells (running: {running[:80]})")


def summary_table(records: list[CellRecord]) -> Table:
    """Rows = frameworks (with the impl when one framework ran several), columns = hidden sizes.

    Repeats show the median of their medians; a cell with no ok repeat shows its first failure word.
    """
    table = Table(title="lstm-bench summary (ms per batch, median)")
    table.add_column("framework")
    hiddens = sorted({r.hidden for r in records})
    for h in hiddens:
        table.add_column(f"hidden-{h}", justify="right")
    impls: dict[str, set[str]] = {}
    for r in records:
        impls.setdefault(r.label, set()).add(r.impl)
    cells: dict[str, dict[int, list[CellRecord]]] = {}
    # A capacity search's probes by batch are cells of their own batch size: a row each, smallest first.
    for r in sorted(records, key=lambda r: r.batch or 0):
        label = f"{r.label} · {r.impl}" if len(impls[r.label]) > 1 else r.label
        label += f" · batch {r.batch}" if r.batch is not None else ""
        cells.setdefault(label, {}).setdefault(r.hidden, []).append(r)
    for label, by_hidden in cells.items():
        row = []
        for h in hiddens:
            group = by_hidden.get(h, [])
            medians = [r.median_ms for r in group if r.median_ms is not None]
            if medians:
                row.append(f"{statistics.median(medians):.1f}")
            elif group:
                row.append(f"[red]{escape(group[0].status.word)}[/]")
            else:
                row.append("")
        table.add_row(escape(visible(label)), *row)
    return table
