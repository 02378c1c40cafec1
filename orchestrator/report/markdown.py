"""report.md: the tables of tables.py, the warnings, the 2016 caveats and the plots as PNG files beside it."""

from __future__ import annotations

from orchestrator.report.analyze import Analysis
from orchestrator.report.tables import ANSWER_INTRO, Table, answer_lines
from orchestrator.text import md_text


def md_escape(text: str) -> str:
    """Safe inside a Markdown table cell (orchestrator/text.py md_text): shown as written, never markup, a link,
    HTML or a control sequence; newlines and pipes neutralised."""
    return md_text(text)


def md_table(t: Table) -> str:
    if not t.rows:
        return ""
    lines = ["| " + " | ".join(md_escape(h) for h in t.headers) + " |",
             "|" + "|".join("---" for _ in t.headers) + "|"]
    lines += ["| " + " | ".join(md_escape(c) for c in row) + " |" for row in t.rows]
    return "\n".join(lines)


def section(t: Table) -> str:
    parts = [f"## {md_escape(t.title)}", ""]
    if t.intro:
        parts += [md_escape(t.intro), ""]
    parts.append(md_table(t) if t.rows else "_Nothing to show._")
    parts += ["", *(f"{md_escape(n)}" for n in t.notes)]
    return "\n".join(parts).rstrip() + "\n"


def render_markdown(a: Analysis, title: str, tables: list[Table], plots: list[tuple[str, str]],
                    skipped: list[str]) -> str:
    by_key = {t.key: t for t in tables}
    out = [f"# {md_escape(title)}", ""]
    out.append(md_escape(summary_line(a)) + "\n")
    out += ["## Fastest per hidden size", "", md_escape(ANSWER_INTRO), ""]
    out += [f"- {md_escape(line)}" for line in answer_lines(a)] + [""]
    if a.warnings:
        out += ["## Warnings", ""] + [f"- {md_escape(w)}" for w in a.warnings] + [""]
    out.append(section(by_key["original"]))
    out.append(section(by_key["relative"]))
    for key in ("baseline",):
        out.append(section(by_key[key]))
    out.append(caveats_md(a))
    out += ["## Plots", ""]
    out += [f"![{md_escape(caption)}]({name})\n" for name, caption in plots]
    out += [f"_{md_escape(note)}._\n" for note in skipped]
    for key in ("capacity", "impls", "detail", "startup", "failures", "peaks", "machine", "versions", "manifest"):
        if by_key[key].rows:
            out.append(section(by_key[key]))
    out.append("FLOP counts, statistics and the baseline's sources are explained in docs/report.md.\n")
    return "\n".join(out)


def summary_line(a: Analysis) -> str:
    m = a.run.manifest
    gpus = sorted({str(g.get("name")) for g in m.get("gpus") or [] if isinstance(g, dict) and g.get("name")})
    device = (m.get("matrix") or {}).get("device") or (a.run.records[0].device if a.run.records else "?")
    where = f"on {', '.join(gpus)}" if gpus and device == "gpu" else f"on {device}"
    runner = (m.get("runner") or {}).get("engine") or "?"
    n_ok = sum(1 for r in a.run.records if r.status.value == "ok")
    return (f"Run {m.get('run_id', a.run.root.name)} {where} via the {runner} runner, "
            f"{m.get('started_at') or 'start unknown'}: {n_ok} of {len(a.run.records)} cells ok.")


def caveats_md(a: Analysis) -> str:
    lines = ["### Caveats of the 2016 numbers", ""]
    for item in a.baseline.meta.get("general", []):
        lines.append(f"- {md_escape(item)}")
    for row in a.baseline.rows:
        for item in a.baseline.caveats.get(row, []):
            lines.append(f"- {md_escape(a.baseline.labels[row])}: {md_escape(item)}")
    lines.append(f"\nSource: {md_escape(a.baseline.meta.get('source', ''))}.\n")
    return "\n".join(lines)
