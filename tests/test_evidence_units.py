"""The evidence chain's mechanisms on the real filesystem, without a container: the untrusting result read, the
iterative tree removal, text hygiene and the median interval against its exact definition."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from orchestrator.report.stats import median_ci_ranks
from orchestrator.runners.base import MAX_RESULT_BYTES, RESULT_FILE, read_result
from orchestrator.store import remove_tree
from orchestrator.text import csv_cell, md_text, visible


def cell(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "io").mkdir()
    return tmp_path, tmp_path / "io" / RESULT_FILE


def test_a_fifo_without_a_writer_is_described_not_read(tmp_path: Path) -> None:
    cell_dir, result = cell(tmp_path)
    os.mkfifo(result)
    got = read_result(cell_dir)  # would block forever with a plain open()
    assert got.text is None and "FIFO" in (got.problem or "")


@pytest.mark.parametrize("target", ["/proc/self/fd/0", "/etc/hostname", RESULT_FILE])
def test_a_link_is_never_followed(tmp_path: Path, target: str) -> None:
    cell_dir, result = cell(tmp_path)
    os.symlink(target, result)
    got = read_result(cell_dir)
    assert got.text is None and "symbolic link" in (got.problem or "")


def test_a_directory_or_an_oversized_file_is_described(tmp_path: Path) -> None:
    cell_dir, result = cell(tmp_path)
    result.mkdir()
    assert "directory" in (read_result(cell_dir).problem or "")
    result.rmdir()
    with result.open("wb") as f:
        f.truncate(MAX_RESULT_BYTES + 1)  # sparse: costs no disk
    got = read_result(cell_dir)
    assert got.text is None and (got.problem or "").startswith("result JSON is")


def test_a_regular_result_is_read_and_strays_are_named(tmp_path: Path) -> None:
    cell_dir, result = cell(tmp_path)
    result.write_text('{"a": 1}')
    (cell_dir / "io" / "record.json").write_text("{}")
    got = read_result(cell_dir)
    assert got.text == '{"a": 1}' and got.problem is None and got.stray == ("'record.json'",)
    assert read_result(tmp_path / "missing") == read_result(tmp_path / "missing").__class__()


def test_remove_tree_never_follows_links_and_opens_closed_directories(tmp_path: Path) -> None:
    top = here = tmp_path / "io"
    for _ in range(50):
        here.mkdir()
        os.symlink(tmp_path / "keep", here / "link")  # a link to outside: removed, its target kept
        (here / "f").write_text("x")
        here = here / "d"
    here.mkdir()
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "precious").write_text("x")
    os.chmod(here, 0)  # a directory the workload left without permissions
    remove_tree(top)
    assert not top.exists() and (tmp_path / "keep" / "precious").is_file()


def test_remove_tree_deeper_than_path_max(tmp_path: Path) -> None:
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(3000):
        os.mkdir("dd", dir_fd=fd)
        child = os.open("dd", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    remove_tree(top)
    assert not top.exists()


HOSTILE = "=cmd\u202eevil\x1b[31m\x00 [x](javascript:alert(1)) https://evil.example"


def test_text_hygiene() -> None:
    shown = visible(HOSTILE)
    assert "\u202e" not in shown and "\x1b" not in shown and "\x00" not in shown
    assert "\\u202e" in shown and "\\x1b" in shown and "\\x00" in shown
    md = md_text(HOSTILE)
    assert "[x](" not in md and "https://" not in md and "\\[x\\]" in md
    assert csv_cell(HOSTILE).startswith("'=") and csv_cell("-1 exit").startswith("'-")
    assert csv_cell(-1.5) == -1.5 and csv_cell(None) is None and csv_cell("ok") == "ok"


def exact_ranks(n: int, confidence: float = 0.95) -> tuple[int, float]:
    """The definition, with exact integers: the largest r with 1 - 2 P(Bin(n, 1/2) <= r - 1) >= confidence."""
    best = (1, 1.0 - 2 / 2**n)
    tail = 0
    for r in range(1, (n + 1) // 2 + 1):
        tail += math.comb(n, r - 1)
        coverage = 1.0 - (2 * tail) / 2**n  # int / int: correctly rounded, no overflow
        if coverage < confidence:
            break
        best = (r, coverage)
    return best


@pytest.mark.parametrize("n", [*range(1, 120), 250, 999, 1000, 2047])
def test_median_interval_ranks_match_the_exact_definition(n: int) -> None:
    r, coverage = median_ci_ranks(n)
    want_r, want_cov = exact_ranks(n)
    assert r == want_r and coverage == pytest.approx(want_cov, abs=1e-12)
