"""Shared fixtures: the real Docker engine, the locally made base image, throw-away copies of the project."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = os.environ.get("LSTM_BENCH_TEST_BASE", "lstm-bench/base:bookworm-numpy")
BUILD_ARG = f"BASE_IMAGE={BASE_IMAGE}"
FIXTURES = ROOT / "tests" / "fixtures"
# Tiny sizes keep every cell well under a second on two cores.
# repeats=1: a test cell runs once (matrix.yaml's main job reruns each cell in 3 fresh processes).
TINY = ["--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=5", "--set", "warmup=1",
        "--set", "repeats=1"]


# CI installs every prerequisite itself (.ci/run): there, one that is missing is a failure, never a skip that would
# leave the tests needing it green. A developer's machine without it skips, naming what is missing.
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def missing(reason: str, module_level: bool = False) -> NoReturn:
    """A prerequisite this machine lacks: fail under CI, skip elsewhere (with the reason either way)."""
    if IN_CI:
        pytest.fail(f"{reason} (CI is set: a missing prerequisite fails)", pytrace=False)
    pytest.skip(reason, allow_module_level=module_level)


# CI's lanes (.ci/run): the load-tolerant image tiers, and the other engine-bound modules that build and run images
# (build constraints, the capacity search's real-engine probes), run beside the rest (marker `images`); the tests
# whose assertions depend on timing or on a quiet host run alone afterwards (marker `timing`). Any other module, a new
# one included, is in the main lane: the three `-m` selections cover every test exactly once. The Theano family's
# cells (test_workloads_b: cold C and numba compiles, ~4 min from fresh) go beside the image builds, which wait on the
# network much of the time, so that the two lanes end together (fresh, measured: images 696 s, main 1195 s before;
# then images 1196 s, main 992 s, so TensorFlow's precision cases moved back, in test_workloads_tensorflow: 1177 s and
# 1154 s). Both lanes are CPU-bound on a 2-core machine now: a shorter CI needs less CPU work, not another split.
IMAGES_LANE = {"test_images", "test_images_cpu", "test_images_gpu", "test_build_constraints", "test_capacity",
               "test_workloads_b"}
TIMING_LANE = {"test_machine", "test_machine_real", "test_scheduler", "test_ray", "test_faults", "test_hardening"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = Path(str(item.fspath)).stem
        if module in IMAGES_LANE:
            item.add_marker(pytest.mark.images)
        elif module in TIMING_LANE:
            item.add_marker(pytest.mark.timing)


def _engine() -> object | None:
    try:
        import docker

        client = docker.from_env(timeout=30)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture(scope="session")
def docker_client() -> object:
    client = _engine()
    if client is None:
        missing("no reachable Docker engine (DOCKER_HOST / /var/run/docker.sock)")
    return client


@pytest.fixture(scope="session")
def base_image(docker_client: object) -> str:
    """The registry-free base image (Debian + python3 + numpy), made by the documented script when absent."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "make-base-image.sh"), BASE_IMAGE], capture_output=True, text=True, timeout=900
    )
    if proc.returncode != 0:
        pytest.fail(f"cannot make base image {BASE_IMAGE}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return BASE_IMAGE


def copy_project(dest: Path, extra_frameworks: dict[str, Path] | None = None) -> Path:
    """A runnable copy of the project (orchestrator, workloads, numpy-reference) with extra framework folders.

    Each extra framework folder may hold `workload.py`; it is installed as workloads/<name with - as _>.py.
    """
    dest.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("orchestrator", "workloads", "scripts"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore, dirs_exist_ok=True)
    shutil.copytree(ROOT / "images" / "numpy-reference", dest / "images" / "numpy-reference", dirs_exist_ok=True)
    shutil.copy(ROOT / "images" / "tail.Dockerfile", dest / "images" / "tail.Dockerfile")  # the shared image tail
    shutil.copy(ROOT / "matrix.yaml", dest / "matrix.yaml")
    for name, source in (extra_frameworks or {}).items():
        target = dest / "images" / name
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("workload.py", "__pycache__"))
        if (source / "workload.py").is_file():
            shutil.copy(source / "workload.py", dest / "workloads" / f"{name.replace('-', '_')}.py")
    return dest


@pytest.fixture
def project_copy(tmp_path: Path) -> Callable[..., Path]:
    def make(extra: dict[str, Path] | None = None) -> Path:
        return copy_project(tmp_path / "project", extra)

    return make


def default_signals() -> None:
    """preexec_fn for every CLI the tests start: default signal dispositions, whatever pytest inherited (a shell's
    background job starts with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_cli(
    args: list[str], cwd: Path = ROOT, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m orchestrator ARGS` as a user runs it, in `cwd` (whose orchestrator/ is the one imported)."""
    environ = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=default_signals,
    )


# Every container the test session causes carries this label (runners/docker.py SESSION_LABEL), so the check
# below sees only this session's containers, not those of another run sharing the engine.
SESSION = f"pytest-{os.getpid()}-{uuid.uuid4().hex[:8]}"
os.environ["LSTM_BENCH_SESSION"] = SESSION


@pytest.fixture(scope="session", autouse=True)
def no_container_left_behind() -> Iterator[None]:
    """After the whole session, no container with the project's label may remain."""
    yield
    client = _engine()
    if client is None:
        return
    left = client.containers.list(  # type: ignore[attr-defined]
        all=True, filters={"label": f"lstm-bench.session={SESSION}"}, ignore_removed=True
    )
    names = [c.name for c in left]
    for c in left:
        with contextlib.suppress(Exception):
            c.remove(force=True)
    assert not names, f"containers left behind by the tests: {names}"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A real, empty image registry on localhost (Debian's docker-registry); Docker trusts 127.0.0.1 without TLS."""
    import socket
    import time

    import requests

    exe = shutil.which("docker-registry")
    if exe is None:
        missing("no local registry binary: apt-get install docker-registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "registry.yml"
    config.write_text(f"version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: {tmp_path / 'blobs'}\n"
                      f"http:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert proc.poll() is None, "the registry exited at start-up"
            assert time.monotonic() < deadline, "timed out waiting for the registry"
            time.sleep(0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
