"""Opt-in tier (LSTM_BENCH_GPU_IMAGES=1): the GPU flavour of every framework image, built from its real Dockerfile
on the registry-free stand-in base (no GPU needed to build), one tiny CPU cell in each (ok and equivalent to the
NumPy reference), and the import of the CUDA build inside it. Downloads many GB; see docs/images.md for the figures
it printed and how to run it:

    LSTM_BENCH_GPU_IMAGES=1 LSTM_BENCH_IMAGE_FIGURES=gpu.json python -m pytest -m gpu_images tests/test_images_gpu.py

LSTM_BENCH_GPU_IMAGES=torch,keras-torch builds only those images (a framework name, or name-variant), and the
project images they start FROM.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.image_tiers import Measured, all_images, build_all, make_python_base, not_buildable_here, run_tiny_cell
from tests.test_images_cpu import assert_cell_matches_numpy

_WANTED = os.environ.get("LSTM_BENCH_GPU_IMAGES", "").strip()
pytestmark = [
    pytest.mark.docker,
    pytest.mark.gpu_images,
    # The session fixture's builds count against the first test's limit (every GPU image cold: an hour
    # or more), not the suite's 900 s.
    pytest.mark.timeout(14400),
    pytest.mark.skipif(not _WANTED or _WANTED == "0",
                       reason="opt-in: LSTM_BENCH_GPU_IMAGES=1 builds every GPU image (many GB of wheels)"),
]


def selected() -> set[str] | None:
    """Framework names to build: LSTM_BENCH_GPU_IMAGES=1 (or all) for every one, else a comma list of names."""
    return None if _WANTED in ("1", "all") else {w.strip() for w in _WANTED.split(",") if w.strip()}


def _chosen(chosen: set[str] | None, name: str, variant: str | None) -> bool:
    return chosen is None or name in chosen or (variant is not None and f"{name}-{variant}" in chosen)

# Proof that the image holds the CUDA build, without a GPU: the framework's own build information.
CUDA_PROBE = {
    "torch": "import torch; assert torch.version.cuda, torch.version.cuda; print('cuda', torch.version.cuda)",
    "tensorflow": "import tensorflow as tf; v = tf.sysconfig.get_build_info()['cuda_version']; assert v; print(v)",
    "jax": "import importlib.metadata as m; print('plugin', m.version('jax-cuda12-plugin'))",
    "pytensor": "import importlib.metadata as m; print('plugin', m.version('jax-cuda12-plugin'))",
    "flax": "import importlib.metadata as m; print('plugin', m.version('jax-cuda12-plugin'))",
    "keras": "import importlib.metadata as m, os; b = os.environ['KERAS_BACKEND']; print(b, m.version("
             "{'torch': 'nvidia-cudnn-cu13', 'jax': 'jax-cuda12-plugin', 'tensorflow': 'nvidia-cudnn-cu12'}[b]))",
    "theano": "import pygpu, ctypes; ctypes.CDLL('libnvrtc.so'); ctypes.CDLL('libcublas.so'); print(pygpu.__version__)",
    "keras-theano": "import pygpu, ctypes; ctypes.CDLL('libnvrtc.so'); print(pygpu.__version__)",
}
# Images whose framework cannot even be loaded without the NVIDIA driver (libmxnet.so links libcuda.so.1), so no
# cell, CPU or GPU, runs on a host without one: the cell must say so (unsupported, naming the library).
NEEDS_DRIVER = {"mxnet": "libcuda.so.1: cannot open shared object file"}
# mxnet's CUDA wheel cannot be imported without the driver: its library links the CUDA 11 runtime, all resolved.
MXNET_LDD = ("lib=/usr/local/lib/python3.11/site-packages/mxnet/libmxnet.so; ldd $lib | grep -q libcudart.so.11.0 "
             "&& ! ldd $lib | grep 'not found' | grep -v libcuda.so.1")


@pytest.fixture(scope="session")
def gpu_images(docker_client: Any) -> tuple[dict[str, Measured | str], dict[str, str]]:
    make_python_base()
    skipped = not_buildable_here(docker_client)
    chosen = selected()
    keys = [k for k in all_images() if k[0] not in skipped and _chosen(chosen, *k)]
    return build_all(docker_client, "gpu", keys), skipped


@pytest.mark.parametrize(("name", "variant"), all_images(), ids=lambda x: x or "-")
def test_gpu_image_builds_runs_a_cpu_cell_and_holds_the_cuda_build(gpu_images: Any, docker_client: Any, name: str,
                                                                   variant: str | None, tmp_path: Path) -> None:
    built, skipped = gpu_images
    if name in skipped:
        pytest.skip(f"{name}: {skipped[name]}")
    chosen = selected()
    if not _chosen(chosen, name, variant):
        pytest.skip(f"{name}: not in LSTM_BENCH_GPU_IMAGES={_WANTED}")
    key = f"{name}-{variant}" if variant else name
    assert isinstance(built[key], Measured), f"{key}: build failed:\n{built[key]}"
    record = run_tiny_cell(tmp_path, name, variant, "gpu")
    assert record["image"]["flavour"] == "gpu" and record["image"]["tag"] == built[key].tag
    if name in NEEDS_DRIVER:
        assert record["status"] == "unsupported" and NEEDS_DRIVER[name] in record["reason"], record["reason"]
    else:
        assert_cell_matches_numpy(record)
    if name == "mxnet":
        cmd = ["/bin/sh", "-c", MXNET_LDD]
    elif name in CUDA_PROBE:
        cmd = ["python3", "-c", CUDA_PROBE[name]]
    else:
        pytest.skip(f"{name}: no CUDA probe known for this image (its cell ran and matched)")
    out = docker_client.containers.run(built[key].tag, entrypoint=cmd, remove=True, network_mode="none",
                                       environment={"HOME": "/tmp"})
    print(key, out.decode().strip())
