"""classify(): the documented order of evidence, on outcomes as runners report them."""

from __future__ import annotations

import json

from orchestrator.classify import classify
from orchestrator.results import Status
from orchestrator.runners.base import LogTail, Outcome


def outcome(**kw: object) -> Outcome:
    base = {
        "exit_code": 0,
        "timed_out": False,
        "oom_killed": False,
        "result_text": None,
        "log_tail": "",
        "duration_s": 1.0,
    }
    base.update(kw)
    return Outcome(**base)  # type: ignore[arg-type]


PARAMS = {"framework": "x", "variant": None, "impl": "default", "hidden": 16, "lr": 0.001, "device": "cpu"}


def doc(status: str, **kw: object) -> str:
    """A complete result as workloads/harness.py writes it (orchestrator/workload_result.py)."""
    d = {
        "schema_version": 1,
        "kind": "lstm-bench.workload-result",
        "status": status,
        "framework": "x",
        "variant": None,
        "impl": "default",
        "params": dict(PARAMS),
        "versions": {"python": "3.11.2"},
        "device": {"kind": "cpu", "name": "cpu"},
        "times_ms": [1.0, 2.0],
        "stats_ms": {"mean": 1.5, "median": 1.5, "std": 0.7, "min": 1.0, "max": 2.0},
        "message": None,
    }
    d.update(kw)
    return json.dumps(d)


def test_own_timeout_beats_everything() -> None:
    s, reason, _ = classify(outcome(timed_out=True, oom_killed=True, exit_code=137, result_text=doc("ok")), 5)
    assert s is Status.TIMEOUT and "5 s" in (reason or "")


def test_oom_killed_beats_json_and_logs() -> None:
    s, _, _ = classify(outcome(oom_killed=True, exit_code=137, result_text=doc("ok")), 5)
    assert s is Status.HOST_OOM


def test_workload_json_decides_when_present() -> None:
    for word in ("ok", "oom", "recursion", "crashed", "unsupported"):
        s, _, d = classify(outcome(result_text=doc(word, message="m")), 5)
        assert s.value == word and d is not None


def test_bad_json_is_invalid_output() -> None:
    assert classify(outcome(result_text="{nope"), 5)[0] is Status.INVALID_OUTPUT
    assert classify(outcome(result_text="[]"), 5)[0] is Status.INVALID_OUTPUT
    assert classify(outcome(result_text=doc("ok", schema_version=99)), 5)[0] is Status.INVALID_OUTPUT
    assert classify(outcome(result_text=doc("great")), 5)[0] is Status.INVALID_OUTPUT
    assert classify(outcome(result_text=doc("ok", times_ms=[])), 5)[0] is Status.INVALID_OUTPUT
    assert classify(outcome(result_text=doc("ok", times_ms=["fast"])), 5)[0] is Status.INVALID_OUTPUT
    s, reason, _ = classify(outcome(exit_code=0), 5)
    assert s is Status.INVALID_OUTPUT and "without writing" in (reason or "")


def test_log_patterns_when_no_json() -> None:
    assert classify(outcome(exit_code=1, log_tail="RecursionError: maximum recursion depth"), 5)[0] is Status.RECURSION
    assert classify(outcome(exit_code=1, log_tail="torch.OutOfMemoryError: CUDA out of memory"), 5)[0] is Status.OOM
    assert classify(outcome(exit_code=137, memory_limited=True), 5)[0] is Status.HOST_OOM


def test_crash_keeps_exit_code_and_stderr_tail() -> None:
    s, reason, _ = classify(outcome(exit_code=3, log_tail="a\nb\nboom"), 5)
    assert s is Status.CRASHED and "exit code 3" in (reason or "") and "boom" in (reason or "")


def test_log_tail_is_bounded() -> None:
    tail = LogTail(lines=10, chars=100)
    for i in range(100_000):
        tail.feed(f"line {i}\n".encode())
    tail.feed("x" * 10_000)
    text = tail.text()
    assert len(text) <= 100 and text.endswith("x")


def test_a_result_about_another_cell_names_the_key() -> None:
    s, reason, d = classify(outcome(result_text=doc("ok", params={**PARAMS, "hidden": 99999})), 5, PARAMS)
    assert s is Status.INVALID_OUTPUT and d is None and "params.hidden" in (reason or "")
    s, reason, _ = classify(outcome(result_text=doc("ok", framework="torch")), 5, PARAMS)
    assert s is Status.INVALID_OUTPUT and "framework" in (reason or "")
    s, reason, _ = classify(outcome(result_text=doc("ok", params={**PARAMS, "extra": 1})), 5, PARAMS)
    assert s is Status.INVALID_OUTPUT and "params.extra" in (reason or "")
    assert classify(outcome(result_text=doc("ok")), 5, PARAMS)[0] is Status.OK


def test_strict_schema_names_the_key() -> None:
    cases = {
        "stats_ms.median": doc("ok", stats_ms={"mean": 1, "median": "fast", "std": 0, "min": 1, "max": 1}),
        "device": doc("ok", device="a string"),
        "times_ms.0": doc("ok", times_ms=[1e308]),
        "unexpected": doc("ok", surprise=1),
    }
    for word, text in cases.items():
        s, reason, _ = classify(outcome(result_text=text), 5, PARAMS)
        assert s is Status.INVALID_OUTPUT and word in (reason or "").replace("surprise: Extra", "unexpected"), reason


def test_a_result_file_that_could_not_be_read_or_stray_files_are_invalid_output() -> None:
    s, reason, _ = classify(outcome(result_problem="result.json is a FIFO (named pipe), not a regular file"), 5)
    assert s is Status.INVALID_OUTPUT and "FIFO" in (reason or "")
    s, reason, _ = classify(outcome(result_text=doc("ok"), stray=("'record.json'",)), 5, PARAMS)
    assert s is Status.INVALID_OUTPUT and "record.json" in (reason or "")
