"""Capacity search (orchestrator/capacity.py): the probe sequence on synthetic boundaries, and the real thing on the
Docker engine (numpy-reference under a 256 MiB container limit: host-oom is the boundary)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from orchestrator.capacity import STEP, Capacity, first_probe, load_capacity, next_probe, search
from orchestrator.errors import InputError
from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix
from orchestrator.pipeline import RunSummary
from orchestrator.plan import Plan, expand
from orchestrator.results import Status
from tests.conftest import BUILD_ARG, ROOT, run_cli


class FakeStore:
    """What `search` reads back after each round: the status each probe's record holds."""

    def __init__(self) -> None:
        self.status: dict[str, Status] = {}

    def read_record(self, cell_id: str, run_id: str | None) -> tuple[object | None, str | None]:
        got = self.status.get(cell_id)
        return (SimpleNamespace(status=got), None) if got is not None else (None, "no record")


def simulate(fits: dict[str, int], start: int = 128, ceiling: int = 8192, fail: Status = Status.HOST_OOM,
             ) -> tuple[list, list[list[int]]]:
    """Run `search` against frameworks that train ok up to fits[name] and fail with `fail` above it."""
    doc = {"frameworks": [{"name": n} for n in fits], "hidden": [start], "device": "cpu"}
    plan = expand(parse_matrix(yaml.safe_dump(doc), "m.yaml"), discover(ROOT / "images"))
    store, rounds = FakeStore(), []

    def run_round(p: Plan) -> RunSummary:
        rounds.append([c.hidden for c in p.cells])
        for c in p.cells:
            store.status[c.cell_id] = Status.OK if c.hidden <= fits[c.framework] else fail
        return RunSummary()

    found, interrupted = search(plan, store, "run", ceiling, run_round)  # type: ignore[arg-type]
    assert not interrupted
    return found, rounds


def test_next_probe_doubles_then_bisects_on_the_grid() -> None:
    assert next_probe(None, None, 128, 4096) == 128
    assert next_probe(128, None, 128, 4096) == 256
    assert next_probe(2048, None, 128, 4096) == 4096
    assert next_probe(4096, None, 128, 4096) is None  # the ceiling trains: no failure to find
    assert next_probe(1024, 2048, 128, 4096) == 1536
    assert next_probe(1024, 1088, 128, 4096) is None  # one step apart: the boundary
    assert next_probe(None, 128, 128, 4096) == 64  # the first probe failed: search below it
    assert next_probe(None, 64, 128, 4096) is None
    assert first_probe((100, 300)) == 128


@pytest.mark.parametrize("fit", [64, 1000, 1024, 1087, 3000, 8191])
def test_search_finds_the_boundary_with_few_probes(fit: int) -> None:
    found, rounds = simulate({"numpy-reference": fit})
    (s,) = found
    largest = fit // STEP * STEP
    assert (s.ok, s.failed, s.failed_status) == (largest, largest + STEP, "host-oom")
    assert len(s.cells) == len(rounds) <= 2 * 7  # log2(8192/64) doublings + as many halvings at most
    assert len(set(s.cells)) == len(s.cells)  # never the same probe twice


def test_search_runs_one_probe_per_unfinished_framework_per_round() -> None:
    found, rounds = simulate({"numpy-reference": 700, "jax": 5000})
    assert [(s.template.framework, s.ok, s.failed) for s in found] == [("numpy-reference", 640, 704),
                                                                       ("jax", 4992, 5056)]
    assert [len(r) for r in rounds] == [2] * len(found[0].cells) + [1] * (len(found[1].cells) - len(found[0].cells))


def test_nothing_fits_and_everything_fits() -> None:
    (s,), _ = simulate({"numpy-reference": 10}, start=128)
    assert (s.ok, s.failed) == (None, 64)
    (s,), _ = simulate({"numpy-reference": 10**6}, start=128, ceiling=1024)
    assert (s.ok, s.failed) == (1024, None)


def test_a_size_independent_failure_ends_the_series_without_a_boundary() -> None:
    (s,), rounds = simulate({"numpy-reference": 0}, fail=Status.BUILD_FAILED)
    assert (s.ok, s.failed, s.ended) == (None, None, "build-failed") and len(rounds) == 1


def test_a_malformed_capacity_file_is_one_line(tmp_path: Path) -> None:
    assert load_capacity(tmp_path) is None
    (tmp_path / "capacity.json").write_text(json.dumps({"axis": "hidden", "series": "x"}))
    with pytest.raises(InputError, match=r"capacity\.json is not a readable capacity file"):
        load_capacity(tmp_path)


# A vocabulary this large makes the embedding (and its gradient) fill a 256 MiB container at a few hundred hidden
# units, so each probe is a second or two: the boundary is host-oom, found in about 7 probes.
CAPACITY_ARGS = ["--only", "numpy-reference", "--device", "cpu", "--hidden", "128", "--set", "memory=256m",
                 "--set", "batch=2", "--set", "seq_len=4", "--set", "vocab=40000", "--set", "iters=2",
                 "--set", "warmup=0", "--build-arg", BUILD_ARG]


def capacity_run(project_copy, tmp_path: Path, args: list[str]) -> tuple[Path, Path, Capacity]:
    """One `capacity` run on a copy of the project: (the project, the run directory, its complete capacity.json)."""
    project = project_copy()
    out = tmp_path / "cap"
    proc = run_cli(["capacity", "matrix.yaml", *args, "--out", str(out)], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = load_capacity(out)
    assert found is not None and found.complete
    return project, out, found


@pytest.mark.docker
def test_capacity_finds_the_host_oom_boundary_of_numpy_reference(base_image: str, project_copy,
                                                                 tmp_path: Path) -> None:
    project, out, found = capacity_run(project_copy, tmp_path, CAPACITY_ARGS)
    (s,) = found.series
    assert s.framework == "numpy-reference" and s.failed_status == "host-oom"
    assert s.largest_ok is not None and s.smallest_failed == s.largest_ok + STEP
    # Every probe is a normal record of the run, in the index, and agrees with the boundary.
    records = {r["cell_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(records) == sorted(s.cells) and len(s.cells) <= 10
    for r in records.values():
        assert r["status"] == ("ok" if r["hidden"] <= s.largest_ok else "host-oom"), r["cell_id"]
    assert json.loads((out / "manifest.json").read_text())["capacity"]["axis"] == "hidden"
    report = (out / "report.md").read_text()
    assert "## Largest hidden that fits" in report
    assert f"| numpy (reference) | loop | fp32 | {s.largest_ok} | {s.smallest_failed} (host out of mem) |" in report

    # --resume replays the search from the records: nothing runs again, the same answer.
    before = (out / "capacity.json").read_text()
    again = run_cli(["capacity", "matrix.yaml", *CAPACITY_ARGS, "--out", str(out), "--resume", "-q"], cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "capacity.json").read_text() == before
    assert {p.name for p in (out / "cells").iterdir()} == set(s.cells)
    # A plain run cannot "finish" a capacity search (its matrix alone does not say which cells it holds).
    plain = run_cli(["matrix.yaml", *CAPACITY_ARGS, "--out", str(out), "--resume"], cwd=project)
    assert plain.returncode == 2 and "holds a capacity search" in plain.stderr, plain.stderr


# By batch, the training step's own memory is the boundary: activations of batch x seq_len x hidden. The image's NumPy
# uses the reference BLAS, so the hidden size is small (64: few FLOPs per byte) and the sequence long (1400): about
# 4.5 MiB per example fills the 256 MiB container between batch 40 and 48, found in 4 probes from 32 (32 ok,
# 64 and 48 host-oom, 40 ok).
BATCH_ARGS = ["--axis", "batch", "--only", "numpy-reference", "--device", "cpu", "--hidden", "64", "--set",
              "memory=256m", "--set", "batch=32", "--set", "seq_len=1400", "--set", "vocab=100", "--set", "iters=1",
              "--set", "warmup=0", "--set", "data_batches=1", "--build-arg", BUILD_ARG]


@pytest.mark.docker
def test_capacity_by_batch_finds_the_host_oom_boundary_of_numpy_reference(base_image: str, project_copy,
                                                                          tmp_path: Path) -> None:
    project, out, found = capacity_run(project_copy, tmp_path, BATCH_ARGS)
    assert found.axis == "batch"
    (s,) = found.series
    assert (s.framework, s.hidden, s.failed_status) == ("numpy-reference", 64, "host-oom")
    assert s.largest_ok is not None and s.smallest_failed == s.largest_ok + 8
    records = {r["cell_id"]: r for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(records) == sorted(s.cells) and len(s.cells) <= 8
    for r in records.values():
        assert r["hidden"] == 64 and r["cell_id"].endswith(f"-h64-b{r['batch']}-r0")
        assert r["status"] == ("ok" if r["batch"] <= s.largest_ok else "host-oom"), r["cell_id"]
    assert json.loads((out / "manifest.json").read_text())["capacity"] == {"axis": "batch", "step": 8,
                                                                            "ceiling": 65536}
    report = (out / "report.md").read_text()
    assert "## Largest batch that fits" in report
    row = f"| numpy (reference) | loop | fp32 | 64 | {s.largest_ok} | {s.smallest_failed} (host out of mem) |"
    assert row in report
    # Each probe is a row of its own in the 2016-shaped table: the boundary's two sizes are never pooled.
    assert f"| numpy (reference) (batch {s.smallest_failed}) | host out of mem |" in report

    before = (out / "capacity.json").read_text()
    again = run_cli(["capacity", "matrix.yaml", *BATCH_ARGS, "--out", str(out), "--resume", "-q"], cwd=project)
    assert again.returncode == 0, again.stdout + again.stderr
    assert (out / "capacity.json").read_text() == before
    assert {p.name for p in (out / "cells").iterdir()} == set(s.cells)


def test_capacity_bad_input_is_one_line_and_dry_run_runs_nothing(tmp_path: Path) -> None:
    bad = run_cli(["capacity", "matrix.yaml", "--max", "100"])
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "--max 100: expected a multiple of 64" in bad.stderr
    high = run_cli(["capacity", "matrix.yaml", "--hidden", "1000", "--max", "512"])
    assert high.returncode == 2 and "first probe (hidden 1024) is above --max 512" in high.stderr
    dry = run_cli(["capacity", "matrix.yaml", "--only", "numpy-reference", "--hidden", "100", "--dry-run",
                   "--out", str(tmp_path / "x")])
    assert dry.returncode == 0 and "numpy-reference-loop: first probe hidden=128, at most 65536" in dry.stdout
    assert not (tmp_path / "x").exists()


def test_the_rounds_of_a_search_show_as_one_progress_bar() -> None:
    from rich.console import Console

    from orchestrator.ui import RichEvents

    with RichEvents(Console(file=io.StringIO())) as events:
        for round_cells, done in ((1, 0), (2, 1), (1, 0)):
            events.build_started(("numpy-reference", None))
            events.cells_planned(round_cells, done)
        (builds, cells) = events.progress.tasks
        assert (cells.total, cells.completed) == (4, 1) and "numpy-reference" in str(builds.description)


def test_an_interrupted_round_stops_the_search_without_a_boundary() -> None:
    doc = {"frameworks": [{"name": "numpy-reference"}], "hidden": [128], "device": "cpu"}
    plan = expand(parse_matrix(yaml.safe_dump(doc), "m.yaml"), discover(ROOT / "images"))
    store = FakeStore()

    def run_round(p: Plan) -> RunSummary:  # the first probe ends ok; the second is interrupted (no record)
        if not store.status:
            store.status[p.cells[0].cell_id] = Status.OK
        return RunSummary(interrupted=len(store.status) > 0 and p.cells[0].hidden != 128)

    (s,), interrupted = search(plan, store, "run", 4096, run_round)  # type: ignore[arg-type]
    assert interrupted and (s.ok, s.failed) == (128, None) and len(s.cells) == 1
