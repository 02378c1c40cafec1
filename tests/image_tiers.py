"""Build every real framework image of one flavour on the registry-free stand-in base, measure each build, and run
one tiny CPU cell in each through the docker runner. Used by tests/test_images_cpu.py (default CI, CPU flavour) and
tests/test_images_gpu.py (opt-in, GPU flavour); the measurements go to docs/images.md.

Bytes downloaded are what pip ("Downloading x.whl (423.1 MB)") and apt ("Fetched 41.2 MB") reported in the build
log, so rounded as they print them; sizes are the engine's image sizes.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orchestrator.frameworks import Framework, discover
from orchestrator.images import BuildFailed, build_order, ensure_image
from orchestrator.matrix import load_matrix
from orchestrator.pipeline import run_one
from orchestrator.plan import expand
from orchestrator.runners.docker import DockerRunner
from orchestrator.store import RunStore

ROOT = Path(__file__).resolve().parent.parent
PYTHON_BASE = os.environ.get("LSTM_BENCH_TEST_PYTHON_BASE", "lstm-bench/base:python3.11-slim-bookworm")
BUILD_ARGS = {"BASE_IMAGE": PYTHON_BASE}
_SIZE = re.compile(r"(?:Downloading \S+ \(|Fetched )(\d+(?:\.\d+)?) ?(bytes|B|kB|MB|GB)\b")
_UNIT = {"bytes": 1, "B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}
# Tiny cell, lr 0.5 so one SGD step moves the loss beyond float32 noise (the equivalence probe); CPU.
TINY = {"hidden": [16], "batch": 4, "seq_len": 8, "vocab": 100, "iters": 3, "warmup": 1, "lr": 0.5,
        "device": "cpu", "impls": "default", "timeout_s": 900}


def all_images() -> list[tuple[str, str | None]]:
    return [(n, v) for n, fw in discover(ROOT / "images").items() for v in (fw.meta.variants or [None])]


def make_python_base() -> str:
    """The pip-capable stand-in for python:3.11-slim-bookworm (scripts/make-base-image.sh --python)."""
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "make-base-image.sh"), "--python", PYTHON_BASE],
                          capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        pytest.fail(f"cannot make {PYTHON_BASE}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return PYTHON_BASE


def not_buildable_here(client: Any) -> dict[str, str]:
    """Images whose base (after BUILD_ARGS) is neither on this engine nor replaced by a local stand-in (the tiers
    pull nothing: NGC's bases). Only "no such image" counts; any other error of the engine is raised."""
    from docker.errors import ImageNotFound

    frameworks = discover(ROOT / "images")
    out = {}
    for name, variant in all_images():
        for r in build_order(ROOT, frameworks, [(name, variant)], "cpu", BUILD_ARGS):
            for base in r.bases:
                try:
                    client.images.get(base)
                except ImageNotFound:
                    out[name] = f"base {base} is not on this engine (the image tiers build on local bases, pull none)"
    return out


@dataclass
class Measured:
    tag: str
    image_id: str
    cached: bool
    build_s: float
    downloaded_bytes: int
    size_bytes: int
    own_bytes: int  # the image's size minus its parent's (or its base's): the layers it adds
    parents: list[str] = field(default_factory=list)


def build_all(client: Any, flavour: str, keys: list[tuple[str, str | None]]) -> dict[str, Measured | str]:
    """Build each image (parents first, once) and measure it; a failed build maps to its error text.

    Independent images build at the same time (one's downloads overlap another's installs); each waits only for
    its parents. When the figures are being recorded
    (LSTM_BENCH_IMAGE_FIGURES, for docs/images.md) they build one after the other, so that each time is its own.
    """
    frameworks: dict[str, Framework] = discover(ROOT / "images")
    order = build_order(ROOT, frameworks, keys, flavour, BUILD_ARGS)
    base_size = client.images.get(PYTHON_BASE).attrs["Size"]
    out: dict[str, Measured | str] = {}
    lock = threading.Lock()

    def parent_keys(r: Any) -> list[str]:
        return [p.name + (f"-{v}" if v else "") for p, v in r.parents]

    def build(r: Any) -> None:
        name = r.repo.removeprefix("lstm-bench/")
        if any(isinstance(out.get(p), str) for p in parent_keys(r)):
            result: Measured | str = "parent image failed"
        else:
            result = _measure(client, r, flavour, frameworks, base_size)
        with lock:
            out[name] = result
            _write_figures(out)  # after each image: a long tier stopped half-way keeps what it measured

    if os.environ.get("LSTM_BENCH_IMAGE_FIGURES"):
        for r in order:
            build(r)
        return out
    submitted: dict[str, cf.Future[None]] = {}
    with cf.ThreadPoolExecutor(max_workers=max(1, len(order)), thread_name_prefix="build") as pool:
        for r in order:  # parents come first in `order`, so each one's future exists when a child is submitted
            deps = [submitted[p] for p in parent_keys(r) if p in submitted]
            submitted[r.repo.removeprefix("lstm-bench/")] = pool.submit(_after, deps, build, r)
    for fut in submitted.values():
        fut.result()  # an error of the engine (not a failed build) fails the tier, as it would serially
    return out


def _after(deps: list[cf.Future[None]], fn: Any, *args: Any) -> None:
    for dep in deps:
        dep.result()
    fn(*args)


def _measure(client: Any, r: Any, flavour: str, frameworks: dict[str, Framework], base_size: int) -> Measured | str:
    lines: list[str] = []
    started = time.monotonic()
    try:
        built = ensure_image(client, ROOT, r.framework, r.variant, BUILD_ARGS, 5400, lines.append,
                             flavour=flavour, frameworks=frameworks)
    except BuildFailed as exc:
        return f"{exc}\n{exc.log_tail}"
    size = client.images.get(built.tag).attrs["Size"]
    parent_size = client.images.get(built.parents[0]).attrs["Size"] if built.parents else base_size
    downloaded = sum(float(m.group(1)) * _UNIT[m.group(2)] for line in lines for m in _SIZE.finditer(line))
    return Measured(built.tag, built.image_id, built.cached, round(time.monotonic() - started, 1),
                    int(downloaded), size, size - parent_size, list(built.parents))


def _write_figures(out: dict[str, Measured | str]) -> None:
    figures = os.environ.get("LSTM_BENCH_IMAGE_FIGURES")
    if figures:
        Path(figures).write_text(json.dumps(
            {k: asdict(v) if isinstance(v, Measured) else {"error": v[-2000:]} for k, v in out.items()}, indent=1))


def run_tiny_cell(tmp: Path, name: str, variant: str | None, flavour: str, impl: str = "default") -> dict[str, Any]:
    """One tiny CPU cell of the impl (default: the framework's first) in the image of this flavour, through the
    docker runner."""
    overrides = {**TINY, "frameworks": [{"name": name, **({"variants": [variant]} if variant else {})}],
                 **({"impls": [impl]} if impl != "default" else {})}
    matrix = load_matrix(ROOT / "matrix.yaml", overrides)
    plan = expand(matrix, discover(ROOT / "images"))
    fw = plan.frameworks[name]
    runner = DockerRunner("image-tier", "cpu", matrix.memory, matrix.pids_limit, BUILD_ARGS, 5400, flavour=flavour)
    env = runner.prepare(fw, variant)
    assert env.error is None, env.error
    store = RunStore(tmp / "run")
    store.open_for_run()
    record = run_one(plan, runner, store, "image-tier", plan.cells[0], env, None)
    assert record is not None
    return record.model_dump(mode="json")
