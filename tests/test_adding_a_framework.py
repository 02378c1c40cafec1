"""Adding a framework is one folder (docs/adding-a-framework.md): the scaffold, framework.yaml's errors, the dry
run's check of the workload module, how `frameworks: all` orders drop-ins, and what a failing drop-in shows.

All through the real CLI in a throw-away copy of the project (tests/conftest.py copy_project).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.frameworks import discover
from orchestrator.matrix import parse_matrix
from orchestrator.plan import expand
from orchestrator.report.baseline import load_baseline, original_row_for
from tests.conftest import BUILD_ARG, ROOT, TINY, copy_project, run_cli
from tests.workload_helpers import cpu_cases

ESC = "\x1b"


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return copy_project(tmp_path / "project")


def test_new_writes_a_framework_that_passes_the_static_check_and_runs_as_not_implemented(project: Path) -> None:
    proc = run_cli(["new", "demo-fw"], cwd=project)
    assert proc.returncode == 0, proc.stderr
    wrote = {line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("wrote ")}
    assert wrote == {
        "images/demo-fw/Dockerfile", "images/demo-fw/framework.yaml", "images/demo-fw/requirements-gpu.txt",
        "images/demo-fw/requirements-cpu.txt", "images/demo-fw/build-constraints.txt", "workloads/demo_fw_lstm.py",
    }
    # Every method the harness calls is there, each with a docstring (what it must do and why).
    source = (project / "workloads" / "demo_fw_lstm.py").read_text()
    for method in ("check_device", "build", "param_count", "prepare", "step", "sync", "loss_value", "versions",
                   "device_name", "peak_memory_bytes"):
        assert re.search(rf"def {method}\(self[^)]*\)[^:]*:\n        \"\"\"", source), method
    # The static check passes (offline: structure and pin syntax).
    check = subprocess.run(
        [sys.executable, "-m", "orchestrator.dockerfile_check", "--offline", "demo-fw"],
        cwd=project, env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True,
    )
    assert check.returncode == 0 and "0 errors" in check.stdout, check.stdout + check.stderr
    # It runs: the cell says `unsupported`, "not implemented yet", naming the first method to write.
    out = project / "run"
    run = run_cli(["matrix.yaml", "--only", "demo-fw", "--runner", "local", "--python", "current", "--device", "cpu",
                   "--hidden", "8", *TINY, "--out", str(out), "-q", "--no-report"], cwd=project)
    assert run.returncode == 0, run.stdout + run.stderr
    (record,) = _records(out)
    assert record["status"] == "unsupported"
    assert "check_device() not implemented yet (workloads/demo_fw_lstm.py)" in record["reason"]
    # ... and the tests discover it: it gets the CPU + equivalence test without an edit under tests/.
    assert ("demo-fw", None) in cpu_cases(project / "images")


def test_the_scaffold_stubs_and_the_guide_agree_on_the_defaults(project: Path) -> None:
    """A method the scaffold writes with the default's body is the default (the guide says deleting it is the same);
    the by-hand check uses the tests' lr and says why; the pins are listed with setuptools."""
    assert run_cli(["new", "demo"], cwd=project).returncode == 0
    source = (project / "workloads" / "demo_lstm.py").read_text()
    assert "super().set_precision()" in source and "return super().precision_readback()" in source
    assert "Deleting this method restores harness.Framework's default: CPU only" in " ".join(source.split())
    guide = " ".join((ROOT / "docs" / "adding-a-framework.md").read_text().split())
    assert "delete them, which changes nothing" in guide and "deleting it restores the default, CPU only" in guide
    assert "--set lr=0.5" in guide and "still shows ✓" in guide
    assert "harness.GATE_ORDER" in guide and "harness.mode_from" in guide and "A CPU-only framework" in guide
    pins = (project / "images" / "demo" / "requirements-cpu.txt").read_text()
    assert "pip freeze --all" in pins and "uv pip freeze" in pins
    assert "Build constraints" in guide and "--build-constraint" in guide


def test_new_never_overwrites(project: Path) -> None:
    assert run_cli(["new", "numpy-reference"], cwd=project).returncode == 2
    bad = run_cli(["new", "Bad/Name"], cwd=project)
    assert bad.returncode == 2 and "invalid framework name" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.parametrize(
    ("text", "line", "expected"),
    [
        ("label: x\nimpls: fused\n", 2, "key 'impls': expected a list, e.g. [a, b] (got 'fused')"),
        ("label: x\n\nimpl: [a]\n", 3, "key 'impl': unknown key; expected one of label, workload, variants, impls"),
        ("label: x\nimpls: [a, 'B c']\n", 2, "key 'impls.1': String should match pattern"),
        ("label: x\nworkload: 3rd-module\n", 2, "key 'workload': String should match pattern"),
        ("label: [x\n", 2, "not valid YAML"),
    ],
)
def test_framework_yaml_errors_name_file_line_and_key(project: Path, text: str, line: int, expected: str) -> None:
    (project / "images" / "numpy-reference" / "framework.yaml").write_text(text)
    proc = run_cli(["matrix.yaml", "--dry-run"], cwd=project)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert f"images/numpy-reference/framework.yaml:{line}: " in lines[0] and expected in lines[0], lines[0]


def test_dry_run_flags_a_framework_whose_workload_module_is_missing(project: Path) -> None:
    assert run_cli(["new", "demo"], cwd=project).returncode == 0
    (project / "workloads" / "demo_lstm.py").rename(project / "workloads" / "demo.py")  # the guess of issue 12
    proc = run_cli(["matrix.yaml", "--dry-run", "--only", "demo,numpy-reference", "--hidden", "8",
                    "--set", "repeats=1"], cwd=project)
    assert proc.returncode == 2
    assert proc.stdout.splitlines() == ["demo hidden=8", "numpy-reference hidden=8 impl=loop"]
    assert "framework 'demo': its workload module workloads/demo_lstm.py does not exist" in proc.stderr
    assert "numpy-reference" not in proc.stderr


def test_frameworks_all_runs_the_2016_rows_first_then_the_rest_by_name() -> None:
    available = discover(ROOT / "images")
    plan = expand(parse_matrix("frameworks: all\nhidden: [8]\n", "m.yaml"), available)
    order = list(dict.fromkeys(c.framework for c in plan.cells))
    assert sorted(order) == sorted(available)  # every folder under images/, each once
    baseline = load_baseline()
    rank = {row: i for i, row in enumerate(baseline.rows)}

    def first_row(name: str) -> int | None:
        fw = available[name]
        rows = [original_row_for(fw.row_label(v), fw, v, baseline) for v in (fw.meta.variants or (None,))]
        found = [rank[r] for r in rows if r is not None]
        return min(found) if found else None

    ranks = [first_row(n) for n in order]
    continuing = [r for r in ranks if r is not None]
    assert continuing == sorted(continuing) and len(continuing) >= 6  # the 2016 table's rows, in its order
    assert ranks[: len(continuing)] == continuing  # ... before every framework that is not in the 2016 table
    rest = order[len(continuing):]
    assert rest == sorted(rest) and "flax" in rest


def test_main_matrix_takes_every_framework_folder() -> None:
    matrix = parse_matrix((ROOT / "matrix.yaml").read_text(), "matrix.yaml")
    assert matrix.frameworks == "all"


@pytest.mark.docker
def test_build_failure_names_the_step_without_colour_codes_and_keeps_the_log(
    base_image: str, tmp_path: Path
) -> None:
    fixture = tmp_path / "colourful"
    fixture.mkdir()
    (fixture / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n"
        "RUN printf '\\033[31mERROR: No matching distribution found for numpy==9.9.9\\033[0m\\n'; exit 7\n"
        'ENTRYPOINT ["python3"]\n'  # its own entrypoint: no shared tail appended (it has no workload to copy)
    )
    project = copy_project(tmp_path / "project", {"colourful": fixture})
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "colourful", "--device", "cpu", "--hidden", "8", *TINY,
                    "--build-arg", BUILD_ARG, "--out", str(out), "--no-report"], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = _records(out)
    assert record["status"] == "build-failed"
    first, second = record["reason"].splitlines()[:2]
    assert first == "ERROR: No matching distribution found for numpy==9.9.9", record["reason"]  # the cause first
    assert re.match(r"Step 3/\d+ : RUN printf", second) and second.endswith("returned a non-zero code: 7"), second
    assert ESC not in json.dumps(record) and ESC not in proc.stdout
    assert "ERROR: No matching distribution found for numpy==9.9.9" in (record["log_tail"] or "")
    # The console's build line carries the cause, not the step's generic "returned a non-zero code".
    assert "build colourful failed: ERROR: No matching distribution found for numpy==9.9.9" in proc.stdout, proc.stdout


@pytest.mark.docker
def test_a_base_image_that_cannot_be_pulled_names_the_registry_free_route(base_image: str, tmp_path: Path) -> None:
    fixture = tmp_path / "unpullable"
    fixture.mkdir()
    # Nothing listens on port 1: the pull fails at once, as it does on a host without a registry.
    (fixture / "Dockerfile").write_text('ARG BASE_IMAGE=127.0.0.1:1/python:3.11-slim\nFROM ${BASE_IMAGE}\n'
                                        'ENTRYPOINT ["python3"]\n')
    project = copy_project(tmp_path / "project", {"unpullable": fixture})
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "unpullable", "--device", "cpu", "--hidden", "8", *TINY,
                    "--build-arg", "BASE_IMAGE=127.0.0.1:1/python:3.11-slim", "--out", str(out), "--no-report"],
                   cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = _records(out)
    assert record["status"] == "build-failed"
    first = record["reason"].splitlines()[0]
    assert first.startswith("cannot pull 127.0.0.1:1/python:3.11-slim: no registry?"), first
    assert "scripts/make-base-image.sh --python" in first and "--build-arg BASE_IMAGE=" in first
    # The console says it in its one line, uncut.
    assert "--python, --build-arg BASE_IMAGE=lstm-bench/base:python3.11-slim-bookworm\n" in proc.stdout, proc.stdout


def test_crash_summary_shows_the_last_meaningful_stderr_line(project: Path, tmp_path: Path) -> None:
    # A workload whose import fails writes no result.json: the console must still say why, in one line.
    assert run_cli(["new", "noimport"], cwd=project).returncode == 0
    module = project / "workloads" / "noimport_lstm.py"
    module.write_text(module.read_text().replace("# import myframework", "import no_such_framework_xyz"))
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "noimport", "--runner", "local", "--python", "current", "--device",
                    "cpu", "--hidden", "8", *TINY, "--out", str(out), "--no-report"], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = _records(out)
    assert record["status"] == "crashed"
    want = "exit code 1: ModuleNotFoundError: No module named 'no_such_framework_xyz'"
    assert record["reason"].splitlines()[0] == want
    assert record["log_tail"] and "Traceback" in record["log_tail"]
    assert f"noimport-h8-r0  {want}" in proc.stdout


def test_record_impl_is_the_impl_that_ran(project: Path, tmp_path: Path) -> None:
    # A drop-in without `impls:` in framework.yaml is asked for "default"; its result says what ran ("loop").
    folder = project / "images" / "noimpls"
    folder.mkdir()
    (folder / "Dockerfile").write_text("FROM scratch\n")
    (project / "workloads" / "noimpls.py").write_text(
        "from workloads import harness\nfrom workloads.numpy_reference import NumpyReference\n\n\n"
        "class NoImpls(NumpyReference):\n    name = 'noimpls'\n\n\n"
        "if __name__ == '__main__':\n    raise SystemExit(harness.run(NoImpls))\n"
    )
    out = tmp_path / "run"
    proc = run_cli(["matrix.yaml", "--only", "noimpls", "--runner", "local", "--python", "current", "--device", "cpu",
                    "--hidden", "8", *TINY, "--out", str(out), "-q"], cwd=project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (record,) = _records(out)
    assert record["status"] == "ok" and record["workload"]["impl"] == "loop"
    assert record["impl"] == "loop" and record["cell_id"] == "noimpls-h8-r0"
    assert "| noimpls |" in (out / "report.md").read_text()


def test_plot_colours_never_repeat() -> None:
    from orchestrator.report.plots import row_colors

    for n in range(1, 41):
        colours = row_colors(n)
        assert len(colours) == n and len({tuple(c) for c in colours}) == n, n


def test_runners_do_not_import_the_command_line() -> None:
    # runners/ray.py took parse_build_args from cli.py, which imports the runners: a circle. No runner imports cli.
    import ast

    for path in (ROOT / "orchestrator" / "runners").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module != "orchestrator.cli", path
            elif isinstance(node, ast.Import):
                assert all(a.name != "orchestrator.cli" for a in node.names), path
