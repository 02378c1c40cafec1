"""The machine sampler's logic: parsing, the sampler thread, and summarising samples of NVML's shape.

The NVML reads themselves cannot run without an NVIDIA driver (none here): these tests feed the summary samples of
the exact shape orchestrator.machine.gpu produces, with made-up round values (inputs, not measurements), and check
the unit conversion from NVML's raw answers (mW, mJ, bytes) separately.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from orchestrator.machine import gpu
from orchestrator.machine.cpu import HostCpu, ProcessCell, cgroup_files, parse_cpuset, parse_proc_stat
from orchestrator.machine.sampler import Sampler
from orchestrator.machine.summary import BUSY_SHARE, MachineState, counter_delta, summarise, valid_window
from orchestrator.report.machine import flags as report_flags
from orchestrator.results import CellRecord

PROC_STAT = """cpu  24136 0 8538 25912 879 0 291 487 0 0
cpu0 9178 0 3221 17355 110 0 32 252 0 0
cpu1 14957 0 5317 8556 769 0 259 234 0 0
intr 1 2 3
ctxt 42
"""


def gpu_samples(t0: float = 1000.0, n: int = 21, period: float = 0.5, reasons: int = 0x0) -> list[dict]:
    """Samples every `period` s of a GPU drawing 200 W (energy counter +100 J per sample), as NvmlGpu.read gives."""
    return [
        {"t": t0 + i * period, "gpu_sm_mhz": 1980 - 10 * (i % 3), "gpu_mem_mhz": 2619, "gpu_power_w": 200.0,
         "gpu_temp_c": 60 + i // 5, "gpu_util_pct": 100, "gpu_mem_used_mib": 4096.0,
         "gpu_reasons": reasons if 5 <= i <= 8 else 0x0, "gpu_energy_j": 5_000_000.0 + 100.0 * i}
        for i in range(n)
    ]


def test_nvml_units_become_watts_joules_and_mib() -> None:
    raw = {"sm_mhz": 1980, "mem_mhz": 2619, "power_mw": 215_500, "temp_c": 61, "util_pct": 99,
           "mem_used_bytes": 3 * 2**30, "reasons": 0x4, "energy_mj": 123_456_789}
    s = gpu.from_nvml_units(raw)
    assert s["gpu_power_w"] == pytest.approx(215.5)
    assert s["gpu_energy_j"] == pytest.approx(123_456.789)  # millijoules, not joules
    assert s["gpu_mem_used_mib"] == 3072 and s["gpu_reasons"] == 4 and s["gpu_sm_mhz"] == 1980
    assert gpu.from_nvml_units({**raw, "energy_mj": None, "power_mw": None}).keys().isdisjoint(
        {"gpu_energy_j", "gpu_power_w"})  # a GPU without an energy counter: left out, not zero


def test_reason_names_and_what_counts_as_throttling() -> None:
    assert gpu.reason_names(0x1 | 0x4 | 0x40) == ["gpu-idle", "sw-power-cap", "hw-thermal"]
    assert gpu.reason_names(0x2) == ["clocks-set-by-user"]
    assert gpu.reason_names(0x1000) == ["0x1000"]  # a bit newer than this table is shown, not dropped
    assert "gpu-idle" not in gpu.THROTTLING and "clocks-set-by-user" not in gpu.THROTTLING


def test_counter_is_interpolated_over_the_window() -> None:
    samples = gpu_samples()  # 200 W from t=1000 to t=1010
    delta, coverage = counter_delta(samples, "gpu_energy_j", 1002.25, 1007.25)
    assert delta == pytest.approx(1000.0) and coverage == 1.0
    # The window runs past the last sample: the covered part's rate is carried on, and coverage says how much.
    delta, coverage = counter_delta(samples, "gpu_energy_j", 1008.0, 1012.0)
    assert delta == pytest.approx(800.0) and coverage == pytest.approx(0.5)
    # A window shorter than one period, between two samples.
    delta, coverage = counter_delta(samples, "gpu_energy_j", 1003.1, 1003.3)
    assert delta == pytest.approx(40.0) and coverage == 1.0
    assert counter_delta(samples[:1], "gpu_energy_j", 1000.0, 1001.0) is None


def test_a_cells_cpu_figure_past_its_exit_is_carried_on_or_none_never_zero() -> None:
    """A tiny cell exits between two samples: its own counters stop, the host's go on (the CI flake of stop 24)."""
    samples = [{"t": 100.0 + 0.2 * i, "host_busy_s": 0.1 * i, "host_total_s": 0.4 * i,
                **({"cell_cpu_s": 0.05 * i} if i <= 5 else {})} for i in range(8)]  # last CPU read at t = 101.0
    straddles = summarise(samples, [100.9, 101.1], batches=5, period_s=0.2)
    assert straddles is not None and straddles.cell_cpu_s == pytest.approx(0.05)  # 0.25 CPU s/s over 0.2 s
    assert straddles.coverage == pytest.approx(0.5)
    after = summarise(samples, [101.1, 101.2], batches=5, period_s=0.2)
    assert after is not None and after.cell_cpu_s is None and after.host_others_share is None


def test_gpu_summary_energy_per_batch_and_throttling() -> None:
    samples = gpu_samples(reasons=0x4)  # a power cap during t = 1002.5 .. 1004
    m = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert m is not None and m.window == "timed" and m.window_s == 6.0
    assert m.gpu_energy_j == pytest.approx(1200.0) and m.gpu_avg_w == pytest.approx(200.0)
    assert m.j_per_batch == pytest.approx(24.0)
    assert m.throttled is True and m.gpu_reasons == ["sw-power-cap"]
    assert m.gauges["gpu_sm_mhz"].min == 1960 and m.gauges["gpu_sm_mhz"].max == 1980
    assert m.gauges["gpu_temp_c"].median == 62 and m.samples == 13
    # Clocks held by the user (nvidia-smi -ac / -lgc) are reported, not called throttling.
    calm = summarise(gpu_samples(reasons=0x2), [1003.0, 1009.0], batches=10, period_s=0.5)
    assert calm is not None and calm.throttled is False and calm.gpu_reasons == ["clocks-set-by-user"]


def test_cpu_only_cell_has_no_gpu_figures() -> None:
    samples = [{"t": 10.0 + i, "host_busy_s": 1.5 * i, "host_total_s": 2.0 * i, "host_cpus": 2, "cell_cpu_s": 1.0 * i,
                "cell_mem_bytes": 1000 + i} for i in range(6)]
    m = summarise(samples, [11.0, 14.0], batches=30, period_s=1.0)
    assert m is not None
    assert m.cell_cpu_s == pytest.approx(3.0)
    # Of 2 CPU-seconds per second, 1.5 were busy and the cell took 1: others took 0.5 / 2 = 25% (= BUSY_SHARE).
    assert m.host_others_share == pytest.approx(BUSY_SHARE) and m.host_busy is False  # at the limit, not above
    assert m.gpu_energy_j is None and m.j_per_batch is None and m.throttled is None and m.gpu_reasons == []
    assert set(m.gauges) == {"cell_mem_bytes"}


@pytest.mark.parametrize("window", [None, "soon", [1.0], [5.0, 2.0], [math.nan, 3.0], [1e12, 2e12], ["a", "b"],
                                    [True, {}]])
def test_a_bad_window_from_the_container_falls_back_to_the_whole_cell(window: object) -> None:
    samples = gpu_samples()
    assert isinstance(valid_window(window, samples), str)
    m = summarise(samples, window, batches=50, period_s=0.5)
    assert m is not None and m.window == "cell" and m.window_s == 10.0
    assert m.unavailable["window"].startswith("unavailable: ") and m.j_per_batch is None
    assert m.gpu_energy_j == pytest.approx(2000.0)


def test_nothing_sampled_means_no_summary() -> None:
    assert summarise([], [1.0, 2.0], batches=5, period_s=0.2) is None


def test_parsing_proc_stat_and_cpusets() -> None:
    per_cpu = parse_proc_stat(PROC_STAT)
    assert per_cpu == {0: (9178 + 3221 + 32 + 252, 9178 + 3221 + 32 + 252 + 17355 + 110),
                       1: (14957 + 5317 + 259 + 234, 14957 + 5317 + 259 + 234 + 8556 + 769)}
    assert parse_cpuset("0-3,6") == {0, 1, 2, 3, 6} and parse_cpuset("5") == {5}


def test_host_and_process_reads_on_this_machine(tmp_path) -> None:
    stat = tmp_path / "stat"
    stat.write_text(PROC_STAT)
    one = HostCpu({1}, stat).read()
    assert one["host_cpus"] == 1 and one["host_busy_s"] < one["host_total_s"]
    real = HostCpu().read()  # the real /proc/stat
    assert real["host_cpus"] == len(parse_proc_stat(Path("/proc/stat").read_text()))
    me = ProcessCell(os.getpid()).read()
    assert me["cell_cpu_s"] > 0 and me["cell_mem_bytes"] > 1 << 20
    with pytest.raises(FileNotFoundError):
        ProcessCell(2**22 + 1)  # above pid_max's default ceiling: no such process


def test_cgroup_files_v1_and_v2_layouts(tmp_path) -> None:
    proc, root = tmp_path / "proc", tmp_path / "cgroup"
    (proc / "7").mkdir(parents=True)
    (proc / "7" / "cgroup").write_text("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/docker/abc\n")
    (root / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (root / "cpu,cpuacct" / "docker" / "abc" / "cpuacct.usage").write_text("2500000000\n")
    (root / "memory" / "docker" / "abc").mkdir(parents=True)
    (root / "memory" / "docker" / "abc" / "memory.usage_in_bytes").write_text("4096\n")
    cpu, mem, version = cgroup_files(7, "abc", proc, root)
    assert version == "v1" and cpu.name == "cpuacct.usage" and mem is not None and mem.read_text() == "4096\n"
    (proc / "8").mkdir()
    (proc / "8" / "cgroup").write_text("0::/system.slice/docker-abc.scope\n")
    d = root / "system.slice" / "docker-abc.scope"
    d.mkdir(parents=True)
    (d / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    cpu, mem, version = cgroup_files(8, "abc", proc, root)
    assert version == "v2" and cpu == d / "cpu.stat" and mem is None
    with pytest.raises(LookupError, match="not container"):
        cgroup_files(8, "def", proc, root)  # the engine's pid names another process in this pid namespace


class Flaky:
    """A source that works `good` times, then fails (a container's cgroup vanishing as it exits)."""

    def __init__(self, name: str, good: int) -> None:
        self.name, self.good = name, good

    def read(self) -> dict:
        if self.good <= 0:
            raise FileNotFoundError(f"{self.name} is gone")
        self.good -= 1
        return {f"{self.name}_n": self.good}


def test_sampler_drops_a_source_that_never_worked_and_keeps_one_that_ended() -> None:
    s = Sampler([Flaky("never", 0), Flaky("ends", 2)], period_s=0.01)
    for _ in range(4):
        s.sample()
    assert s.unavailable == {"never": "unavailable: never is gone"}
    assert [("ends_n" in x) for x in s.samples] == [True, True, False, False]
    assert s.cpu_s > 0
    threaded = Sampler([HostCpu()], period_s=0.01)
    threaded.start()
    samples = threaded.stop()
    assert len(samples) >= 2 and all("host_busy_s" in x for x in samples)  # one at each end at least


def test_nvml_absent_says_unavailable() -> None:
    facts = gpu.facts()
    if not isinstance(facts, str):
        pytest.skip("NVML works on this host; this test is for hosts without it")
    assert facts.startswith("unavailable: ")
    assert gpu.settle(0, 50.0, timeout_s=1).startswith("unavailable: ")
    with pytest.raises(RuntimeError, match=r"^unavailable: "):
        gpu.NvmlGpu(0)


def test_record_carries_the_summary_and_old_records_still_load() -> None:
    m = summarise(gpu_samples(), [1001.0, 1009.0], batches=40, period_s=0.5)
    base = {"run_id": "r", "cell_id": "c", "framework": "f", "variant": None, "impl": "i", "label": "l",
            "hidden": 8, "repeat": 0, "device": "gpu", "status": "ok", "duration_s": 1.0, "finished_at": "x"}
    rec = CellRecord(**base, machine=m)
    again = CellRecord.model_validate_json(rec.model_dump_json())
    assert again.machine == m and isinstance(again.machine, MachineState)
    assert CellRecord.model_validate_json(json.dumps(base)).machine is None


def test_a_gpu_cell_without_nvml_says_unavailable_in_its_record(tmp_path: Path) -> None:
    """Through the real pipeline and local runner: a GPU cell on this driverless host, with --gpu-settle."""
    from report_helpers import TINY, _yaml

    from orchestrator import PROJECT_ROOT
    from orchestrator.frameworks import discover
    from orchestrator.matrix import parse_matrix
    from orchestrator.pipeline import Events, execute
    from orchestrator.plan import expand
    from orchestrator.runners.local import LocalRunner
    from orchestrator.store import RunStore

    if not isinstance(gpu.facts(), str):
        pytest.skip("NVML works on this host; this test is for hosts without it")
    doc = {"name": "nogpu", "frameworks": ["numpy-reference"], "hidden": [8], **TINY, "device": "gpu"}
    plan = expand(parse_matrix(_yaml(doc), "<test>"), discover(PROJECT_ROOT / "images"))
    store = RunStore(tmp_path / "run")
    store.open_for_run()
    try:
        summary = execute(plan, LocalRunner(device="gpu", python="current"), store, "nogpu", ["0"], Events(),
                          gpu_settle_c=50.0)
    finally:
        store.close()
    (rec,) = summary.records
    m = rec.machine
    assert rec.status.value == "unsupported" and m is not None  # the NumPy workload has no GPU path
    assert m.unavailable["gpu"].startswith("unavailable: ") and m.settle is not None
    assert m.settle.startswith("unavailable: ") and m.window == "cell" and m.gpu_energy_j is None


def test_gpu_settle_is_refused_on_a_cpu_run_in_one_line() -> None:
    from tests.conftest import run_cli

    proc = run_cli(["matrix.yaml", "--device", "cpu", "--gpu-settle", "--dry-run"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "error: --gpu-settle 50: needs --device gpu and a temperature in (0, 120] °C"
    assert run_cli(["matrix.yaml", "--device", "gpu", "--gpu-settle", "45", "--dry-run"]).returncode == 0


def test_the_harness_stamps_its_timed_loop_with_the_wall_clock(tmp_path: Path) -> None:
    import time

    from workloads import harness
    from workloads.numpy_reference import NumpyReference

    params = {"framework": "numpy-reference", "hidden": 16, "batch": 4, "seq_len": 8, "vocab": 100, "iters": 5,
              "warmup": 1, "device": "cpu"}
    (tmp_path / "params.json").write_text(json.dumps(params))
    before = time.time()
    code = harness.run(NumpyReference, ["--params", str(tmp_path / "params.json"), "--out", str(tmp_path / "r.json")])
    after = time.time()
    doc = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and doc["status"] == "ok"
    t0, t1 = doc["timed_window"]
    assert before < t0 < t1 < after
    assert sum(doc["times_ms"]) / 1000 <= (t1 - t0) + 1e-3  # every timed batch lies inside the window


def test_manifest_adds_nvml_settings_to_each_gpu_by_index(monkeypatch: pytest.MonkeyPatch) -> None:
    from orchestrator import manifest as manifest_module
    from orchestrator.manifest import initial_manifest, with_settings

    smi = [{"index": "0", "name": "GPU A", "driver": "1"}, {"index": "1", "name": "GPU A", "driver": "1"}]
    nv = [{"index": "1", "name": "GPU A", "power_limit_w": 300.0, "clocks_locked": True, "persistence_mode": False}]
    merged = with_settings(smi, nv)
    assert merged[0] == smi[0] and merged[1]["power_limit_w"] == 300.0 and merged[1]["clocks_locked"] is True
    assert with_settings([], nv) == nv and with_settings(smi, "unavailable: no driver") == smi
    # What NVML says decides the manifest's "nvml", exactly: each answer of this host's NVML, either way.
    monkeypatch.setattr(manifest_module, "host_gpus", lambda: smi)
    monkeypatch.setattr(manifest_module.nvml_gpu, "facts", lambda: nv)
    manifest = initial_manifest("r", {}, {}, [])
    assert manifest["nvml"] == "ok" and manifest["gpus"] == merged
    monkeypatch.setattr(manifest_module.nvml_gpu, "facts", lambda: "unavailable: NVML Shared Library Not Found")
    manifest = initial_manifest("r", {}, {}, [])
    assert manifest["nvml"] == "unavailable: NVML Shared Library Not Found" and manifest["gpus"] == smi


def test_a_window_beyond_the_samples_is_clipped_not_extrapolated() -> None:
    # What was seen (issue 16): timed_window [1.0, 1e11] gave window_s 1e11 and a CPU time of 5.3e10 s.
    samples = gpu_samples()  # 200 W from t=1000 to t=1010
    m = summarise(samples, [1.0, 1e11], batches=50, period_s=0.5)
    assert m is not None and m.window == "timed" and m.window_s == 10.0
    assert m.window_clipped_s == pytest.approx(1e11 - 1.0 - 10.0)
    assert m.gpu_energy_j == pytest.approx(2000.0) and m.j_per_batch is None  # not all batches' energy
    assert "window clipped" in report_flags(m)
    # Partly outside: only the sampled part counts.
    part = summarise(samples, [1008.0, 1012.0], batches=50, period_s=0.5)
    assert part is not None and part.window_s == 2.0 and part.window_clipped_s == pytest.approx(2.0)
    assert part.gpu_energy_j == pytest.approx(400.0)
    inside = summarise(samples, [1002.0, 1008.0], batches=50, period_s=0.5)
    assert inside is not None and inside.window_clipped_s is None and inside.j_per_batch == pytest.approx(24.0)
