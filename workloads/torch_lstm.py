"""PyTorch: Embedding -> LSTM -> last step -> Linear, plain SGD. Model, step and sync only; the rest is the harness.

impl "fused" (default) runs nn.LSTM (cuDNN on GPU, ATen's fused kernel on CPU); "loop" runs nn.LSTMCell's cell
written out with F.linear once per timestep, with the same weights, as a hand-written recurrent loop would;
"compiled" is torch.compile (default mode, TorchInductor) of the whole training step over that same loop.
Why over the loop and not nn.LSTM: Dynamo graph-breaks on nn.RNN/GRU/LSTM modules unless the experimental
torch._dynamo.config.allow_rnn is set (torch/_dynamo/variables/builder.py), so a compiled nn.LSTM step would run the
LSTM itself eagerly and compile only the embedding, the dense layer and SGD around it. What gets compiled: Dynamo
unrolls the timestep loop into one graph of forward and loss, AOTAutograd derives its backward graph, and the
optimizer step is a second graph; `loss.backward()` is a graph break in default mode (Dynamo's trace_autograd_ops is
off), so eager autograd runs the compiled backward as one node. The dynamo counters (graphs, breaks, Inductor cache
hits) are read back with the precision switches, and a step that compiled no graph fails instead of timing eager.
Compilation happens in the first call, i.e. the harness's first probe step, in a fresh Inductor cache per process,
so the compile is cold whatever ran before on the host (unless TORCHINDUCTOR_CACHE_DIR is set: that cache is used).
Precision: every TF32 switch PyTorch has is set explicitly (set_tf32) and read back (read_tf32); bf16 is
torch.autocast(dtype=bfloat16) around the forward pass and the loss, with float32 parameters and SGD (PyTorch's
mixed precision), except the fused LSTM: it gets bfloat16 copies of its weights and input explicitly, outside
autocast, because autocast's cuDNN RNN wrapper casts to float16 whatever autocast's dtype
(aten/src/ATen/cudnn/AutocastRNN.cpp). The read-back adds the dtype the LSTM's weights and output actually had.
"""

# ruff: noqa: E402 (USER_INDUCTOR_CACHE must be read before torch is imported)
from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
from typing import Any

# Read before torch is imported: torch writes its default into TORCHINDUCTOR_CACHE_DIR as soon as anything asks
# for the cache dir (torch/_inductor/runtime/cache_dir_utils.py; creating a torch.optim optimizer does), so by
# build() the variable is set whether or not the user set it.
USER_INDUCTOR_CACHE = os.environ.get("TORCHINDUCTOR_CACHE_DIR")

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from workloads import harness

IMPLS = ("fused", "loop", "compiled")
# PyTorch's TF32 switches (the fp32_precision API of 2.9+; mixing it with the older allow_tf32 flags raises).
TF32_SWITCHES = ("cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn")


def _backend(torch: Any, path: str) -> Any:
    obj = torch.backends
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def set_tf32(torch: Any, on: bool) -> None:
    """Allow (tf32) or forbid (ieee) TF32 in every cuBLAS/cuDNN path, and keep oneDNN's float32 exact on a CPU."""
    os.environ.pop("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", None)  # would force TF32 on whatever is set below
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        for path in TF32_SWITCHES:
            _backend(torch, path).fp32_precision = "tf32" if on else "ieee"
        torch.backends.mkldnn.fp32_precision = "ieee"
    else:  # before 2.9
        torch.backends.cuda.matmul.allow_tf32 = on
        torch.backends.cudnn.allow_tf32 = on


def read_tf32(torch: Any) -> tuple[bool, dict[str, Any]]:
    """(does any cuBLAS/cuDNN path allow TF32, the switches as PyTorch reports them)."""
    if hasattr(torch.backends.cuda.matmul, "fp32_precision"):
        switches = {f"{p}.fp32_precision": _backend(torch, p).fp32_precision for p in TF32_SWITCHES}
        switches["mkldnn.fp32_precision"] = torch.backends.mkldnn.fp32_precision
        tf32 = any(v == "tf32" for k, v in switches.items() if not k.startswith("mkldnn"))
    else:
        switches = {"cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                    "cudnn.allow_tf32": torch.backends.cudnn.allow_tf32}
        tf32 = any(switches.values())
    switches["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = os.environ.get("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE")
    return tf32 or switches["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] == "1", switches


class _Model(nn.Module):
    """The benchmark's model; every impl but "fused" (loop, compiled) runs the cell written out in forward()."""

    def __init__(self, w: harness.Weights, impl: str, bf16: bool = False) -> None:
        super().__init__()
        self.bf16 = bf16
        vocab, embed = w.embedding.shape
        hidden = w.recurrent_kernel.shape[0]
        self.impl = impl
        self.embedding = nn.Embedding(vocab, embed)
        # Both modules name their tensors weight_ih/weight_hh/bias_ih/bias_hh in the gate order i, f, g, o.
        self.rnn = nn.LSTM(embed, hidden, batch_first=True) if impl == "fused" else nn.LSTMCell(embed, hidden)
        self.dense = nn.Linear(hidden, w.dense_kernel.shape[1])
        suffix = "_l0" if impl == "fused" else ""
        with torch.no_grad():
            self.embedding.weight.copy_(torch.from_numpy(w.embedding))
            getattr(self.rnn, "weight_ih" + suffix).copy_(torch.from_numpy(w.kernel.T))
            getattr(self.rnn, "weight_hh" + suffix).copy_(torch.from_numpy(w.recurrent_kernel.T))
            getattr(self.rnn, "bias_ih" + suffix).copy_(torch.from_numpy(w.bias))
            bias_hh = getattr(self.rnn, "bias_hh" + suffix)
            bias_hh.zero_()
            self.dense.weight.copy_(torch.from_numpy(w.dense_kernel.T))
            self.dense.bias.copy_(torch.from_numpy(w.dense_bias))
        # The benchmark's LSTM has one bias vector; PyTorch always keeps two. Freezing the second at zero keeps
        # the maths and the trainable parameter count identical to every other framework.
        bias_hh.requires_grad_(False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embedding(tokens)
        if self.impl == "fused" and self.bf16:
            # Outside autocast (see the module docstring); the float32 parameters stay the copy SGD updates.
            with torch.autocast(x.device.type, enabled=False):
                weights = {n: q.to(torch.bfloat16) for n, q in self.rnn.named_parameters()}
                self.lstm_weights_dtype = weights["weight_hh_l0"].dtype
                out, _ = functional_call(self.rnn, weights, (x.to(torch.bfloat16),))
            last = out[:, -1]
            self.lstm_dtype = out.dtype
        elif self.impl == "fused":
            self.lstm_weights_dtype = self.rnn.weight_hh_l0.dtype
            out, _ = self.rnn(x)
            last = out[:, -1]
            self.lstm_dtype = out.dtype  # what the recurrent part computed in (the read-back of autocast)
        else:
            # The cell written out with F.linear (what nn.LSTMCell computes, gates i, f, g, o): autocast lowers
            # F.linear to bfloat16, but not the fused lstm_cell op, which would silently stay float32.
            cell = self.rnn
            h = x.new_zeros(x.shape[0], cell.hidden_size)
            c = torch.zeros_like(h)
            for t in range(x.shape[1]):
                z = F.linear(x[:, t], cell.weight_ih, cell.bias_ih) + F.linear(h, cell.weight_hh, cell.bias_hh)
                self.lstm_dtype = z.dtype  # the gate products' dtype (the state stays float32 under autocast)
                i, f, g, o = z.chunk(4, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
            last = h
        return self.dense(last)


class TorchLSTM(harness.Framework):
    name = "torch"
    oom_types = (torch.OutOfMemoryError,)
    # cuDNN/cuBLAS allocation failures arrive as plain RuntimeError: harness.LIBRARY_OOM_MARKERS.
    oom_markers = ("CUDA out of memory", "CUDA error: out of memory")

    def check_device(self) -> None:
        p = self.params
        impl = IMPLS[0] if p.impl == "default" else p.impl
        if impl not in IMPLS:
            raise harness.Unsupported(f"torch workload offers impls {', '.join(IMPLS)}, not {p.impl!r}")
        self.impl_used = impl
        if p.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before CUDA's lazy init: the CPU run must not touch a GPU
            self.device = torch.device("cpu")
            return
        if p.device != "gpu":
            raise harness.Unsupported(f"torch workload supports devices cpu and gpu, not {p.device!r}")
        if not torch.cuda.is_available():
            raise harness.Unsupported(
                f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no usable GPU: "
                "torch.cuda.is_available() is False (no device, or the NVIDIA driver is too old for this CUDA)"
            )
        major, minor = torch.cuda.get_device_capability(0)
        archs = torch.cuda.get_arch_list()
        if not _arch_supported(major * 10 + minor, archs):
            raise harness.Unsupported(
                f"torch {torch.__version__} has no kernels for {torch.cuda.get_device_name(0)} "
                f"(compute capability {major}.{minor}); this build supports {' '.join(archs)}"
            )
        self.device = torch.device("cuda", 0)
        torch.cuda.reset_peak_memory_stats()

    def set_precision(self) -> None:
        p = self.params
        if p.precision == "tf32" and torch.cuda.get_device_capability(0) < (8, 0):
            raise harness.Unsupported(f"TF32 needs compute capability 8.0 or later: {torch.cuda.get_device_name(0)}")
        set_tf32(torch, p.precision == "tf32")  # fp32 and bf16: no TF32 anywhere (bf16 leaves float32 ops exact)
        self.autocast_dtype = torch.bfloat16 if p.precision == "bf16" else None

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        tf32, switches = read_tf32(torch)
        switches["autocast_dtype"] = str(self.autocast_dtype) if self.autocast_dtype else None
        switches["lstm_output_dtype"] = str(self.model.lstm_dtype)
        weights_dtype = getattr(self.model, "lstm_weights_dtype", None)  # fused only: the loop's are autocast's
        switches["lstm_weights_dtype"] = str(weights_dtype) if weights_dtype is not None else None
        if self.impl_used == "compiled":
            # lstm_dtype above is set inside the compiled forward: Dynamo replays that attribute store after every
            # call of the compiled graph, with the dtype the traced graph computes in.
            switches.update(compile_counters())
            # Graphs compiled by the end of the first step: the same count at the end means no step after it
            # (the timed ones included) recompiled; a recompile there would be timed as a step.
            switches["dynamo.unique_graphs_after_first_step"] = self._graphs_after_first_step
        bf16 = self.model.lstm_dtype == torch.bfloat16
        return harness.mode_from(tf32=tf32 and self.device.type == "cuda", bf16=bf16), switches

    def build(self, weights: harness.Weights) -> None:
        self.model = _Model(weights, self.impl_used, bf16=self.autocast_dtype is not None).to(self.device)
        self.trainable = [q for q in self.model.parameters() if q.requires_grad]
        self.opt = torch.optim.SGD(self.trainable, lr=self.params.lr)
        self._step = self._train_step
        if self.impl_used == "compiled":
            fresh_inductor_cache()
            self._compiled = torch.compile(self._train_step)  # default mode, Inductor; compiles on the first call
            self._step = self._first_compiled_step
        if self.autocast_dtype is not None and self.device.type == "cpu" and self.impl_used == "fused":
            # oneDNN's bf16 LSTM needs CPU support (avx512_bf16 / AMX); without it the fused op cannot be built.
            try:
                with torch.no_grad(), torch.autocast("cpu", dtype=self.autocast_dtype):
                    self.model(torch.zeros((1, 2), dtype=torch.long))
            except RuntimeError as exc:
                if "primitive descriptor" not in str(exc):
                    raise
                raise harness.Unsupported(f"torch on this CPU has no bfloat16 fused LSTM (oneDNN: {exc})") from exc

    def canonical_weights(self) -> harness.Weights:
        m, suffix = self.model, "_l0" if self.impl_used == "fused" else ""

        def host(t: torch.Tensor) -> Any:
            return t.detach().float().cpu().numpy()

        return harness.Weights(
            embedding=host(m.embedding.weight),
            kernel=host(getattr(m.rnn, "weight_ih" + suffix)).T,
            recurrent_kernel=host(getattr(m.rnn, "weight_hh" + suffix)).T,
            bias=host(getattr(m.rnn, "bias_ih" + suffix)),
            dense_kernel=host(m.dense.weight).T,
            dense_bias=host(m.dense.bias),
        )

    def prepare(self, tokens: Any, labels: Any) -> Any:
        return (
            torch.from_numpy(tokens).long().to(self.device),
            torch.from_numpy(labels).long().to(self.device),
        )

    def step(self, batch: Any) -> Any:
        return self._step(*batch)

    def _first_compiled_step(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self._compiled(tokens, labels)
        self._graphs_after_first_step = compile_counters()["dynamo.unique_graphs"]
        if self._graphs_after_first_step < 1:
            raise RuntimeError("torch.compile compiled no graph of the training step: it would time eager PyTorch")
        self._step = self._compiled  # checked once: the timed steps call the compiled step directly
        return loss

    def _train_step(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                            enabled=self.autocast_dtype is not None):
            loss = F.cross_entropy(self.model(tokens), labels)  # autocast computes the loss in float32
        loss.backward()
        self.opt.step()
        return loss.detach()  # stays on the device: reading it here would add a sync to every step

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def loss_value(self, loss: Any) -> float:
        return float(loss.item())

    def param_count(self) -> int:
        return sum(q.numel() for q in self.trainable)

    def peak_memory_bytes(self) -> int | None:
        return int(torch.cuda.max_memory_allocated(self.device)) if self.device.type == "cuda" else None

    def versions(self) -> dict[str, str | None]:
        v = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
        # cuDNN 9 encodes 10000 * major + 100 * minor + patch (92000 -> 9.20.0)
        cudnn = f"{v // 10000}.{v % 10000 // 100}.{v % 100}" if v and v >= 90000 else (str(v) if v else None)
        return {"framework": torch.__version__, "cuda": torch.version.cuda, "cudnn": cudnn}

    def device_name(self) -> str | None:
        if getattr(self, "device", None) is not None and self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return "cpu"


def fresh_inductor_cache() -> None:
    """Point TorchInductor (and Triton under it) at a new empty cache for this process, removed at exit: a warm
    cache left by an earlier cell would turn the compile into a cache load, and the first step's time would depend
    on what ran before. An explicit TORCHINDUCTOR_CACHE_DIR is the user's choice and is kept.

    The process's temporary directory moves there too: Inductor keeps its precompiled C++ headers under
    tempfile.gettempdir(), not under its cache dir (torch/_inductor/codecache.py _HEADER_DIR, computed when that
    module is first imported, i.e. at the first compile), and the compiler's and compile workers' files follow TMPDIR.
    """
    if USER_INDUCTOR_CACHE:
        return
    path = tempfile.mkdtemp(prefix="lstm-bench-inductor-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.environ["TMPDIR"] = tempfile.tempdir = path


def compile_counters() -> dict[str, int]:
    """What torch.compile did in this process, from Dynamo's own counters: graphs compiled, graph breaks, and
    Inductor's FX-graph cache hits (0 on a cold cache)."""
    from torch._dynamo.utils import counters

    return {
        "dynamo.unique_graphs": int(counters["stats"]["unique_graphs"]),
        "dynamo.graph_breaks": int(sum(counters["graph_break"].values())),
        "inductor.fxgraph_cache_hit": int(counters["inductor"]["fxgraph_cache_hit"]),
    }


def _arch_supported(capability: int, archs: list[str]) -> bool:
    """Whether the build can run on this compute capability (e.g. 86 for 8.6).

    SASS for sm_XY runs on X.Y and on later minors of the same major (arch-specific sm_XYa only on X.Y itself);
    PTX (compute_XY) is JIT-compiled by the driver for any capability at or above X.Y.
    """
    for arch in archs:
        m = re.fullmatch(r"(sm|compute)_(\d+)([a-z]?)", arch)
        if not m:
            continue
        kind, cc, special = m.group(1), int(m.group(2)), m.group(3)
        if kind == "compute" and cc <= capability:
            return True
        if kind == "sm" and (cc == capability or (not special and cc // 10 == capability // 10 and cc < capability)):
            return True
    return False


if __name__ == "__main__":
    raise SystemExit(harness.run(TorchLSTM))
