"""The precision axis and the exact-timing checks, on the host side and in the harness (no framework venvs):
matrix and plan, the read-back judged by the orchestrator, the validity gates, a workload whose sync misses queued
work, library OOM messages, the peak table, and the report's per-precision display."""

from __future__ import annotations

import json
import queue
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from report_helpers import derived_run

from orchestrator.classify import classify
from orchestrator.errors import InputError
from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix, parse_set
from orchestrator.plan import expand
from orchestrator.report import peaks, render
from orchestrator.report.load import load_run
from orchestrator.results import Status
from orchestrator.runners.base import Outcome
from orchestrator.validity import THROUGHPUT_OVER_LATENCY_FLAG, flags, judge
from tests.workload_helpers import as_result
from workloads import harness
from workloads.numpy_reference import NumpyLSTM, NumpyReference

pytest_plugins = ["report_fixtures"]
ROOT = Path(__file__).resolve().parent.parent
TINY = {"hidden": 8, "batch": 4, "seq_len": 6, "vocab": 50, "classes": 5, "iters": 8, "warmup": 1,
        "device": "cpu", "lr": 0.5, "data_batches": 2}


def run_harness(cls: type[harness.Framework], tmp_path: Path, **params: Any) -> dict[str, Any]:
    """One cell through harness.run, in this process, as a container would run it."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "params.json").write_text(json.dumps({"framework": "numpy-reference", **TINY, **params}))
    assert harness.run(cls, ["--params", str(tmp_path / "params.json"), "--out", str(tmp_path / "r.json")]) == 0
    doc = json.loads((tmp_path / "r.json").read_text())
    # In this process the "process start" is pytest's, long before the cell: not a figure of the cell (the host would
    # rightly refuse a start-up longer than the cell's duration). A platform without a process start writes None.
    return {**doc, "import_s": None, "to_first_step_s": None}


def outcome(doc: dict[str, Any], log: str = "") -> Outcome:
    return Outcome(exit_code=0, timed_out=False, oom_killed=False, result_text=json.dumps(doc) if doc else None,
                   log_tail=log, duration_s=1.0)


# ------------------------------------------------------------------------------------------------ matrix, plan
def test_precision_is_an_axis_of_the_matrix_and_of_set() -> None:
    assert parse_matrix("frameworks: [numpy-reference]", "m").precision == ("fp32",)
    assert parse_matrix("precision: bf16", "m").precision == ("bf16",)
    assert parse_matrix("precision: [fp32, bf16]", "m").precision == ("fp32", "bf16")
    assert parse_matrix("precision: fp32", "m", parse_set(["precision=bf16"])).precision == ("bf16",)
    assert parse_matrix("{}", "m", parse_set(["precision=[fp32,tf32]"])).precision == ("fp32", "tf32")
    with pytest.raises(InputError, match=r"m:2: key 'precision.0'"):
        parse_matrix("hidden: [8]\nprecision: [fp16]", "m")
    with pytest.raises(InputError, match="command line: key 'precision"):
        parse_matrix("{}", "m", parse_set(["precision=double"]))


def test_plan_crosses_precisions_and_keeps_fp32_cell_ids() -> None:
    matrix = parse_matrix("frameworks: [numpy-reference]\nhidden: [8]\nprecision: [fp32, bf16]", "m")
    cells = expand(matrix, discover(ROOT / "images")).cells
    assert [c.cell_id for c in cells] == ["numpy-reference-loop-h8-r0", "numpy-reference-loop-bf16-h8-r0"]
    assert [c.params(matrix)["precision"] for c in cells] == ["fp32", "bf16"]


# ------------------------------------------------------------------------------------------------ harness
def test_fp32_result_carries_read_back_throughput_and_gates(tmp_path: Path) -> None:
    doc = run_harness(NumpyReference, tmp_path)
    assert doc["status"] == "ok"
    assert (doc["precision"], doc["precision_effective"]) == ("fp32", "fp32")
    assert doc["precision_switches"]["NVIDIA_TF32_OVERRIDE"] == "0"  # set before any framework work
    assert doc["embedding_update"] == "sparse"
    assert doc["throughput_ms"] > 0 and doc["timed_wall_ms"] >= sum(doc["times_ms"])
    assert len(doc["losses"]) == TINY["iters"] and doc["losses"][-1] == doc["loss_final"]
    gates = doc["validity"]
    assert gates["loss_trend"] == "decreasing"  # lr 0.5 on two batches: each batch's loss falls between visits
    assert 0.9 < gates["times_sum_over_wall"] <= 1.0
    assert judge(as_result(doc)) is None


@pytest.mark.parametrize(("precision", "device", "reason"), [
    ("tf32", "cpu", "a CPU cell has no TF32"),
    ("bf16", "cpu", "computes in float32 only"),
    ("fp16", "cpu", "unknown precision 'fp16'"),
])
def test_a_precision_the_cell_cannot_run_is_unsupported(precision: str, device: str, reason: str,
                                                        tmp_path: Path) -> None:
    doc = run_harness(NumpyReference, tmp_path, precision=precision, device=device)
    assert doc["status"] == "unsupported" and reason in doc["message"]
    assert doc["times_ms"] == [] and doc["precision_effective"] is None


@pytest.mark.parametrize(("losses", "want"), [
    ([2.0, 3.0, 1.9, 2.9, 1.8, 2.8], "decreasing"),
    ([2.0, 3.0, 2.1, 3.1, 2.2, 3.2], "increasing"),
    ([2.0, 3.0, 2.0, 3.0000001], "flat"),
    ([2.0, 3.0], "undetermined"),
    ([2.0, None, 1.0, 1.0], "not-finite"),
])
def test_loss_trend_compares_each_batch_with_itself(losses: list[float | None], want: str) -> None:
    assert harness.loss_trend(losses, 2, "fp32")[0] == want


class _SimulatedDevice(NumpyReference):
    """A NumPy LSTM behind a one-stream work queue, as a GPU runs it: step() only enqueues and returns a future
    loss. `sync` waits for the queue here; _NoOpSync forgets to (the theano/keras-theano defect)."""

    def build(self, weights: harness.Weights) -> None:
        self.model = NumpyLSTM(weights, self.params.lr)
        self.stream: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            batch, result = self.stream.get()
            result.set_result(self.model.step(*batch))
            self.stream.task_done()

    def step(self, batch: Any) -> Any:
        result: Future[float] = Future()
        self.stream.put((batch, result))
        return result

    def loss_value(self, loss: Any) -> float:
        return float(loss.result())

    def sync(self) -> None:
        self.stream.join()


class _NoOpSync(_SimulatedDevice):
    def sync(self) -> None:
        pass


def test_a_sync_that_misses_queued_work_is_flagged(tmp_path: Path) -> None:
    big = {"hidden": 48, "batch": 16, "seq_len": 16, "iters": 12}
    broken = run_harness(_NoOpSync, tmp_path / "broken", **big)
    good = run_harness(_SimulatedDevice, tmp_path / "good", **big)
    # The per-step loop timed only the launches; the back-to-back loop ended on a value that needs every step.
    broken_ratio = broken["validity"]["throughput_over_latency"]
    assert broken_ratio > THROUGHPUT_OVER_LATENCY_FLAG
    assert any("sync may not cover" in f for f in flags(as_result(broken)))
    # With a real sync both loops time the same work: the ratio is ~1 (noise on a busy CPU can move it, never by
    # the orders of magnitude that a no-op sync does).
    assert good["validity"]["throughput_over_latency"] < broken_ratio / 10
    assert broken["loss_initial"] == good["loss_initial"]  # same work, only the timing differs


def test_library_allocation_failures_are_oom_for_every_framework() -> None:
    fw = NumpyReference(harness.Params(framework="numpy-reference", hidden=8))
    assert harness.classify(fw, RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED")) == "oom"
    assert harness.classify(fw, RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")) == "oom"
    assert harness.classify(fw, RuntimeError("CUDNN_STATUS_INTERNAL_ERROR_DEVICE_ALLOCATION_FAILED")) == "oom"
    assert harness.classify(fw, RuntimeError("CUDNN_STATUS_BAD_PARAM")) == "crashed"
    # No result JSON at all (the process died): the log tail decides.
    status, _, _ = classify(outcome({}, "RuntimeError: cuDNN error: CUDNN_STATUS_ALLOC_FAILED"), 5)
    assert status is Status.OOM


# ------------------------------------------------------------------------------------------------ orchestrator
def test_read_back_that_differs_from_the_request_is_invalid_output(tmp_path: Path) -> None:
    doc = run_harness(NumpyReference, tmp_path)
    assert classify(outcome(doc), 5)[0] is Status.OK
    asked_bf16 = {**doc, "params": {**doc["params"], "precision": "bf16"}}
    status, reason, kept = classify(outcome(asked_bf16), 5)
    assert status is Status.INVALID_OUTPUT and kept is not None
    assert "precision read-back is 'fp32', not the 'bf16' asked for" in (reason or "")
    assert "NVIDIA_TF32_OVERRIDE=0" in (reason or "")  # the switches, for whoever reads the failure
    no_read_back = {k: v for k, v in asked_bf16.items() if k != "precision_effective"}
    assert "no precision read-back" in (classify(outcome(no_read_back), 5)[1] or "")


def test_failed_gates_are_invalid_output_and_flags_are_not(tmp_path: Path) -> None:
    doc = run_harness(NumpyReference, tmp_path)
    # The trend is recomputed on the host from `losses`, whatever the workload's own validity says.
    rising = {**doc, "losses": [1.0 + i for i in range(len(doc["losses"]))]}
    assert classify(outcome(rising), 5)[0] is Status.INVALID_OUTPUT
    over = {**doc, "timed_wall_ms": sum(doc["times_ms"]) * 0.9}  # steps adding up to more than their loop
    assert "more than the" in (classify(outcome(over), 5)[1] or "")
    # A third of the loop's time outside the timed steps (a busy host): a flag, not a failure.
    wall, start = sum(doc["times_ms"]) * 1.5 + 1.0, doc["timed_window"][0]
    loops_s = (wall + doc["throughput_ms"] * len(doc["times_ms"])) / 1000
    gap = {**doc, "timed_wall_ms": wall, "timed_window": [start, start + loops_s + 0.001]}  # the window holds it
    assert classify(outcome(gap), 5)[0] is Status.OK and any("between steps" in f for f in flags(as_result(gap)))
    flat = {**doc, "losses": [1.0] * len(doc["losses"]), "validity": {**doc["validity"], "loss_trend": "decreasing"}}
    assert classify(outcome(flat), 5)[0] is Status.OK and "lr is too small" in flags(as_result(flat))[0]


# ------------------------------------------------------------------------------------------------ peaks, report
def test_peak_table_rows_cite_a_source_and_the_clock() -> None:
    b200 = peaks.lookup("NVIDIA B200")
    assert b200 is not None and (b200.fp32_tflops, b200.tf32_tflops, b200.bf16_tflops) == (75.0, 1100.0, 2250.0)
    h100 = peaks.lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100.for_precision("bf16") == 989.5 and h100.for_precision("fp32") == 67.0
    assert peaks.lookup("Tesla V100-SXM2-16GB").for_precision("bf16") is None  # type: ignore[union-attr]
    for _, peak in peaks._table():
        assert peak.clock == "boost" and peak.source.startswith("http")


def test_report_shows_precision_uses_its_peak_and_never_ranks_across_precisions(real_run: Path,
                                                                                 tmp_path: Path) -> None:
    records = load_run(real_run).records
    gpu = {r.cell_id: r.model_copy(update={"device": "gpu", "slot": "0"}) for r in records}
    # The same real measurements filed again as bf16 cells: identical times, which would "overlap" if ranked.
    bf16 = [r.model_copy(update={"cell_id": r.cell_id.replace("-h", "-bf16-h", 1), "precision": "bf16", "device": "gpu",
                                 "slot": "0", "params": {**(r.params or {}), "precision": "bf16"},
                                 "workload": r.workload.model_copy(update={
                                     "params": {**r.workload.params, "precision": "bf16"}}) if r.workload else None})
            for r in records]
    run = derived_run(real_run, tmp_path / "run", replace=gpu, extra=bf16,
                      manifest={"gpus": [{"index": "0", "name": "NVIDIA H100 80GB HBM3"}]})
    render(run)
    report = json.loads((run / "report.json").read_text())
    by_precision = {c["precision"]: c for c in report["cells"] if c["hidden"] == 8}
    assert by_precision["bf16"]["pct_of_peak"] == pytest.approx(100 * by_precision["bf16"]["tflops"] / 989.5)
    assert by_precision["fp32"]["pct_of_peak"] == pytest.approx(100 * by_precision["fp32"]["tflops"] / 67.0)
    assert by_precision["bf16"]["label"].endswith("(bf16)") and by_precision["fp32"]["throughput_ms"] > 0
    md = (run / "report.md").read_text()
    assert "mixes precisions (bf16, fp32)" in md
    assert not [ln for ln in md.splitlines() if "overlap" in ln and "(bf16)" in ln]  # one bf16 row: no pair
    assert "| precision |" in md
