"""Every framework folder under images/ with CPU requirements, found by discovery (no list to edit): a tiny cell
on the CPU matches the NumPy reference, and a GPU cell on this GPU-less machine is `unsupported` with a reason.

A framework dropped in (docs/adding-a-framework.md) is tested here as soon as it has `requirements-cpu.txt`; one
made by `python -m orchestrator new` fails here with "not implemented yet" until its methods are written.
The first run installs each framework's cached environment (tests/workload_helpers.py venv_python).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.frameworks import NAME_RE
from tests.workload_helpers import (
    assert_ok_and_equivalent,
    cell_params,
    cpu_cases,
    framework,
    run_cell,
)

# Only speed, not selection: Theano's C back-end compiles for up to a minute and a half on a cold cache.
SLOW = {"theano", "keras-theano"}
CASES = [
    pytest.param(name, variant, id=f"{name}-{variant}" if variant else name,
                 marks=[pytest.mark.slow] if name in SLOW else [])
    for name, variant in cpu_cases()
]


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_tiny_cpu_cell_matches_numpy_reference(name: str, variant: str | None, tmp_path: Path) -> None:
    doc, _ = run_cell(name, tmp_path, variant)
    assert_ok_and_equivalent(doc, cell_params(name, variant))
    declared = framework(name).meta.impls
    # The impl that ran, named by the workload: a declared framework never leaves it at "default".
    assert isinstance(doc["impl"], str) and NAME_RE.match(doc["impl"]), doc["impl"]
    assert doc["impl"] != "default" or not declared
    assert doc["device"] == {"kind": "cpu", "name": "cpu"}
    assert doc["peak_memory_bytes"] is None  # no framework exposes a CPU peak; a number here would be made up


@pytest.mark.parametrize(("name", "variant"), CASES)
def test_gpu_cell_without_a_gpu_is_unsupported_with_a_reason(name: str, variant: str | None, tmp_path: Path) -> None:
    doc, _ = run_cell(name, tmp_path, variant, device="gpu")
    assert doc["status"] == "unsupported", doc["_log"]
    assert any(word in doc["message"].lower() for word in ("gpu", "cuda")), doc["message"]
    assert doc["loss_initial"] is None and doc["times_ms"] == []


def test_discovery_finds_every_framework_with_cpu_requirements() -> None:
    found = {name for name, _ in cpu_cases()}
    on_disk = {p.parent.name for p in (Path(__file__).parent.parent / "images").glob("*/requirements-cpu*.txt")}
    assert found == on_disk and "flax" in found
