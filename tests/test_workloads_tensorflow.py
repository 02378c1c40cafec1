"""TensorFlow's precision switches, run for real in its cached CPU environment (the cells themselves, against the
NumPy oracle, are in test_workloads_b with the other frameworks'). A module of its own so that CI's main lane runs
it: test_workloads_b's Theano compiles go beside the image builds (tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.validity import judge
from tests.workload_helpers import (
    as_result,
    assert_ok_and_equivalent,
    cell_params,
    relative_deviation,
    run_cell,
    run_left_off,
    venv_python,
)


def test_tensorflow_sets_tf32_off_explicitly_for_fp32(tmp_path: Path) -> None:
    # TensorFlow's default is TF32 on (defect 1): an fp32 cell must read it back off.
    doc, params = run_cell("tensorflow", tmp_path, impl="loop", precision="fp32")
    assert_ok_and_equivalent(doc, params)
    assert doc["precision_switches"]["tensor_float_32_execution_enabled"] is False
    assert doc["embedding_update"] == "sparse"


@pytest.mark.parametrize("impl", ["fused", "loop", "xla"])
def test_tensorflow_bf16_reads_back_bf16_within_its_tolerance(impl: str, tmp_path: Path) -> None:
    doc, params = run_cell("tensorflow", tmp_path, impl=impl, precision="bf16")
    assert_ok_and_equivalent(doc, params)
    assert doc["precision_switches"]["lstm_output"] == "bfloat16"
    assert relative_deviation(doc, params) > 0


@pytest.mark.parametrize("impl", ["fused", "loop", "xla"])
def test_tensorflow_bf16_left_off_is_detected(impl: str) -> None:
    params = cell_params("tensorflow", impl=impl, precision="bf16")
    doc = run_left_off(venv_python("tensorflow"), "tensorflow_lstm", "TensorFlowLSTM", params)
    assert doc["precision_effective"] == "fp32"
    assert "precision read-back is 'fp32', not the 'bf16' asked for" in (judge(as_result(doc)) or "")
