"""The GPU images' fixes that a CPU machine can check (issue 18, items 2, 11, 15): what the Dockerfiles install and
link, the loader behaviour the libcuda.so links rely on, and the CUDA 12 / cuDNN 9 names mxnet-ngc's versions need.
Building these images needs CUDA wheels of GBs (and nvcr.io for mxnet-ngc): the GPU image tier builds them."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.images import parse_dockerfile
from tests.conftest import ROOT
from workloads.mxnet_lstm import CUDART_NAMES, CUDNN_NAMES, cudnn_version_text

DRIVER_LIBS = ("/usr/lib/x86_64-linux-gnu/libcuda.so.1", "/usr/lib64/libcuda.so.1")  # Debian/Ubuntu, RHEL hosts


def _instructions(name: str) -> list[tuple[str, str]]:
    return [(i.keyword, i.args) for i in parse_dockerfile((ROOT / "images" / name / "Dockerfile").read_text())]


def _libcuda_layout(name: str) -> tuple[dict[str, str], list[str]]:
    """The image's libcuda.so links (link -> target) and its LD_LIBRARY_PATH."""
    text = " ".join(args for keyword, args in _instructions(name) if keyword == "RUN")
    links = {m.group(2): m.group(1) for m in re.finditer(r"ln -s (\S*libcuda\.so\.1) (\S+/libcuda\.so)\b", text)}
    env = " ".join(args for keyword, args in _instructions(name) if keyword == "ENV")
    path = re.search(r"LD_LIBRARY_PATH=(\S+)", env)
    return links, (path.group(1).split(":") if path else [])


def test_theanos_gpu_flavour_installs_the_gpuarray_headers_and_library() -> None:
    run = next(args for keyword, args in _instructions("theano") if keyword == "RUN" and "python3-pygpu" in args)
    gpu_branch = run.split('if [ "$FLAVOUR" = gpu ]; then', 1)[1].split("fi", 1)[0]
    assert "libgpuarray-dev" in gpu_branch.replace(";", " ").split()  # <gpuarray/*.h> and libgpuarray.so for -lgpuarray
    assert ("FROM", "lstm-bench/theano") in _instructions("keras-theano")  # keras-theano inherits them


@pytest.mark.parametrize("name", ["theano", "mxnet"])
def test_libcuda_so_resolves_on_either_host_layout(name: str, tmp_path: Path) -> None:
    """The images link libcuda.so to where the toolkit mounts libcuda.so.1; replayed under a temporary root, the
    real dynamic loader finds it with the image's LD_LIBRARY_PATH for each host layout (a dangling link is skipped)."""
    links, path = _libcuda_layout(name)
    assert set(links.values()) == set(DRIVER_LIBS), links
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler for the stand-in libcuda.so.1")
    lib = tmp_path / "fake.so"
    src = tmp_path / "fake.c"
    src.write_text("int cuInit(unsigned flags) { (void)flags; return 0; }\n")
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=120)
    for host_lib in DRIVER_LIBS:
        root = tmp_path / Path(host_lib).parent.name
        for link, target in links.items():
            (root / link.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            (root / link.lstrip("/")).symlink_to(root / target.lstrip("/"))
        (root / host_lib.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(lib, root / host_lib.lstrip("/"))  # the toolkit's mount, on this host layout only
        dirs = [str(root / d.lstrip("/")) for d in path if d.startswith("/opt/cuda-links")]
        proc = subprocess.run([sys.executable, "-c", "import ctypes; print(ctypes.CDLL('libcuda.so').cuInit(0))"],
                              env={"LD_LIBRARY_PATH": ":".join(dirs)}, capture_output=True, text=True, timeout=60)
        assert proc.stdout.strip() == "0", (host_lib, proc.stderr)


def test_mxnet_ngc_runs_the_workload_through_ngcs_entrypoint() -> None:
    entry = [json.loads(args) for keyword, args in _instructions("mxnet-ngc") if keyword == "ENTRYPOINT"]
    assert entry == [["/opt/nvidia/nvidia_entrypoint.sh", "python3", "-m", "workloads.mxnet_lstm"]]
    assert [args for keyword, args in _instructions("mxnet-ngc") if keyword == "USER"][-1] == "10001"


def test_mxnet_asks_cuda_12_and_cudnn_9_libraries_too() -> None:
    assert CUDART_NAMES[0] == "libcudart.so.12" and "libcudart.so.11.0" in CUDART_NAMES  # NGC 24.06, PyPI cu117
    assert CUDNN_NAMES == ("libcudnn.so.9", "libcudnn.so.8")
    assert cudnn_version_text(90100) == "9.1.0"
    assert cudnn_version_text(8500) == "8.5.0"
