"""Default CI: the CPU flavour of every framework image, built from its real Dockerfile on the registry-free
stand-in for python:3.11-slim-bookworm, and one tiny cell in each through the docker runner, equivalent to the
NumPy reference. A selected image whose base is not on this engine (NGC's: the tier pulls nothing) is skipped by
name on a developer's machine and fails under CI; the default selection has none.

The builds happen once per session (fixture cpu_images); a warm engine finds every image by its tag.

Which images: LSTM_BENCH_CPU_IMAGES=all builds every one (about 90 min cold on a 2-core machine: torch's CPU
flavour alone downloads 2.7 GB, as PyPI has no CPU-only torch); a comma list names some. The default is the
cheapest set that still covers each mechanism (a 2016 row on its own base, a project-image parent and its child,
the oracle), so a fresh CI machine stays within its time budget; the others are reported as skipped, by name.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import missing
from tests.image_tiers import Measured, all_images, build_all, make_python_base, not_buildable_here, run_tiny_cell
from tests.workload_helpers import REL_TOL, reference_losses

# The session fixture's builds count against the first test's limit (the selected CPU images cold, on a
# loaded 2-core machine), not the suite's 900 s.
pytestmark = [pytest.mark.docker, pytest.mark.timeout(5400)]
DEFAULT_SELECTION = ("numpy-reference", "mxnet", "theano", "keras-theano")


def selected() -> set[str] | None:
    """Framework names this session builds (None: all)."""
    wanted = os.environ.get("LSTM_BENCH_CPU_IMAGES", ",".join(DEFAULT_SELECTION)).strip()
    return None if wanted == "all" else {w.strip() for w in wanted.split(",") if w.strip()}


@pytest.fixture(scope="session")
def cpu_images(docker_client: Any) -> tuple[dict[str, Measured | str], dict[str, str]]:
    make_python_base()
    skipped = not_buildable_here(docker_client)
    chosen = selected()
    keys = [k for k in all_images() if k[0] not in skipped and (chosen is None or k[0] in chosen)]
    return build_all(docker_client, "cpu", keys), skipped


def assert_cell_matches_numpy(record: dict[str, Any]) -> None:
    assert record["status"] == "ok", f"{record['status']}: {record['reason']}\n{record.get('log_tail')}"
    doc = record["workload"]
    want_initial, want_after = reference_losses(doc["params"])
    assert doc["loss_initial"] == pytest.approx(want_initial, rel=REL_TOL)
    assert doc["loss_after_one_step"] == pytest.approx(want_after, rel=REL_TOL)


@pytest.mark.parametrize(("name", "variant"), all_images(), ids=lambda x: x or "-")
def test_cpu_image_builds_and_its_tiny_cell_matches_numpy(cpu_images: Any, name: str, variant: str | None,
                                                          tmp_path: Path) -> None:
    built, skipped = cpu_images
    chosen = selected()
    if chosen is not None and name not in chosen:
        pytest.skip(f"{name}: not in this tier's selection (LSTM_BENCH_CPU_IMAGES=all builds every image)")
    if name in skipped:
        missing(f"{name}: {skipped[name]}")
    key = f"{name}-{variant}" if variant else name
    assert isinstance(built[key], Measured), f"{key}: build failed:\n{built[key]}"
    record = run_tiny_cell(tmp_path, name, variant, "cpu")
    assert record["image"]["flavour"] == "cpu" and record["image"]["tag"] == built[key].tag
    assert_cell_matches_numpy(record)


def test_torch_cpu_image_has_what_torchinductor_needs(cpu_images: Any, tmp_path: Path) -> None:
    # Impl compiled in the image: TorchInductor compiles C++ with the image's g++ (OpenMP, Python's headers) into
    # the read-only container's /tmp tmpfs, as user 10001; the cell must be ok and equivalent, not merely built.
    built, skipped = cpu_images
    chosen = selected()
    if chosen is not None and "torch" not in chosen:
        pytest.skip("torch: not in this tier's selection (LSTM_BENCH_CPU_IMAGES=torch adds it: 2.7 GB of wheels)")
    if "torch" in skipped:
        missing(f"torch: {skipped['torch']}")
    assert isinstance(built["torch"], Measured), f"torch: build failed:\n{built['torch']}"
    record = run_tiny_cell(tmp_path, "torch", None, "cpu", impl="compiled")
    assert_cell_matches_numpy(record)
    doc = record["workload"]
    assert doc["impl"] == "compiled" and doc["precision_switches"]["dynamo.unique_graphs"] >= 2, doc

