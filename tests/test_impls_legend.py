"""framework.yaml's impl_notes (what each impl runs) and the report's "Impls" legend built from them."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_helpers import as_framework, derived_run

from orchestrator.errors import InputError
from orchestrator.frameworks import _load_meta, discover
from orchestrator.report import render
from orchestrator.report.load import load_run
from tests.workload_helpers import ROOT

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


def test_every_impl_this_project_declares_is_described() -> None:
    for name, fw in discover(ROOT / "images").items():
        assert set(fw.meta.impl_notes) == set(fw.meta.impls), f"images/{name}/framework.yaml impl_notes"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A typo: "compild" is described, "compiled" is not, and the file says so where impl_notes starts.
        ("label: x\nimpls: [fused, compiled]\nimpl_notes:\n  fused: a\n  compild: b\n",
         "framework.yaml:4: key 'impl_notes': Value error, describes compild, not among impls [fused, compiled]"),
        ("impl_notes:\n  loop: b\n", "key 'impl_notes': Value error, describes loop, not among impls []"),
        ("impls: [loop]\nimpl_notes: [loop]\n", "framework.yaml:2: key 'impl_notes': Input should be a valid dict"),
        ("impls: [loop]\nimpl_notes:\n  loop: " + "x" * 301 + "\n",
         "key 'impl_notes.loop': String should have at most 300 characters"),
    ],
)
def test_impl_notes_errors_name_file_line_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "framework.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as err:
        _load_meta(path)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


def md_table_after(md: str, heading: str) -> list[list[str]]:
    lines = md.split(f"## {heading}", 1)[1].split("\n## ", 1)[0].splitlines()
    return [[c.strip() for c in ln.strip("|").split(" | ")] for ln in lines
            if ln.startswith("|") and not ln.startswith("|---")]


def test_the_report_says_which_impl_is_which(real_run: Path, tmp_path: Path) -> None:
    rec = next(r for r in load_run(real_run).records if r.hidden == 8)
    notes = {n: fw.meta.impl_notes for n, fw in discover(ROOT / "images").items()}
    # Real measurements filed as other frameworks' impls (times reused, never invented): torch's compiled and loop,
    # and TensorFlow's fused asked for but recorded as the keras-loop that a CPU runs instead.
    extra = [
        as_framework(rec, "torch", "torch", impl="compiled", cell_id="torch-compiled-h8-r0",
                     params={**(rec.params or {}), "impl": "compiled"}),
        as_framework(rec, "torch", "torch", impl="loop", cell_id="torch-loop-h8-r0",
                     params={**(rec.params or {}), "impl": "loop"}),
        as_framework(rec, "tensorflow", "TensorFlow", impl="keras-loop", cell_id="tensorflow-fused-h8-r0",
                     params={**(rec.params or {}), "impl": "fused"}),
    ]
    run = derived_run(real_run, tmp_path / "run", extra=extra)
    render(run)
    rows = md_table_after((run / "report.md").read_text(), "Impls: which implementation is which")
    assert rows[0] == ["row", "impl", "what it runs"]
    by_impl = {(r[0].replace("\\", ""), r[1]): r[2] for r in rows[1:]}  # Markdown escapes the row's [ ]
    assert by_impl[("torch [compiled]", "compiled")] == notes["torch"]["compiled"]
    assert by_impl[("torch [loop]", "loop")] == notes["torch"]["loop"]
    assert by_impl[("TensorFlow", "keras-loop")] == notes["tensorflow"]["fused"]  # described by the impl asked for
    assert by_impl[(rec.label, "loop")] == notes["numpy-reference"]["loop"]
    html = (run / "report.html").read_text()
    assert '<section id="impls">' in html and "torch.compile (default mode, TorchInductor)" in html
