"""torch's bf16 on the fused (cuDNN on a GPU) LSTM is explicit (issue 18, item 7): autocast's cuDNN RNN wrapper casts
to float16 whatever autocast's dtype, so the LSTM gets bfloat16 weights and input outside autocast. On a CPU the
same code path runs (oneDNN's LSTM); what cuDNN makes of it is scripts/gpu-check.sh's bf16 probe."""

from __future__ import annotations

from pathlib import Path

from tests.workload_helpers import assert_ok_and_equivalent, cell_params, run_workload, venv_python


def test_fused_bf16_gives_the_lstm_bf16_weights_and_keeps_float32_master_weights(tmp_path: Path) -> None:
    params = cell_params("torch", precision="bf16", impl="fused")
    doc = run_workload(venv_python("torch"), "torch_lstm", params, tmp_path)
    if doc["status"] == "unsupported":  # oneDNN builds a bf16 LSTM only on CPUs with bf16 instructions
        assert "no bfloat16 fused LSTM" in doc["message"]
        return
    switches = doc["precision_switches"]
    assert switches["lstm_weights_dtype"] == "torch.bfloat16", switches
    assert switches["lstm_output_dtype"] == "torch.bfloat16", switches
    assert doc["precision_effective"] == "bf16"
    assert_ok_and_equivalent(doc, params)  # SGD still updates float32 weights: the step moves the loss as it must
    fp32 = run_workload(venv_python("torch"), "torch_lstm", cell_params("torch", impl="fused"), tmp_path / "fp32")
    assert fp32["precision_switches"]["lstm_weights_dtype"] == "torch.float32"
