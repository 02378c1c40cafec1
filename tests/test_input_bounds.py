"""Bounds on every input (issue 17): absurd numbers and files that cannot be a matrix are refused with one line and
exit 2, before anything is expanded, read whole or run. Through the real CLI; no Docker needed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import copy_project, run_cli


def refused(proc: object, *words: str) -> None:
    lines = proc.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert proc.returncode == 2 and len(lines) == 1, proc.stdout + proc.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in proc.stderr and all(w in lines[0] for w in words), lines  # type: ignore[attr-defined]


@pytest.mark.parametrize(("setting", "words"), [
    ("lr=.inf", ("'lr'", "finite")),
    ("lr=.nan", ("'lr'", "finite")),
    ("timeout_s=.inf", ("'timeout_s'", "finite")),
    ("timeout_s=1e10", ("'timeout_s'", "604800")),
    ("build_timeout_s=.inf", ("'build_timeout_s'", "finite")),
    ("repeats=100000000", ("'repeats'",)),
    ("seed=99999999999", ("'seed'",)),
])
def test_absurd_numbers_are_one_line_exit_2(setting: str, words: tuple[str, ...]) -> None:
    refused(run_cli(["matrix.yaml", "--dry-run", "--set", setting]), *words)


def test_a_plan_too_large_is_refused_before_it_is_expanded() -> None:
    hidden = ",".join(str(h) for h in range(1, 4001))
    refused(run_cli(["matrix.yaml", "--dry-run", "--hidden", hidden, "--set", "repeats=1000"]), "cells")


def test_a_matrix_that_is_a_device_a_fifo_or_huge_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)  # reading it would block forever
    sparse = tmp_path / "sparse.yaml"
    with sparse.open("wb") as f:
        f.truncate(1536 << 20)  # 1.5 GB of nothing, read whole it is 1.5 GB of memory
    refused(run_cli(["/dev/zero", "--dry-run"], timeout=60), "/dev/zero", "not a regular file")
    refused(run_cli([str(fifo), "--dry-run"], timeout=60), "fifo.yaml", "not a regular file")
    refused(run_cli([str(sparse), "--dry-run"], timeout=60), "sparse.yaml", "larger than")


def test_a_framework_yaml_nested_5000_deep_is_one_line_exit_2(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    deep = project / "images" / "deep"
    deep.mkdir()
    (deep / "Dockerfile").write_text("FROM scratch\n")
    (deep / "framework.yaml").write_text("note: " + "[" * 5000 + "]" * 5000 + "\n")
    refused(run_cli(["matrix.yaml", "--dry-run"], cwd=project), "framework.yaml", "nested")
