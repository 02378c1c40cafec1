"""Session-scoped real runs for the report and compare tests (see report_helpers.make_real_run).

Test modules load these with `pytest_plugins = ["report_fixtures"]`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import make_real_run


@pytest.fixture(scope="session")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two hidden sizes, one repeat each."""
    return make_real_run(tmp_path_factory.mktemp("run-a"), run_id="run-a")


@pytest.fixture(scope="session")
def real_run_b(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same matrix again: a second, independent run to compare against run A."""
    return make_real_run(tmp_path_factory.mktemp("run-b"), run_id="run-b")


@pytest.fixture(scope="session")
def repeated_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One hidden size, three repeats (fresh processes) to pool."""
    return make_real_run(tmp_path_factory.mktemp("run-rep"), hidden=(8,), repeats=3, run_id="run-rep")


@pytest.fixture(scope="session")
def run_h128(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cell of the 2016 workload at hidden 128 (batch 128, seq 64, vocab 10k), measured on the CPU."""
    return make_real_run(tmp_path_factory.mktemp("run-128"), hidden=(128,), run_id="run-128",
                         batch=128, seq_len=64, vocab=10000)
