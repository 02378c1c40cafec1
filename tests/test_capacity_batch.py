"""Capacity search by batch (`capacity --axis batch`): cells with a batch of their own (ids, params, the store's
check), the grid and search, capacity.json, and a real search through the local runner whose report and compare
keep the batch sizes apart. The Docker test (a host-oom boundary on batch) is in tests/test_capacity.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from orchestrator.capacity import BATCH_STEP, load_capacity, next_probe, search
from orchestrator.compare import build
from orchestrator.errors import InputError
from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix
from orchestrator.pipeline import RunSummary
from orchestrator.plan import ID_TAIL, Cell, Plan, expand
from orchestrator.report.analyze import analyze, ranked
from orchestrator.report.load import load_run, workload_times
from orchestrator.report.tables import answer_lines
from orchestrator.results import CellRecord, Status
from orchestrator.store import RunStore
from tests.conftest import ROOT, run_cli
from tests.test_capacity import FakeStore


# ------------------------------------------------------------------------------------------------ cells
def test_a_cell_of_its_own_batch_has_its_own_id_and_params() -> None:
    matrix = parse_matrix(yaml.safe_dump({"frameworks": ["torch"], "batch": 128}), "m.yaml")
    plain = Cell("torch", None, "default", 512, 0)
    assert plain.cell_id == "torch-h512-r0" and plain.params(matrix)["batch"] == 128  # ids of every run so far
    own = Cell("torch", None, "fused", 512, 0, "bf16", batch=256)
    assert own.cell_id == "torch-fused-bf16-h512-b256-r0" and own.params(matrix)["batch"] == 256
    assert list(own.params(matrix)) == list(plain.params(matrix))  # the same keys in the same order
    assert ID_TAIL.search(own.cell_id).groups() == ("512", "256", "0")
    assert ID_TAIL.search(plain.cell_id).groups() == ("512", None, "0")


# ------------------------------------------------------------------------------------------------ search
def test_next_probe_on_the_batch_grid() -> None:
    assert next_probe(None, None, 128, 65536, BATCH_STEP) == 128
    assert next_probe(128, None, 128, 65536, BATCH_STEP) == 256
    assert next_probe(128, 256, 128, 65536, BATCH_STEP) == 192
    assert next_probe(128, 136, 128, 65536, BATCH_STEP) is None
    assert next_probe(None, 128, 128, 65536, BATCH_STEP) == 64
    assert next_probe(None, 8, 128, 65536, BATCH_STEP) is None


def test_search_by_batch_runs_one_series_per_hidden_size() -> None:
    """Frameworks whose largest batch shrinks as the hidden size grows (fits[hidden])."""
    doc = {"frameworks": ["numpy-reference"], "hidden": [64, 512], "batch": 100, "device": "cpu", "repeats": 3}
    plan = expand(parse_matrix(yaml.safe_dump(doc), "m.yaml"), discover(ROOT / "images"))
    fits = {64: 1000, 512: 37}
    store, rounds = FakeStore(), []

    def run_round(p: Plan) -> RunSummary:
        rounds.append(p.cells)
        for c in p.cells:
            assert c.batch is not None and c.repeat == 0 and c.batch % BATCH_STEP == 0
            store.status[c.cell_id] = Status.OK if c.batch <= fits[c.hidden] else Status.HOST_OOM
        return RunSummary()

    found, interrupted = search(plan, store, "run", 65536, run_round, "batch")  # type: ignore[arg-type]
    assert not interrupted
    assert [(s.template.hidden, s.ok, s.failed, s.failed_status) for s in found] == [
        (64, 1000 // 8 * 8, 1000 // 8 * 8 + 8, "host-oom"), (512, 32, 40, "host-oom")]
    assert rounds[0][0].batch == 104  # the matrix's batch, rounded up onto the grid
    assert all(len({c.hidden for c in r}) == len(r) for r in rounds)  # one probe per unfinished series a round
    for s in found:
        assert len(set(s.cells)) == len(s.cells) and all(f"-h{s.template.hidden}-b" in c for c in s.cells)
        assert len(s.cells) <= 2 * 13  # doublings + halvings over the grid of 8 up to 65536 at most
    entry = found[1].entry("numpy (reference)")
    assert entry["axis"] == "batch" and entry["hidden"] == 512


def test_capacity_json_accepts_both_axes_strictly(tmp_path: Path) -> None:
    series = {"framework": "torch", "variant": None, "impl": "fused", "precision": "fp32", "label": "torch",
              "largest_ok": 64, "smallest_failed": 72, "failed_status": "oom", "ended": None, "cells": []}
    doc = {"step": 8, "first_probe": 64, "ceiling": 1024, "complete": True}

    def load(d: dict) -> object:
        (tmp_path / "capacity.json").write_text(json.dumps(d))
        return load_capacity(tmp_path)

    found = load({**doc, "axis": "batch", "series": [{**series, "axis": "batch", "hidden": 512}]})
    assert found.axis == "batch" and found.series[0].hidden == 512  # type: ignore[attr-defined]
    assert load({**doc, "axis": "hidden", "series": [{**series, "axis": "hidden"}]}).axis == "hidden"  # type: ignore
    for bad in ({**doc, "axis": "batch", "series": [{**series, "axis": "batch"}]},  # by batch without its hidden
                {**doc, "axis": "hidden", "series": [{**series, "axis": "hidden", "hidden": 512}]},
                {**doc, "axis": "hidden", "series": [{**series, "axis": "batch", "hidden": 512}]},
                {**doc, "axis": "foo", "series": []}):
        with pytest.raises(InputError, match="is not a readable capacity file"):
            load(bad)


def test_capacity_by_batch_bad_input_is_one_line_and_dry_run_lists_the_series(tmp_path: Path) -> None:
    bad = run_cli(["capacity", "matrix.yaml", "--axis", "foo"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "invalid choice: 'foo'" in bad.stderr
    grid = run_cli(["capacity", "matrix.yaml", "--axis", "batch", "--max", "100"])
    assert grid.returncode == 2 and "--max 100: expected a multiple of 8 in [8, 65536]" in grid.stderr
    high = run_cli(["capacity", "matrix.yaml", "--axis", "batch", "--set", "batch=200", "--max", "128"])
    assert high.returncode == 2 and "first probe (batch 200) is above --max 128" in high.stderr
    dry = run_cli(["capacity", "matrix.yaml", "--axis", "batch", "--only", "numpy-reference", "--hidden", "64,512",
                   "--set", "batch=20", "--dry-run", "--out", str(tmp_path / "x")])
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == ["numpy-reference-loop-h64: first probe batch=24, at most 65536",
                                       "numpy-reference-loop-h512: first probe batch=24, at most 65536"]
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------ a real search
# The local runner has no memory limit: every probe up to --max trains, so the search doubles 8, 16, 32 and stops.
LOCAL = ["--axis", "batch", "--only", "numpy-reference", "--runner", "local", "--python", "current", "--device", "cpu",
         "--hidden", "8", "--set", "batch=8", "--set", "seq_len=4", "--set", "vocab=50", "--set", "iters=6",
         "--set", "warmup=0", "--max", "32", "-q"]


@pytest.fixture(scope="module")
def batch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cap-batch") / "run"
    proc = run_cli(["capacity", "matrix.yaml", *LOCAL, "--out", str(out)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_a_search_by_batch_is_a_run_of_cells_of_their_own_batch(batch_run: Path) -> None:
    found = load_capacity(batch_run)
    assert found is not None and found.complete and found.axis == "batch" and found.step == 8
    (s,) = found.series
    assert (s.hidden, s.largest_ok, s.smallest_failed) == (8, 32, None)
    assert s.cells == ["numpy-reference-loop-h8-b8-r0", "numpy-reference-loop-h8-b16-r0",
                       "numpy-reference-loop-h8-b32-r0"]
    for cell_id, batch in zip(s.cells, (8, 16, 32), strict=True):
        params = json.loads((batch_run / "cells" / cell_id / "params.json").read_text())
        record = json.loads((batch_run / "cells" / cell_id / "record.json").read_text())
        assert params["batch"] == record["batch"] == record["params"]["batch"] == batch
        assert record["workload"]["params"]["batch"] == batch  # what the workload trained with, echoed
    report = (batch_run / "report.md").read_text()
    assert "## Largest batch that fits" in report
    assert "| numpy (reference) | loop | fp32 | 8 | 32 | none up to 32 | 3 |" in report


def test_the_report_keeps_two_batch_sizes_apart(batch_run: Path) -> None:
    a = analyze(load_run(batch_run))
    # b8 is the matrix's batch: the plain row; the others are rows of their own, smallest first
    assert [r.label for r in a.rows] == ["numpy (reference)", "numpy (reference) (batch 16)",
                                         "numpy (reference) (batch 32)"]
    groups = [a.group(r, 8) for r in a.rows]
    assert [g.batch for g in groups] == [None, 16, 32]  # type: ignore[union-attr]
    for g in groups:
        (rec,) = g.records  # type: ignore[union-attr]
        assert g.median == pytest.approx(float(np.median(workload_times(rec))))  # type: ignore[union-attr]
    # never ranked against each other: one standing per batch size, each with its one cell
    assert [len(ranked(a, 8, "fp32", b)) for b in (None, 16, 32)] == [1, 1, 1]
    assert answer_lines(a)[1].startswith("hidden-8, batch 16: fastest numpy (reference) (batch 16)")
    with (batch_run / "results.csv").open() as f:
        assert sorted((int(row["batch"]), row["label"]) for row in csv.DictReader(f)) == [
            (8, "numpy (reference)"), (16, "numpy (reference) (batch 16)"), (32, "numpy (reference) (batch 32)")]
    doc = json.loads((batch_run / "report.json").read_text())
    assert sorted(c["batch"] for c in doc["cells"]) == [8, 16, 32]
    rows = sorted(build(batch_run, batch_run).rows, key=lambda r: r.key[5] or 0)
    assert [(r.key[5], r.label) for r in rows] == [
        (None, "numpy (reference)"), (16, "numpy (reference) (batch 16)"), (32, "numpy (reference) (batch 32)")]
    assert all(r.ratio == pytest.approx(1.0) for r in rows)  # each cell against itself, not a pooled median


def test_resume_replays_a_search_by_batch_and_refuses_another_axis(batch_run: Path, tmp_path: Path) -> None:
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(batch_run, out)
    before = (out / "capacity.json").read_text()
    again = run_cli(["capacity", "matrix.yaml", *LOCAL, "--out", str(out), "--resume"])
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "capacity.json").read_text() == before
    assert len(list((out / "cells").iterdir())) == 3  # nothing ran again
    other = [a for a in LOCAL if a not in ("--axis", "batch", "--max", "32")]
    hidden = run_cli(["capacity", "matrix.yaml", *other, "--max", "64", "--out", str(out), "--resume"])
    assert hidden.returncode == 2 and "holds a capacity search ({'axis': 'batch'" in hidden.stderr, hidden.stderr


# ------------------------------------------------------------------------------------------------ the store's check
def test_the_store_checks_a_records_batch_against_its_cell_and_loads_old_records(batch_run: Path,
                                                                               tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    run_id = json.loads((batch_run / "manifest.json").read_text())["run_id"]
    good = CellRecord.model_validate_json((batch_run / "cells" / "numpy-reference-loop-h8-b16-r0" /
                                           "record.json").read_text())

    def stored(record: dict, name: str) -> tuple[CellRecord | None, str | None]:
        (tmp_path / "cells" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "cells" / name / "record.json").write_text(json.dumps(record))
        return store.read_record(name, run_id)

    doc = json.loads(good.model_dump_json())
    assert stored(doc, good.cell_id)[0] == good
    # An older record: no `batch` key, an id without a batch part: it loads, of the matrix's batch.
    old = {k: v for k, v in doc.items() if k != "batch"} | {"cell_id": "numpy-reference-loop-h8-r0"}
    loaded, problem = stored(old, "numpy-reference-loop-h8-r0")
    assert problem is None and loaded is not None and loaded.batch is None
    # A record that claims another batch than its cell id says, or than its own params, is left out.
    for record, name, says in (
        ({**doc, "batch": 32}, good.cell_id, "is of batch 32, but its cell id"),
        ({**old, "cell_id": good.cell_id}, good.cell_id, "is of batch the matrix's, but its cell id"),
        ({**doc, "cell_id": "numpy-reference-loop-h8-r0"}, "numpy-reference-loop-h8-r0", "says the matrix"),
        ({**doc, "params": {**doc["params"], "batch": 8}}, good.cell_id, "but its params say 8"),
    ):
        loaded, problem = stored(record, name)
        assert loaded is None and problem is not None and says in problem and problem.endswith("left out"), problem
