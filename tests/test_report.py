"""The rendered report of real runs (numpy-reference on this CPU): files, the 2016-shaped table, repeats,
failures, the baseline, % of peak and the warnings."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from report_helpers import as_framework, derived_run, failed, make_real_run

from orchestrator.report import render
from orchestrator.report.baseline import load_baseline
from orchestrator.report.load import load_run
from orchestrator.report.tables import fmt_ms
from orchestrator.results import CellRecord, Status

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


def md_section_table(md: str, heading: str) -> list[list[str]]:
    """Rows (header included) of the first Markdown table after `## heading`."""
    lines = md.split(f"## {heading}", 1)[1].splitlines()
    table = [ln for ln in lines[: next(i for i, ln in enumerate(lines) if ln.startswith("## ") and i > 0)]
             if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table if not ln.startswith("|---")]


def pooled_median(records: list, hidden: int) -> float:
    times = [t for r in records if r.hidden == hidden and r.status is Status.OK for t in r.workload.times_ms]
    return float(np.median(times))


def over_processes(records: list, hidden: int) -> float:
    """A cell's time over its repeats: the geometric mean of each ok repeat's (fresh process's) median."""
    medians = [float(np.median(r.workload.times_ms)) for r in records if r.hidden == hidden and r.status is Status.OK]
    return math.exp(sum(math.log(m) for m in medians) / len(medians))


def test_render_writes_every_file_into_the_run_dir(real_run: Path, tmp_path: Path) -> None:
    run = derived_run(real_run, tmp_path / "run")
    written = render(run)
    assert {p.name for p in written} >= {"report.md", "report.html", "results.csv", "report.json", "ms_vs_hidden.png"}
    for p in written:
        assert p.parent == run and p.stat().st_size > 0
    md = (run / "report.md").read_text()
    assert "](ms_vs_hidden.png)" in md  # the PNG is referenced next to report.md


def test_original_table_has_every_2016_row_in_order_then_ours(real_run: Path, tmp_path: Path) -> None:
    render(real_run, tmp_path)
    rows = md_section_table((tmp_path / "report.md").read_text(), "Milliseconds per batch")
    header, body = rows[0], rows[1:]
    records = load_run(real_run).records
    hidden = sorted({r.hidden for r in records})
    assert header == ["framework", *(f"hidden-{h}" for h in hidden), "note"]
    base = load_baseline()
    assert [r[0] for r in body[:6]] == [base.labels[name] for name in base.rows]
    for row in body[:6]:  # this run's plan is numpy-reference alone: each 2016 row says so once, and why
        assert row[1:-1] == ["not in this run", *[""] * (len(hidden) - 1)]
        assert row[-1].startswith("not in this run's plan (images/"), row[-1]
    ours = body[6]
    assert ours[0] == records[0].label
    assert ours[1:-1] == [fmt_ms(pooled_median(list(records), h)) for h in hidden]


def test_results_csv_and_report_json_hold_the_real_numbers(real_run: Path, tmp_path: Path) -> None:
    render(real_run, tmp_path)
    records = load_run(real_run).records
    frame = pd.read_csv(tmp_path / "results.csv")
    assert list(frame["cell_id"]) == [r.cell_id for r in records]
    for rec, (_, row) in zip(records, frame.iterrows(), strict=True):
        assert row["median_ms"] == pytest.approx(float(np.median(rec.workload.times_ms)))
        assert row["n_times"] == len(rec.workload.times_ms)
        assert row["status"] == "ok" and row["equivalence"] == "ok"
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["run_id"] == records[0].run_id
    assert [c["cells"] for c in doc["cells"]] == [[r.cell_id] for r in records]
    assert [m["row"] for m in doc["not_run_2016"]] == list(load_baseline().rows)


def test_repeats_are_the_samples(repeated_run: Path, tmp_path: Path) -> None:
    render(repeated_run, tmp_path)
    records = load_run(repeated_run).records
    assert sorted(r.repeat for r in records) == [0, 1, 2]
    (cell,) = json.loads((tmp_path / "report.json").read_text())["cells"]
    assert cell["repeats"] == 3 and cell["repeats_ok"] == 3
    assert cell["stats_ms"]["n"] == sum(len(r.workload.times_ms) for r in records)
    assert cell["stats_ms"]["median"] == pytest.approx(over_processes(list(records), records[0].hidden))
    assert cell["stats_ms"]["repeats"] == 3 and cell["stats_ms"]["basis"] == "processes"
    assert cell["repeat_medians_ms"] == pytest.approx([float(np.median(r.workload.times_ms)) for r in records])


def test_a_failed_repeat_is_left_out_of_the_pool_and_said(repeated_run: Path, tmp_path: Path) -> None:
    records = load_run(repeated_run).records
    last = records[-1]
    run = derived_run(repeated_run, tmp_path / "run",
                      replace={last.cell_id: failed(last, Status.OOM, "RuntimeError: out of memory")})
    render(run)
    (cell,) = json.loads((run / "report.json").read_text())["cells"]
    assert cell["repeats_ok"] == 2 and cell["failures"][0]["status"] == "oom"
    assert cell["stats_ms"]["median"] == pytest.approx(over_processes(list(records[:-1]), last.hidden))
    assert cell["stats_ms"]["repeats"] == 2
    md = (run / "report.md").read_text()
    assert "pooled over the ok repeats only (repeat 2: out of mem)" in md
    table = md_section_table(md, "Milliseconds per batch")
    assert table[-1][1].endswith("†")


def test_failed_cells_show_the_2016_word_and_their_reason(real_run: Path, tmp_path: Path) -> None:
    rec = load_run(real_run).records[0]
    oom = failed(rec, Status.OOM, "OutOfMemoryError: CUDA out of memory | tried 2 GiB", hidden=32,
                 cell_id=rec.cell_id.replace(f"h{rec.hidden}", "h32"))
    run = derived_run(real_run, tmp_path / "run", extra=[oom])
    render(run)
    md = (run / "report.md").read_text()
    table = md_section_table(md, "Milliseconds per batch")
    assert table[0][-2] == "hidden-32" and table[-1][-2] == "out of mem"
    failures = md_section_table(md, "Failures")
    assert failures[1][:4] == [rec.label, "32", "0", "out of mem"]
    assert "CUDA out of memory \\| tried 2 GiB" in failures[1][4]  # the pipe cannot break the table


def as_gpu_cell(rec: CellRecord) -> CellRecord:
    """The same real measurement filed as a GPU cell (the baseline needs the 2016 workload on a GPU)."""
    assert rec.workload is not None
    workload = rec.workload.model_copy(update={"params": {**rec.workload.params, "device": "gpu"}})
    params = {**(rec.params or {}), "device": "gpu"}
    return rec.model_copy(update={"device": "gpu", "workload": workload, "params": params})


def test_a_2016_row_gets_the_baseline_and_speed_up(run_h128: Path, tmp_path: Path) -> None:
    (rec,) = load_run(run_h128).records
    theano = as_framework(as_gpu_cell(rec), "theano", "theano")
    run = derived_run(run_h128, tmp_path / "run", replace={rec.cell_id: theano})
    written = render(run)
    assert "speedup_vs_2016.png" in {p.name for p in written}
    (cell,) = json.loads((run / "report.json").read_text())["cells"]
    median = float(np.median(rec.workload.times_ms))
    then = load_baseline().cell("theano", 128)
    assert cell["original_row"] == "theano" and cell["baseline_2016"]["ms"] == then.ms
    assert cell["speedup_vs_2016"] == pytest.approx(then.ms / median)
    md = (run / "report.md").read_text()
    original = md_section_table(md, "Milliseconds per batch")
    assert original[1][:2] == ["theano", fmt_ms(median)]  # our row sits in the Theano row's place
    against = md_section_table(md, "Against the 2016 table")
    assert against[1][:5] == ["Theano", "theano", "128", fmt_ms(then.ms), fmt_ms(median)]


def test_no_speed_up_against_2016_for_another_workload(run_h128: Path, real_run: Path, tmp_path: Path) -> None:
    """A CPU cell, or a GPU cell at smoke-test sizes, is not the 2016 workload: no baseline, no speed-up."""
    (rec,) = load_run(run_h128).records
    tiny = load_run(real_run).records[0]
    for i, other in enumerate([as_framework(rec, "theano", "theano"), as_framework(as_gpu_cell(tiny), "theano",
                                                                                  "theano", run_id=rec.run_id)]):
        run = derived_run(run_h128, tmp_path / f"run{i}", replace={rec.cell_id: other})
        written = render(run)
        assert "speedup_vs_2016.png" not in {p.name for p in written}
        (cell,) = json.loads((run / "report.json").read_text())["cells"]
        assert cell["speedup_vs_2016"] is None


@pytest.mark.parametrize(("gpu", "known"), [("NVIDIA H100 80GB HBM3", True), ("Mystery Accelerator 9000", False)])
def test_percent_of_peak_only_for_known_gpus(real_run: Path, tmp_path: Path, gpu: str, known: bool) -> None:
    records = load_run(real_run).records
    on_gpu = {r.cell_id: r.model_copy(update={"device": "gpu", "slot": "0"}) for r in records}
    run = derived_run(real_run, tmp_path / "run", replace=on_gpu,
                      manifest={"gpus": [{"index": "0", "name": gpu}]})
    written = {p.name for p in render(run)}
    cells = json.loads((run / "report.json").read_text())["cells"]
    for cell in cells:
        assert cell["gpu"] == gpu
        if known:
            assert cell["pct_of_peak_fp32"] == pytest.approx(100 * cell["tflops"] / cell["peak"]["fp32_tflops"])
            assert cell["pct_of_peak_tf32"] == pytest.approx(100 * cell["tflops"] / cell["peak"]["tf32_tflops"])
        else:
            assert cell["peak"] is None and cell["pct_of_peak_fp32"] is None
    assert ("pct_of_peak.png" in written) is known
    assert ("not in the peak table: no % of peak" in (run / "report.md").read_text()) is not known


def test_the_answer_comes_first_and_a_tie_is_said_in_its_size_line(real_run: Path, tmp_path: Path) -> None:
    render(real_run, tmp_path / "alone")
    alone = (tmp_path / "alone" / "report.md").read_text()
    assert "; tied with" not in alone and alone.count(", the only one timed") == len({r.hidden for r in
                                                                                   load_run(real_run).records})
    records = load_run(real_run).records
    # The same real measurements filed under a second framework: identical intervals, a tie at every size.
    twins = [as_framework(r, "numpy-twin", "numpy twin") for r in records]
    run = derived_run(real_run, tmp_path / "run", extra=twins)
    render(run)
    md = (run / "report.md").read_text()
    answer = md.split("## Fastest per hidden size", 1)[1].split("\n## ", 1)[0]
    assert md.index("## Fastest per hidden size") < md.index("## Milliseconds per batch")  # before every table
    lines = [ln for ln in answer.splitlines() if ln.startswith("- ")]
    assert len(lines) == len(records)  # one line per size, no pairwise warnings left
    for rec, line in zip(sorted(records, key=lambda r: r.hidden), lines, strict=True):
        assert line.startswith(f"- hidden-{rec.hidden}: fastest "), line
        assert "tied with" in line and "1.00×" in line and "cannot rank them" in line, line
    assert md.count("cannot rank them") == len(records) + 1  # the lines and the intro; no pairwise warnings


def test_the_answer_ranks_by_median_and_gives_the_others_as_multiples(real_run: Path, tmp_path: Path) -> None:
    records = load_run(real_run).records
    # A slower twin: every real batch time scaled by 100 (an interval far from the original one).
    slow = [as_framework(r, "numpy-slow", "numpy slow", workload=r.workload.model_copy(
        update={"times_ms": [100 * t for t in r.workload.times_ms]})) for r in records if r.workload]
    run = derived_run(real_run, tmp_path / "run", extra=slow)
    render(run)
    md = (run / "report.md").read_text()
    for rec in records:
        line = next(ln for ln in md.splitlines() if ln.startswith(f"- hidden-{rec.hidden}: "))
        assert f"fastest {rec.label} (" in line and "then numpy slow 100.00×" in line and "tied" not in line, line
    relative = md_section_table(md, "Relative to the fastest")
    assert relative[1] == [records[0].label, *["1.00×"] * len(records)]
    assert relative[2] == ["numpy slow", *["100.00×"] * len(records)]
    html = (run / "report.html").read_text()
    fastest = re.findall(r'<td class="num fastest">([^<]*)</td>', html)
    # The fastest cell of every column, in the ms table and in the relative view; never the slow twin's.
    assert fastest == [fmt_ms(pooled_median([r], r.hidden)) for r in records] + ["1.00×"] * len(records)
    assert 'class="num tied"' not in html


@pytest.mark.parametrize("state", ["complete", "interrupted"])
def test_a_subset_run_says_not_in_this_run_and_interrupted_only_when_it_was(real_run: Path, tmp_path: Path,
                                                                             state: str) -> None:
    # As `--only numpy-reference,keras:jax` records it: keras planned with its jax variant only.
    matrix = {**json.loads((real_run / "manifest.json").read_text())["matrix"],
              "frameworks": [{"name": "numpy-reference"}, {"name": "keras", "variants": ["jax"]}, "theano"]}
    run = derived_run(real_run, tmp_path / "run", manifest={"matrix": matrix, "state": state})
    render(run)
    rows = {r[0]: r for r in md_section_table((run / "report.md").read_text(), "Milliseconds per batch")[1:]}
    keras_tf = rows["keras (tensorflow)"]
    assert keras_tf[1] == "not in this run" and set(keras_tf[2:-1]) <= {""}, keras_tf  # said once
    assert keras_tf[-1] == "not in this run's plan (images/keras (variant tensorflow) continues it)"
    theano = rows["Theano"]  # planned, no cell recorded
    if state == "interrupted":
        assert theano[1:-1] == ["not run"] * (len(theano) - 2)
        assert "the run was interrupted before a cell of it finished" in theano[-1], theano
    else:
        assert "interrupted" not in theano[-1] and "no cell of it is recorded (run complete)" in theano[-1], theano
    assert all("interrupted" not in r[-1] for name, r in rows.items() if name != "Theano")


def test_ranking_rests_on_repeats(repeated_run: Path, tmp_path: Path) -> None:
    # Twins: the same three real processes filed under a second framework. Their batches alone could look
    # rankable; over processes the ratio's interval contains 1, so the report must not rank them.
    records = load_run(repeated_run).records
    twins = [as_framework(r, "numpy-twin", "numpy twin") for r in records]
    run = derived_run(repeated_run, tmp_path / "twins", extra=twins)
    render(run)
    md = (run / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- hidden-"))
    assert "tied with numpy twin 1.00×" in line and "this run cannot rank them" in line, line
    assert "rest on one fresh process" not in md
    assert "Each number rests on 3 fresh processes (2 cells)" in md


def test_repeats_that_differ_are_ranked(tmp_path: Path) -> None:
    # Real processes of two workloads (sequences 8 and 64 long) in one run: clearly apart over 3 processes each.
    fast = make_real_run(tmp_path / "fast", hidden=(8,), repeats=3, run_id="rank", iters=10)
    slow = make_real_run(tmp_path / "slow", hidden=(8,), repeats=3, run_id="rank", iters=10, seq_len=64)
    longer = [as_framework(r, "numpy-long", "numpy long") for r in load_run(slow).records]
    run = derived_run(fast, tmp_path / "run", extra=longer)
    render(run)
    md = (run / "report.md").read_text()
    line = next(ln for ln in md.splitlines() if ln.startswith("- hidden-8: "))
    assert "then numpy long" in line and "cannot rank" not in line, line
    cells = {c["label"]: c["stats_ms"] for c in json.loads((run / "report.json").read_text())["cells"]}
    assert cells["numpy long"]["ci_low"] > cells["numpy (reference)"]["ci_high"]


def test_one_process_per_cell_is_said(real_run: Path, tmp_path: Path) -> None:
    render(real_run, tmp_path / "alone")  # one framework: nothing is ranked, only the table's note says it
    md = (tmp_path / "alone" / "report.md").read_text()
    assert "rest on one fresh process" not in md and "Each number rests on 1 fresh process (2 cells)" in md
    twins = [as_framework(r, "numpy-twin", "numpy twin") for r in load_run(real_run).records]
    run = derived_run(real_run, tmp_path / "run", extra=twins)
    render(run)
    md = (run / "report.md").read_text()
    assert "4 cell(s) rest on one fresh process" in md and "--set repeats=3 to rank them" in md


def test_the_records_are_the_truth_and_the_index_is_reconciled(real_run: Path, tmp_path: Path) -> None:
    """results.jsonl is derived: a line without a record is dropped with a warning, a record without a line is
    added back, a garbage line is named; the report and the rewritten index hold exactly the records."""
    run = derived_run(real_run, tmp_path / "run")
    jsonl = run / "results.jsonl"
    lines = jsonl.read_text().splitlines()
    ghost = json.loads(lines[0]) | {"cell_id": "ghost-h8-r0"}
    jsonl.write_text("\n".join([*lines[1:], json.dumps(ghost), '{"not": "a record"}']) + "\n")
    render(run)
    warnings = json.loads((run / "report.json").read_text())["warnings"]
    assert any("ghost-h8-r0" in w and "dropped" in w for w in warnings)
    assert any("line 3 is not a cell record" in w for w in warnings)
    records = {r.cell_id for r in load_run(run).records}
    assert records == {p.parent.name for p in (run / "cells").glob("*/record.json")}
    assert set(pd.read_csv(run / "results.csv")["cell_id"]) == records
    indexed = [json.loads(line)["cell_id"] for line in jsonl.read_text().splitlines()]
    assert sorted(indexed) == sorted(records)


def test_not_a_run_dir_is_an_input_error(tmp_path: Path) -> None:
    from orchestrator.errors import InputError

    with pytest.raises(InputError, match="not a run directory"):
        render(tmp_path)


def test_a_run_without_cells_still_lists_the_2016_rows(tmp_path: Path) -> None:
    (tmp_path / "cells").mkdir()
    (tmp_path / "results.jsonl").write_text("")
    render(tmp_path)
    table = md_section_table((tmp_path / "report.md").read_text(), "Milliseconds per batch")
    base = load_baseline()
    assert [r[0] for r in table[1:]] == [base.labels[name] for name in base.rows]
    assert all("not run" in r[1:-1] and "no cell of" in r[-1] for r in table[1:])
    assert list(pd.read_csv(tmp_path / "results.csv").columns)[:2] == ["run_id", "cell_id"]
