"""GPU discovery and reads through the real nvidia-ml-py bindings, against a fake libnvidia-ml.so.1 compiled here
(tests/fixtures/fake_nvml/fake_nvml.c: a GPU, a cgroup-hidden one, a MIG-mode one, a lost one)."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import gpus, scheduler
from orchestrator.errors import InputError
from orchestrator.machine import gpu
from orchestrator.machine.cell import CellProcess, CellSampling
from orchestrator.runners.base import Environment
from orchestrator.runners.local import LocalRunner, python_path
from tests.conftest import FIXTURES

pynvml = pytest.importorskip("pynvml")
SOURCE = FIXTURES / "fake_nvml" / "fake_nvml.c"
H200 = "GPU-00000000-0000-0000-0000-0000000000a0"
MIG_3G = "MIG-00000000-0000-0000-0000-0000000000b0"
MIG_1G = "MIG-00000000-0000-0000-0000-0000000000b3"


@pytest.fixture(scope="module")
def fake_libs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        if os.environ.get("CI"):
            pytest.fail("no C compiler to build the fake NVML library")
        pytest.skip("no C compiler to build the fake NVML library")
    out = tmp_path_factory.mktemp("nvml")
    libs = {}
    for variant, flags in (("current", []), ("old-driver", ["-DNO_EVENT_REASONS"])):
        (out / variant).mkdir()
        lib = out / variant / "libnvidia-ml.so.1"
        subprocess.run([cc, "-shared", "-fPIC", "-O1", *flags, "-o", str(lib), str(SOURCE)], check=True, timeout=120)
        libs[variant] = lib
    return libs


@pytest.fixture
def use_lib(monkeypatch: pytest.MonkeyPatch, fake_libs: dict[str, Path]) -> Iterator[Callable[[str], None]]:
    """Point pynvml's own loader (CDLL("libnvidia-ml.so.1")) at a fake library, starting from an unloaded state."""

    def use(variant: str) -> None:
        real_cdll = ctypes.CDLL
        monkeypatch.setattr(pynvml, "CDLL", lambda name, *a, **k: real_cdll(
            str(fake_libs[variant]) if name == "libnvidia-ml.so.1" else name, *a, **k))
        monkeypatch.setattr(pynvml, "nvmlLib", None)
        monkeypatch.setattr(pynvml, "_nvmlGetFunctionPointer_cache", {})
        monkeypatch.setattr(pynvml, "_nvmlLib_refcount", 0)

    yield use


def test_unreadable_gpus_are_left_out_with_the_reason_and_mig_devices_are_the_slots(use_lib: Any) -> None:
    use_lib("current")
    found = gpus.discover()
    assert found.source == "nvml"
    assert [(g.index, g.uuid, g.parent) for g in found.gpus or []] == [
        ("0", H200, None), ("2:0", MIG_3G, "2"), ("2:3", MIG_1G, "2"),
    ]
    assert found.problems == ("GPU 1: Insufficient Permissions (NVML)", "GPU 3: GPU is lost (NVML)")
    # Cells get UUIDs, never indices; a MIG-mode GPU's index means its MIG devices.
    assert gpus.select("all", found) == [H200, MIG_3G, MIG_1G]
    assert gpus.select([2], found) == [MIG_3G, MIG_1G]
    with pytest.raises(InputError, match=r"GPU 1 not found; usable: GPU 0, 2:0, 2:3 \(asked nvml; GPU 1: Insuff"):
        gpus.select([1], found)


def test_facts_keep_the_readable_gpus_and_say_why_one_is_not(use_lib: Any) -> None:
    use_lib("current")
    facts = gpu.facts()
    assert isinstance(facts, list) and [f["index"] for f in facts] == ["0", "1", "2", "3"]
    assert facts[0]["name"] == "NVIDIA H200" and facts[0]["uuid"] == H200 and facts[0]["driver"] == "580.95.05"
    assert facts[1] == {"index": "1", "unavailable": "unavailable: Insufficient Permissions"}
    assert facts[2]["mig_mode"] is True
    assert [m["uuid"] for m in facts[2]["mig_devices"]] == [MIG_3G, MIG_1G]
    assert facts[3] == {"index": "3", "unavailable": "unavailable: GPU is lost"}


@pytest.mark.parametrize(("variant", "names"), [
    ("current", ["sw-power-cap", "board-limit"]),  # nvmlDeviceGetCurrentClocksEventReasons: 0x204
    ("old-driver", ["sw-power-cap", "hw-thermal"]),  # only the deprecated ...ThrottleReasons: 0x44
])
def test_clock_event_reasons_with_the_deprecated_call_as_fallback(use_lib: Any, variant: str, names: list[str]
                                                                   ) -> None:
    use_lib(variant)
    source = gpu.NvmlGpu(H200)
    try:
        sample = source.read()
    finally:
        source.close()
    assert gpu.reason_names(sample["gpu_reasons"]) == names
    assert sample["gpu_temp_c"] == 41
    assert gpu.reason_names(0x800 | 0x400) == ["reliability", "0x800"]


def test_a_mig_slot_samples_its_gpu_and_says_so(use_lib: Any, tmp_path: Path) -> None:
    use_lib("current")
    sampling = CellSampling("gpu", MIG_1G, period_s=0.05)
    sampling.watch(CellProcess(os.getpid(), own_cgroup=False))
    sampling.stop()
    assert sampling._gpu is not None and sampling._gpu.read()["gpu_temp_c"] == 41  # the parent GPU's sensor
    assert sampling.sampler.unavailable["gpu_own"] == "unavailable: MIG device: its whole GPU is sampled"
    # An inherited CUDA ordinal we could not tie to NVML is never sampled as some GPU it may not be.
    with pytest.raises(RuntimeError, match="cuda:1 is not tied to an NVML device"):
        gpu.NvmlGpu("cuda:1")


def test_an_inherited_cuda_visible_devices_limits_the_local_runners_slots(use_lib: Any, monkeypatch: Any) -> None:
    use_lib("current")
    found = gpus.discover()
    assert gpus.select("all", gpus.visible(found, MIG_1G, pci_order=False)) == [MIG_1G]
    # GPUs of different models: a CUDA ordinal is "fastest first", not NVML's order, unless PCI_BUS_ID is set.
    assert gpus.select("all", gpus.visible(found, "0", pci_order=False)) == ["cuda:0"]
    assert gpus.select("all", gpus.visible(found, "0", pci_order=True)) == [H200]
    with pytest.raises(InputError, match=r"CUDA_VISIBLE_DEVICES='-1' \(inherited\) hides every GPU"):
        gpus.visible(found, "-1", pci_order=False)
    # Wired into the scheduler for the local runner only (a container gets its own devices).
    matrix = type("M", (), {"device": "gpu", "gpus": "all"})()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{MIG_3G},{H200[:-1]}")  # CUDA takes a unique prefix
    assert scheduler.slots_for(matrix, LocalRunner(device="gpu")) == [MIG_3G, H200]  # type: ignore[arg-type]
    assert scheduler.slots_for(matrix) == [H200, MIG_3G, MIG_1G]  # type: ignore[arg-type]


def test_the_local_cell_gets_its_slot_and_keeps_the_hosts_pythonpath(tmp_path: Path) -> None:
    assert python_path(Path("/repo"), {"PYTHONPATH": "/site/a:/site/b"}) == "/repo:/site/a:/site/b"
    probe = tmp_path / "probe.py"
    probe.write_text("import json, os, sys\njson.dump({k: os.environ.get(k) for k in ('CUDA_VISIBLE_DEVICES', "
                     "'PYTHONPATH')}, open(sys.argv[-1], 'w'))\n")
    seen = _run_local(tmp_path, probe, "cuda:1", {"PYTHONPATH": "/site/a"})
    assert seen == {"CUDA_VISIBLE_DEVICES": "1", "PYTHONPATH": f"{tmp_path}:/site/a"}
    assert _run_local(tmp_path, probe, MIG_1G, {})["CUDA_VISIBLE_DEVICES"] == MIG_1G


def _run_local(root: Path, probe: Path, slot: str, env: dict[str, str]) -> dict[str, Any]:
    """What a local GPU cell's process sees: `probe` stands in for the workload module."""

    runner = LocalRunner(device="gpu", python=sys.executable, root=root)
    cell_dir = root / f"cell-{slot.replace(':', '_')}"
    cell_dir.mkdir()
    (cell_dir / "params.json").write_text("{}")
    environment = Environment(("probe", None), sys.executable, {"workload": probe.stem})
    cell = type("C", (), {"cell_id": cell_dir.name})()
    old = dict(os.environ)
    os.environ.update(env)
    try:
        runner.run(cell, environment, cell_dir, slot, 60)  # type: ignore[arg-type]
    finally:
        os.environ.clear()
        os.environ.update(old)
    return json.loads((cell_dir / "io" / "result.json").read_text())


def test_the_report_names_a_cells_gpu_by_its_uuid_slot() -> None:
    from orchestrator.report.peaks import gpu_name

    manifest = {"gpus": [{"index": "0", "name": "NVIDIA H200", "uuid": H200},
                         {"index": "1", "name": "NVIDIA L40S", "uuid": "GPU-00000000-0000-0000-0000-0000000000a1"}]}
    assert gpu_name(H200, "gpu", manifest, None) == "NVIDIA H200"
    assert gpu_name("1", "gpu", manifest, None) == "NVIDIA L40S"  # runs recorded before slots were UUIDs
