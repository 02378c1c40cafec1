"""Documentation that is generated from code stays in step with it."""

from __future__ import annotations

import json

from orchestrator.results import CellRecord, Status
from tests.conftest import ROOT


def test_record_schema_doc_is_current() -> None:
    stored = json.loads((ROOT / "docs" / "record.schema.json").read_text())
    assert stored == CellRecord.model_json_schema(), "regenerate docs/record.schema.json (see docs/contract.md)"


def test_contract_names_every_status() -> None:
    text = (ROOT / "docs" / "contract.md").read_text()
    for status in Status:
        assert f"`{status.value}`" in text, status
