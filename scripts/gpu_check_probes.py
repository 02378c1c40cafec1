"""The probes scripts/gpu-check.sh runs, one per subcommand, each printing one JSON document (docs/gpu-check.md).

    python scripts/gpu_check_probes.py frameworks   what torch and JAX see: devices, capability, CUDA/cuDNN versions
    python scripts/gpu_check_probes.py nvml         the orchestrator's GPU discovery, NVML facts, one sample per slot
    python scripts/gpu_check_probes.py bf16         the dtype cuDNN's LSTM computes in: autocast vs explicit bf16

Every probe reports its own failure in the document ("error": ...) instead of raising: the next one still runs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _guard(fn: Any) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}


def torch_facts() -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {"version": torch.__version__, "cuda": torch.version.cuda,
                           "cudnn": torch.backends.cudnn.version(), "available": torch.cuda.is_available(),
                           "arch_list": torch.cuda.get_arch_list()}
    out["devices"] = [{"name": torch.cuda.get_device_name(i), "capability": list(torch.cuda.get_device_capability(i)),
                       "memory_bytes": torch.cuda.get_device_properties(i).total_memory}
                      for i in range(torch.cuda.device_count())]
    return out


def jax_facts() -> dict[str, Any]:
    import jax

    return {"version": jax.__version__, "backend": jax.default_backend(),
            "devices": [{"kind": d.device_kind, "platform": d.platform, "id": d.id} for d in jax.devices()]}


def frameworks() -> dict[str, Any]:
    return {"CUDA_VISIBLE_DEVICES": os.environ.get("CUDA_VISIBLE_DEVICES"), "torch": _guard(torch_facts),
            "jax": _guard(jax_facts)}


def nvml() -> dict[str, Any]:
    from orchestrator import gpus
    from orchestrator.machine import gpu

    found = gpus.discover()
    slots = [g.id for g in found.gpus or []]
    samples = {}
    for slot in slots:
        def sample(slot: str = slot) -> dict[str, Any]:
            source = gpu.NvmlGpu(slot)
            try:
                read = source.read()
                names = gpu.reason_names(int(read["gpu_reasons"])) if "gpu_reasons" in read else None
                return {"sample": read, "reasons": names, "note": source.note}
            finally:
                source.close()

        samples[slot] = _guard(sample)
    return {"source": found.source, "problems": list(found.problems),
            "devices": [vars(g) | {"id": g.id} for g in found.gpus or []],
            "facts": _guard(lambda: {"gpus": gpu.facts()}), "samples": samples}


def bf16() -> dict[str, Any]:
    """Which dtype cuDNN's LSTM runs in under torch.autocast(bfloat16) (issue 18, item 7: its autocast wrapper casts
    RNNs to float16), and in the workload's explicit bf16 path; plus one bf16 training step's loss of each path."""
    import torch
    from torch import nn

    from workloads import harness
    from workloads.torch_lstm import _Model

    if not torch.cuda.is_available():
        return {"error": "torch sees no GPU"}
    dev = torch.device("cuda", 0)
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(dev), "cudnn": torch.backends.cudnn.version()}
    lstm = nn.LSTM(64, 128, batch_first=True).to(dev)
    x = torch.randn(8, 16, 64, device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out["autocast_bf16_lstm_output_dtype"] = str(lstm(x)[0].dtype)
    p = harness.Params.from_dict({"framework": "torch", "hidden": 128, "batch": 8, "seq_len": 16, "vocab": 100,
                                  "device": "gpu", "precision": "bf16"})
    model = _Model(harness.make_weights(p), "fused", bf16=True).to(dev)
    tokens = torch.randint(0, 100, (8, 16), device=dev)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(tokens)
    out["workload_explicit_bf16_lstm_output_dtype"] = str(model.lstm_dtype)
    out["workload_explicit_bf16_lstm_weights_dtype"] = str(model.lstm_weights_dtype)
    return out


PROBES = {"frameworks": frameworks, "nvml": nvml, "bf16": bf16}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in PROBES:
        print(f"usage: gpu_check_probes.py {{{','.join(PROBES)}}}", file=sys.stderr)
        return 2
    doc = _guard(PROBES[argv[0]])
    print(json.dumps(doc, indent=1, default=str))
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
