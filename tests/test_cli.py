"""The command-line contract scripts rely on: help, dry run, exit codes, one-line errors."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ROOT, run_cli


def test_help_explains_everything() -> None:
    proc = run_cli(["--help"])
    assert proc.returncode == 0
    for flag in (
        "--dry-run",
        "--only",
        "--hidden",
        "--set",
        "--runner",
        "--device",
        "--out",
        "--resume",
        "report",
        "compare",
        "Exit codes",
    ):
        assert flag in proc.stdout, flag


def test_dry_run_prints_one_line_per_cell_and_runs_nothing(tmp_path: Path) -> None:
    proc = run_cli(
        [
            str(ROOT / "matrix.yaml"),
            "--dry-run",
            "--only",
            "numpy-reference",
            "--hidden",
            "8,16,32",
            "--set",
            "repeats=1",
            "--out",
            str(tmp_path / "never"),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"numpy-reference hidden={h} impl=loop" for h in (8, 16, 32)]
    assert not (tmp_path / "never").exists()


def test_bad_input_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("frameworks: [numpy-reference]\nhidden: [0]\n")
    cases = [
        [str(bad), "--dry-run"],
        [str(tmp_path / "missing.yaml")],
        [str(ROOT / "matrix.yaml"), "--only", "no-such", "--dry-run"],
        [str(ROOT / "matrix.yaml"), "--only", "../../etc", "--dry-run"],
        [str(ROOT / "matrix.yaml"), "--set", "colour=red", "--dry-run"],
        [str(ROOT / "matrix.yaml"), "--hidden", "big", "--dry-run"],
        [str(ROOT / "matrix.yaml"), "--bogus"],
        [str(ROOT / "matrix.yaml"), "--resume"],
        ["report", str(tmp_path)],
    ]
    for args in cases:
        proc = run_cli(args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, (args, proc.stderr)
    proc = run_cli([str(bad), "--dry-run"])
    assert f"{bad}:2: key 'hidden.0'" in proc.stderr
