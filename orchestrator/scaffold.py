"""`python -m orchestrator new NAME`: the files of a new framework, each method to fill in saying what and why.

Writes images/NAME/{Dockerfile, framework.yaml, requirements-gpu.txt, requirements-cpu.txt, build-constraints.txt}
and workloads/NAME_lstm.py (NAME with '-' and '.' -> '_'). The result passes `python -m orchestrator.dockerfile_check
--offline NAME` at once and runs: every cell reports `unsupported` with "not implemented yet" until the methods
are written. A method whose body is harness.Framework's default says so: deleting it changes nothing.
docs/adding-a-framework.md is the guide to filling them in.
"""

from __future__ import annotations

import re
from pathlib import Path

from orchestrator.errors import InputError
from orchestrator.frameworks import check_name

# The scaffold pins NumPy as the numpy-reference image does, so a new image starts from a pin that is known to resolve.
NUMPY_SOURCE = Path("images") / "numpy-reference" / "requirements-gpu.txt"
PYTHON = "3.11"
BASE_IMAGE = "python:3.11.10-slim-bookworm"


def module_name(name: str) -> str:
    return re.sub(r"[-.]", "_", name) + "_lstm"


def class_name(name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-._]", name) if part) + "LSTM"


def _numpy_pin(root: Path) -> str:
    for line in (root / NUMPY_SOURCE).read_text().splitlines():
        if line.strip().lower().startswith("numpy=="):
            return line.strip()
    raise InputError(f"{root / NUMPY_SOURCE}: no numpy== pin to start the new requirements from")


def dockerfile(name: str, module: str) -> str:
    return f"""\
# {name}: <framework and version>, <what runs: e.g. its fused LSTM layer>; workloads/{module}.py.
#
# CUDA / cuDNN: <how the image gets them: pinned nvidia-*-cu12 wheels, or a CUDA base image>.
# GPU architectures: <the oldest and newest compute capability the pinned build has kernels for>.
# Known limits: <precision switches set, what cannot run where; say it here and in framework.yaml's note>.
# System packages: slim bases lack some shared libraries frameworks load (e.g. libgomp1 for OpenMP); add them with
#   RUN apt-get update && apt-get install -y --no-install-recommends <pkg> && rm -rf /var/lib/apt/lists/*
ARG BASE_IMAGE={BASE_IMAGE}
FROM ${{BASE_IMAGE}}
# FLAVOUR=gpu (default) installs requirements-gpu.txt, FLAVOUR=cpu (--device cpu) requirements-cpu.txt.
ARG FLAVOUR=gpu
COPY images/{name}/requirements-${{FLAVOUR}}.txt images/{name}/build-constraints.txt /opt/lstm-bench/
# build-constraints.txt pins the tools pip builds sdists with: pip < 25.3 applies PIP_CONSTRAINT to its isolated
# builds (and to the install: keep a package pinned in both at the same version), pip >= 25.3 PIP_BUILD_CONSTRAINT.
RUN PIP_CONSTRAINT=/opt/lstm-bench/build-constraints.txt PIP_BUILD_CONSTRAINT=/opt/lstm-bench/build-constraints.txt \
    python3 -m pip install --no-cache-dir -r /opt/lstm-bench/requirements-${{FLAVOUR}}.txt
# The rest (user, workload files, import smoke test, ENTRYPOINT) is images/tail.Dockerfile, appended by the
# orchestrator because this file has no ENTRYPOINT.
"""


def framework_yaml(name: str, module: str) -> str:
    return f"""\
# Every key: docs/adding-a-framework.md ("framework.yaml"). Unknown keys are refused.
# The report's row:
label: {name}
# The module under workloads/ (the default would be the folder name with '-' -> '_'):
workload: {module}
# The image's Python; the static check resolves the pins for it:
python: "{PYTHON}"
# The paths the workload offers; the first is what a matrix's `impls: default` runs (uncomment and name yours),
# and one line each on what it runs (the report's "Impls" legend):
# impls: [fused, loop]
# impl_notes:
#   fused: "<the fused layer, e.g. cuDNN's LSTM on a GPU>"
#   loop: "<the per-timestep loop>"
# One image per variant, each built with --build-arg VARIANT=<variant>:
# variants: [a, b]
# Only if this framework continues a row of the 2016 table:
# original_row: <2016 row>
note: >-
  Beyond the original table. <one or two sentences: what runs, which GPUs, which driver>.
"""


def requirements(numpy_pin: str, what: str) -> str:
    return f"""\
# {what}: every package pinned with ==, the complete resolution of a clean install as `pip freeze --all` or
# `uv pip freeze` lists it (plain `pip freeze` leaves out setuptools, which a framework importing pkg_resources
# must pin), numpy included.
{numpy_pin}
"""


BUILD_CONSTRAINTS = """\
# The versions of the tools that build this framework's sdists (pip/uv constraints format, one `name==version` a
# line), applied by the local runner (uv --build-constraint) and the Dockerfile (PIP_CONSTRAINT,
# PIP_BUILD_CONSTRAINT). Needed only for a package PyPI ships as an sdist whose setup.py needs an old tool, e.g.
# `import pkg_resources` (gone from setuptools 81): setuptools==73.0.1. docs/adding-a-framework.md, "Build
# constraints".
"""


def workload(name: str, module: str, cls: str) -> str:
    def todo(method: str) -> str:
        return f'harness.NotImplementedYet(f"{{self.name}}: {method}() not implemented yet (workloads/{module}.py)")'

    return f'''\
"""{name}: Embedding -> LSTM -> last step -> Dense, plain SGD (docs/adding-a-framework.md says exactly what).

Written by `python -m orchestrator new {name}`. Every method below raises NotImplementedYet until it is filled in,
so a cell of this framework reports `unsupported` ("not implemented yet") rather than a number. The harness
(workloads/harness.py) does everything else: arguments, seeded data and weights, the timing loop, the JSON.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Import the framework here, at the top: the image's build-time smoke step (`python3 -c "import workloads.{module}"`)
# then proves it imports. At run time an import failure writes no result.json; the orchestrator classifies the cell
# `crashed` with the exit code and the last line of stderr (e.g. "ModuleNotFoundError: No module named ...").
# import myframework

from workloads import harness


class {cls}(harness.Framework):
    name = "{name}"
    # Exception types that mean "the device ran out of memory" (matched with isinstance) -> status `oom`.
    oom_types: tuple[type[BaseException], ...] = ()
    # Substrings of the message, for frameworks whose OOM has a generic exception type (e.g. XLA's).
    oom_markers: tuple[str, ...] = ()

    def check_device(self) -> None:
        """Refuse, with harness.Unsupported(reason), a cell this process cannot run; pick the device and impl.

        Why: a cell that cannot run must say why ("unsupported"), not crash or quietly run on the CPU. Check
        self.params.device ("cpu" or "gpu") for real (ask the framework for a GPU; check the wheel has kernels
        for it); check self.params.impl against the impls in framework.yaml ("default" = the first) and set
        self.impl_used to the path that will really run (it becomes the record's impl).
        Deleting this method restores harness.Framework's default: CPU only (a GPU cell is `unsupported`), impl
        as requested; right for a CPU-only framework (its requirements-gpu.txt then repeats requirements-cpu.txt).
        """
        raise {todo("check_device")}

    def set_precision(self) -> None:
        """Set, explicitly, every switch that decides the arithmetic of self.params.precision (called after
        check_device, before build): "fp32" (true FP32: TF32 off), "tf32", "bf16" (the framework's idiomatic mixed
        precision). Raise harness.Unsupported(reason) for a precision this framework or device cannot run.

        Why: defaults differ between frameworks and GPU generations (TF32 is on by default in some); a number is
        only comparable when every framework did the arithmetic its label says. The switches per framework are in
        docs/adding-a-framework.md ("Precision"). This body is harness.Framework's default (float32 only, any
        other precision `unsupported`): keep it, or delete the method, for a framework with no TF32/bf16 path.
        """
        super().set_precision()

    def precision_readback(self) -> tuple[str, dict[str, Any]]:
        """(the mode the framework reports it ran: "fp32", "tf32" or "bf16"; the raw switches and dtypes read),
        read back from the framework after the timed steps, never copied from self.params.

        Why: a cell whose read-back differs from the request is invalid-output, so a switch that did not take
        cannot label a number with the wrong precision. This body is harness.Framework's default ("fp32", no
        switches), true only with the default set_precision; harness.mode_from(tf32=..., bf16=...) turns read-back
        switches into the mode.
        """
        return super().precision_readback()

    def build(self, weights: harness.Weights) -> None:
        """Build the model and optimizer from `weights` (NumPy float32, canonical layout), on the device.

        Why: every framework starts from the same numbers, so the losses can be compared with the NumPy
        reference. Layout: x @ kernel, gates in the order i, f, g, o, ONE bias of 4H (a layer with two biases
        keeps the second at zero and never updates it), dense_kernel [H, classes]. Plain SGD with lr =
        self.params.lr, no momentum, no weight decay, no gradient clipping.
        """
        raise {todo("build")}

    def param_count(self) -> int:
        """The trainable parameters, counted by the framework (harness.expected_param_count must agree).

        Why: a wrong count means a different model (a second bias counted, a missing dense bias). A frozen
        second LSTM bias is not trainable, so it is not counted.
        """
        raise {todo("param_count")}

    def canonical_weights(self) -> harness.Weights:
        """The current parameters, copied to the host as NumPy float32 arrays in the canonical layout of
        harness.Weights (build()'s layout conversion, inverted: transpose back, concatenate per-gate tensors in
        the order i, f, g, o; float32 master weights under bf16). Untimed: called once, after the first probe step.

        Why: the harness fingerprints each tensor's change in that step and the report checks it against the NumPy
        reference's, tensor by tensor: a tensor left un-updated, or updated with a wrong scale, is ✗ by name.
        """
        raise {todo("canonical_weights")}

    def prepare(self, tokens: np.ndarray, labels: np.ndarray) -> Any:
        """Move one batch (int32 token ids [batch, seq_len], int32 labels [batch]) to the device; untimed.

        Why: the timed loop must measure training, not host-to-device copies. Return whatever step() takes.
        """
        raise {todo("prepare")}

    def step(self, batch: Any) -> Any:
        """One training step on `batch`: forward, loss, backward, one SGD update. Return the pre-update loss.

        Why: this is what is timed. The loss is the mean cross-entropy over the batch of the last timestep's
        logits; the LSTM starts from zero h and c. Return the loss without copying it to the host (a device
        array is fine): loss_value() converts it, outside the timed region.
        """
        raise {todo("step")}

    def sync(self) -> None:
        """Block until every piece of device work queued so far has finished.

        Why: GPU frameworks return before the work is done; without a real sync the timer measures the launch.
        On a CPU-only framework with eager execution this may do nothing.
        """
        raise {todo("sync")}

    def loss_value(self, loss: Any) -> float:
        """The Python float of a loss step() returned (called outside the timed loop)."""
        raise {todo("loss_value")}

    def versions(self) -> dict[str, str | None]:
        """{{"framework": its version}} and, where the framework exposes them, "cuda" and "cudnn".

        Why: every number in the report names the exact versions that produced it (the manifest shows these).
        """
        raise {todo("versions")}

    def device_name(self) -> str | None:
        """The device the cell ran on: the GPU's name (e.g. "NVIDIA H100 80GB HBM3"), or "cpu"."""
        raise {todo("device_name")}

    def peak_memory_bytes(self) -> int | None:
        """Peak device memory of the run in bytes where the framework exposes it, else None (never a guess)."""
        return None


if __name__ == "__main__":
    raise SystemExit(harness.run({cls}))
'''


def create(root: Path, name: str) -> list[Path]:
    """Write the new framework's files under `root`; refuse (InputError) to overwrite anything."""
    check_name(name)
    module, cls = module_name(name), class_name(name)
    folder = root / "images" / name
    numpy_pin = _numpy_pin(root)
    files = {
        folder / "Dockerfile": dockerfile(name, module),
        folder / "framework.yaml": framework_yaml(name, module),
        folder / "requirements-gpu.txt": requirements(numpy_pin, "The GPU image's packages"),
        folder / "requirements-cpu.txt": requirements(numpy_pin, "The CPU image's and the local runner's environment"),
        folder / "build-constraints.txt": BUILD_CONSTRAINTS,
        root / "workloads" / f"{module}.py": workload(name, module, cls),
    }
    existing = [str(p.relative_to(root)) for p in files if p.exists()]
    if folder.exists() or existing:
        raise InputError(f"{folder.relative_to(root)}: already exists; `new` never overwrites ({', '.join(existing)})")
    folder.mkdir(parents=True)
    for path, text in files.items():
        path.write_text(text)
    return list(files)
