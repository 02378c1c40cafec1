"""Under CI a missing prerequisite fails its test with the reason; on a developer's machine it skips, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from orchestrator.venvs import VenvError
from tests import conftest, workload_helpers


def test_missing_fails_under_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(conftest, "IN_CI", True)
    with pytest.raises(pytest.fail.Exception, match=r"^no engine here \(CI is set: a missing prerequisite fails\)$"):
        conftest.missing("no engine here")
    monkeypatch.setattr(conftest, "IN_CI", False)
    with pytest.raises(pytest.skip.Exception, match=r"^no engine here$"):
        conftest.missing("no engine here")


@pytest.mark.parametrize(("ci", "outcome"), [(True, pytest.fail.Exception), (False, pytest.skip.Exception)])
def test_an_environment_that_cannot_be_installed_fails_under_ci(monkeypatch: pytest.MonkeyPatch, ci: bool,
                                                                outcome: Any) -> None:
    def broken(*_: Any) -> None:
        raise VenvError("`uv pip install ...` failed (exit 1): No solution found when resolving dependencies")

    monkeypatch.setattr(conftest, "IN_CI", ci)
    monkeypatch.setattr(workload_helpers, "ensure_venv", broken)
    with pytest.raises(outcome, match=r"^torch: cannot install its CPU environment on this machine: `uv pip install"):
        workload_helpers.venv_python("torch")


@pytest.mark.parametrize(("value", "ci"), [("true", True), ("1", True), ("", False), ("0", False), ("false", False)])
def test_ci_is_read_from_the_environment(value: str, ci: bool) -> None:
    code = "from tests.conftest import IN_CI; print(IN_CI)"
    env = {**os.environ, "CI": value}
    got = subprocess.run([sys.executable, "-c", code], cwd=conftest.ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert got.stdout.strip() == str(ci), got.stderr
