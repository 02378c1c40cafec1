"""The evidence chain (issue 9): a workload that misbehaves after the harness wrote a good result cannot hang,
stop or forge a run. Each hostile act is a variant of the chaos fixture framework (tests/fixtures/chaos), run for
real on the Docker engine through the CLI.

What every case checks: the run completes (exit 0), the hostile cell is classified with a reason naming what was
found, the other cells are ok, the report renders all four outputs, nothing from outside the cell reaches any
output, and --resume neither hangs nor accepts anything the orchestrator did not itself record.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from orchestrator.report.flops import training_step_flops
from tests.conftest import BUILD_ARG, FIXTURES, SESSION, copy_project, default_signals, run_cli

pytestmark = pytest.mark.docker

SMALL = ["--set", "batch=4", "--set", "seq_len=8", "--set", "vocab=100", "--set", "iters=3", "--set", "warmup=0"]
REPORT_FILES = ("report.md", "report.html", "results.csv", "report.json")
# Acts on /results after a good result was written; each must end as one invalid-output cell.
HOSTILE = {
    "fifo": "FIFO",  # 1: the read must not block
    "stdinlink": "symbolic link",  # 1: nor follow a link to a stream
    "loop": "symbolic link",  # 2: nor stop the run with an OSError
    "resultdir": "result.json is a directory, not a regular file",  # 2
    "logdir": "log.txt",  # 2: anything besides result.json in the mount is named
    "strmedian": "stats_ms.median",  # 3: the schema names the key
    "strdevice": "device",  # 4
    "hugeint": "times_ms",  # 4
    "bigfloat": "times_ms",  # 4
    "sibling": "symbolic link",  # 6: never another cell's result
    "echo": "params.hidden",  # 6: the result must be about this cell
    "impostor": "framework",  # 6
    "deeptree": "holds 'd' besides the result",  # 10: a 3000-deep tree is removed without recursion
    "hostiletext": None,  # 11: a crashed cell whose message and versions are hostile text
}
MATRIX = (
    "frameworks:\n  - name: chaos\n    variants: [ok, {variants}]\n  - numpy-reference\n"
    "device: cpu\nhidden: [16]\n"
)
NO_CONTROL = ("\u202e", "\x1b", "\x00")


def start_cli(args: list[str], cwd: Path, logs: Path, ignore_sigint: bool = False) -> subprocess.Popen[bytes]:
    logs.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "200"},
        stdout=(logs / "stdout").open("wb"),
        stderr=(logs / "stderr").open("wb"),
        # A shell's background job inherits SIGINT ignored: the CLI must install its own handler anyway.
        preexec_fn=(lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else default_signals,
    )


def records(out: Path) -> dict[str, dict[str, Any]]:
    return {d["cell_id"]: d for d in map(json.loads, (out / "results.jsonl").read_text().splitlines())}


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def wait_for(predicate: Any, proc: subprocess.Popen[bytes], what: str, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("evidence") / "project", {"chaos": FIXTURES / "chaos"})
    (root / "hostile.yaml").write_text(MATRIX.format(variants=", ".join(HOSTILE)))
    return root


@pytest.fixture(scope="module")
def hostile_run(base_image: str, project: Path) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = project.parent / "run"
    proc = run_cli(["hostile.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", *SMALL,
                    "--set", "timeout_s=120"], cwd=project, timeout=900)
    return out, proc


def test_the_hostile_run_completes_with_every_other_cell_ok(hostile_run: tuple[Path, Any]) -> None:
    out, proc = hostile_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    cells = records(out)
    assert len(cells) == len(HOSTILE) + 2
    assert cells["chaos-ok-h16-r0"]["status"] == "ok"
    assert cells["numpy-reference-loop-h16-r0"]["status"] == "ok"  # queued after every hostile cell: it still ran
    assert json.loads((out / "manifest.json").read_text())["state"] == "complete"
    for name in REPORT_FILES:
        assert (out / name).is_file(), name


@pytest.mark.parametrize("variant", [v for v, word in HOSTILE.items() if word])
def test_hostile_result_is_invalid_output_naming_what_was_found(variant: str, hostile_run: tuple[Path, Any]) -> None:
    out, proc = hostile_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cell = records(out)[f"chaos-{variant}-h16-r0"]
    assert cell["status"] == "invalid-output", cell
    assert HOSTILE[variant] in cell["reason"], cell["reason"]
    assert cell["workload"] is None  # nothing of an unaccepted result is kept as data
    assert cell["run_id"] == json.loads((out / "manifest.json").read_text())["run_id"]


def test_nothing_the_workload_planted_stays_in_the_run_dir(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    for cell_dir in (out / "cells").iterdir():
        planted = [p for p in cell_dir.rglob("*") if p.is_symlink() or not (p.is_file() or p.is_dir())]
        assert planted == [], planted
        assert max((len(p.relative_to(cell_dir).parts) for p in cell_dir.rglob("*")), default=0) <= 2


def test_report_and_flops_use_the_cells_params_not_the_echo(hostile_run: tuple[Path, Any]) -> None:
    out, _ = hostile_run
    own = training_step_flops(4, 8, 16)  # SMALL's batch and seq_len at hidden 16: every cell of this run
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {int(r["flops_per_step"]) for r in rows if r["flops_per_step"]} == {own}
    for group in json.loads((out / "report.json").read_text())["cells"]:
        assert group["flops_per_step"] in (None, own)
        assert group["framework"] != "torch"


def test_hostile_text_is_visible_and_inert_in_every_output(hostile_run: tuple[Path, Any]) -> None:
    out, proc = hostile_run
    cell = records(out)["chaos-hostiletext-h16-r0"]
    assert cell["status"] == "crashed" and "HYPERLINK" in cell["reason"]
    for name in ("report.md", "report.html", "results.csv"):
        text = (out / name).read_text()
        assert "HYPERLINK" in text, name  # shown, not dropped
        for char in NO_CONTROL:
            assert char not in text, (name, repr(char))
    page = (out / "report.html").read_text()
    assert "<table>" in page and "&lt;td" not in page  # escaped once: data as text, the page's own markup intact
    html = MarkdownIt("commonmark").enable("table").render((out / "report.md").read_text())
    assert "javascript:" not in "".join(re.findall(r'href="[^"]*"', html))
    assert "evil.example" not in "".join(re.findall(r'href="[^"]*"', html))

    for row in csv.reader((out / "results.csv").open()):
        for value in row:
            assert not value.startswith(("=", "+", "@", "\t", "\r")), value
            assert not (value.startswith("-") and not _number(value)), value
    for char in NO_CONTROL:
        assert char not in proc.stdout


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# ---------------------------------------------------------------------------------------------- 12: tampered dirs


def tampered(hostile_run: tuple[Path, Any], tmp_path: Path) -> Path:
    out, _ = hostile_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy, symlinks=True)
    for name in REPORT_FILES:
        (copy / name).unlink()
    return copy


def test_report_and_compare_on_a_run_dir_with_a_bad_manifest_exit_2_naming_it(
    hostile_run: tuple[Path, Any], tmp_path: Path
) -> None:
    run = tampered(hostile_run, tmp_path)
    (run / "manifest.json").write_text("[1, 2]\n")
    for args in (["report", str(run)], ["compare", str(run), str(run)]):
        proc = run_cli(args)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "manifest.json" in one_line(proc.stderr)


@pytest.mark.parametrize("case", ["jsonl-not-utf8", "jsonl-not-json", "record-huge-number"])
def test_a_tampered_index_or_record_is_a_warning_and_the_records_stay_the_truth(
    case: str, hostile_run: tuple[Path, Any], tmp_path: Path
) -> None:
    run = tampered(hostile_run, tmp_path)
    jsonl = run / "results.jsonl"
    cells = sorted(p.parent.name for p in (run / "cells").glob("*/record.json"))
    if case == "jsonl-not-utf8":
        jsonl.write_bytes(jsonl.read_bytes() + b"\xff\xfe\n")
        named = "results.jsonl"
    elif case == "jsonl-not-json":
        jsonl.write_text("{not json\n")
        named = "results.jsonl"
    else:
        record = run / "cells" / "chaos-ok-h16-r0" / "record.json"
        doc = json.loads(record.read_text())
        doc["workload"]["times_ms"] = [1e308, 1e308]
        record.write_text(json.dumps(doc))
        cells.remove("chaos-ok-h16-r0")
        named = "chaos-ok-h16-r0/record.json"
    proc = run_cli(["report", str(run)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((run / "report.json").read_text())
    assert sorted(c for g in doc["cells"] for c in g["cells"]) == cells
    assert any(named in w for w in doc["warnings"]), doc["warnings"]
    assert sorted(json.loads(line)["cell_id"] for line in jsonl.read_text().splitlines()) == cells


def test_an_unreadable_record_is_a_warning_not_silently_dropped(hostile_run: tuple[Path, Any], tmp_path: Path) -> None:
    run = tampered(hostile_run, tmp_path)
    (run / "results.jsonl").unlink()
    (run / "cells" / "chaos-ok-h16-r0" / "record.json").write_text("not json")
    proc = run_cli(["report", str(run)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    md = (run / "report.md").read_text()
    assert "chaos-ok-h16-r0" in md.split("## Warnings")[1].split("##")[0]


def test_records_of_another_run_are_not_loaded(hostile_run: tuple[Path, Any], tmp_path: Path) -> None:
    run = tampered(hostile_run, tmp_path)
    jsonl = run / "results.jsonl"
    lines = jsonl.read_text().splitlines()
    stranger = json.loads(lines[0])
    stranger["run_id"] = "someone-else"
    jsonl.write_text("\n".join([json.dumps(stranger), *lines[1:]]) + "\n")
    (run / "cells" / stranger["cell_id"] / "record.json").write_text(json.dumps(stranger))  # the truth
    proc = run_cli(["report", str(run)])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads((run / "report.json").read_text())
    cells = [c for g in doc["cells"] for c in g["cells"]]
    assert stranger["cell_id"] not in cells
    assert any("someone-else" in w for w in doc["warnings"])


# ---------------------------------------------------------------------------------------------- 7: many batches


def test_many_batches_report_and_iters_bound(base_image: str, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(["hostile.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", *SMALL,
                    "--only", "chaos:manybatches"], cwd=project)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    cell = records(out)["chaos-manybatches-h16-r0"]
    assert cell["status"] == "ok" and len(cell["workload"]["times_ms"]) == 1_500_000
    assert (out / "report.md").is_file()

    refused = run_cli(["hostile.yaml", "--dry-run", "--set", "iters=100000000"], cwd=project)
    assert refused.returncode == 2
    assert "iters" in one_line(refused.stderr)


# ---------------------------------------------------------------------------------------------- 8: one out, one run


def test_a_used_out_needs_resume_and_resume_needs_a_manifest(base_image: str, project: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["hostile.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", "--no-report", *SMALL,
            "--only", "chaos:ok"]
    first = run_cli(args, cwd=project)
    assert first.returncode == 0, first.stdout + first.stderr
    before = (out / "cells" / "chaos-ok-h16-r0" / "record.json").read_text()
    again = run_cli(args, cwd=project)
    assert again.returncode == 2
    assert "--resume" in one_line(again.stderr)
    (out / "manifest.json").unlink()
    resumed = run_cli([*args, "--resume"], cwd=project)
    assert resumed.returncode == 2
    assert "manifest.json" in one_line(resumed.stderr)
    assert (out / "cells" / "chaos-ok-h16-r0" / "record.json").read_text() == before


# ---------------------------------------------------------------------------------------------- 5, 9: resume


def test_resume_refuses_changes_and_never_accepts_a_planted_record(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["hostile.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", *SMALL, "--only", "chaos:ok,chaos:forge",
            "--set", "timeout_s=20"]
    proc = start_cli(args, project, tmp_path / "logs")
    cell = out / "cells" / "chaos-forge-h16-r0"
    wait_for(lambda: any(p.name == "record.json" for p in cell.rglob("record.json")), proc, "the planted record")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "logs" / "stderr").read_text()

    # 9: a changed build argument or image for a framework already measured is refused, with the way out.
    changed_arg = run_cli([*args, "--resume", "--build-arg", "EXTRA=1"], cwd=project)
    assert changed_arg.returncode == 2
    assert "build" in one_line(changed_arg.stderr) and "--out" in changed_arg.stderr
    workload = project / "workloads" / "chaos.py"
    original = workload.read_text()
    workload.write_text(original + "\n# edited after the first cells ran\n")
    try:
        changed_image = run_cli([*args, "--resume"], cwd=project)
    finally:
        workload.write_text(original)
    assert changed_image.returncode == 2, changed_image.stdout + changed_image.stderr
    assert "chaos" in one_line(changed_image.stderr) and "image" in changed_image.stderr

    # 5: the record the container planted is not evidence: the cell runs again (and times out this time).
    resumed = run_cli([*args, "--resume"], cwd=project)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    cells = records(out)
    manifest = json.loads((out / "manifest.json").read_text())
    forge = cells["chaos-forge-h16-r0"]
    assert forge["run_id"] == manifest["run_id"] and forge["status"] == "timeout"
    assert "forged" not in (out / "report.md").read_text() + (out / "results.jsonl").read_text()
    (group,) = [g for g in json.loads((out / "report.json").read_text())["cells"] if g["variant"] == "forge"]
    assert group["status"] == "timeout" and group["stats_ms"] is None
    assert all(r["image"]["id"] for r in cells.values())


# ---------------------------------------------------------------------------------------------- signals


def test_ctrl_c_works_when_the_cli_inherited_sigint_ignored(
    docker_client: Any, base_image: str, project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    args = ["hostile.yaml", "--out", str(out), "--build-arg", BUILD_ARG, "-q", "--no-report", *SMALL,
            "--only", "chaos:slow", "--set", "iters=200"]
    proc = start_cli(args, project, tmp_path / "logs", ignore_sigint=True)
    labels = ["lstm-bench.cell=chaos-slow-h16-r0", f"lstm-bench.session={SESSION}"]  # ours, not another run's
    wait_for(lambda: docker_client.containers.list(filters={"label": labels, "status": "running"}), proc, "the cell")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, (tmp_path / "logs" / "stderr").read_text()
    assert json.loads((out / "manifest.json").read_text())["state"] == "interrupted"
