"""Analytic floating-point work of one training step (docs/report.md, "FLOPs").

Counted: the matrix products, which are all but ~1% of the work at the benchmark's sizes.
  forward LSTM   8 * B * T * H * (E + H)        (T steps of [B, E+H] @ [E+H, 4H], 2 FLOP per multiply-add)
  forward Dense  2 * B * H * C
  backward       2 x forward (a gradient for the inputs and one for the weights of every product)
  SGD update     2 per dense parameter (LSTM kernels, bias, Dense; the sparse embedding update is left out)
Left out, and documented as such: gate non-linearities and element-wise products (~20 FLOP per unit and step,
under 1% of the products from H = 128 on), the embedding gather, softmax and loss (O(B*C)).
"""

from __future__ import annotations

from typing import Any


def forward_flops(batch: int, seq_len: int, hidden: int, embed: int, classes: int) -> int:
    lstm = 8 * batch * seq_len * hidden * (embed + hidden)
    dense = 2 * batch * hidden * classes
    return lstm + dense


def update_flops(hidden: int, embed: int, classes: int) -> int:
    dense_params = 4 * hidden * (embed + hidden) + 4 * hidden + hidden * classes + classes
    return 2 * dense_params


def training_step_flops(batch: int, seq_len: int, hidden: int, embed: int | None = None, classes: int = 5) -> int:
    """FLOP of one forward + backward + SGD update; embed defaults to hidden (the benchmark's choice)."""
    e = hidden if embed is None else embed
    return 3 * forward_flops(batch, seq_len, hidden, e, classes) + update_flops(hidden, e, classes)


def flops_for_params(params: dict[str, Any]) -> int:
    """The same for a workload's params dict (embed = hidden, as workloads/harness.py fixes it)."""
    return training_step_flops(
        int(params["batch"]), int(params["seq_len"]), int(params["hidden"]), None, int(params.get("classes", 5))
    )


def tflops_per_s(flops: int, median_ms: float) -> float:
    return flops / (median_ms / 1000.0) / 1e12
