"""report.html in a real browser: headless Chromium renders it, the screenshot is not blank, nothing is logged to
the console, nothing is fetched from the network, and a failure reason's markup stays text."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from report_helpers import as_framework, derived_run, failed

from orchestrator.report import render
from orchestrator.report.load import load_run
from orchestrator.results import Status
from tests.conftest import missing

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
needs_chromium = pytest.mark.usefixtures("chromium")
# What Chromium's stderr log shows for console messages and uncaught exceptions of the page.
PAGE_ERROR = re.compile(r":CONSOLE[:(]|Uncaught ")
SCRIPT_REASON = "<script>document.title='pwned'</script> RuntimeError: boom"

pytest_plugins = ["report_fixtures"]  # the real-run fixtures (tests/report_fixtures.py)


@pytest.fixture
def chromium() -> str:
    if CHROMIUM is None:
        missing("headless Chromium (chromium) is not installed")
    return CHROMIUM


def screenshot(page: Path, png: Path) -> str:
    """Render `page` headless into `png`; return Chromium's log."""
    assert CHROMIUM is not None
    proc = subprocess.run(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--hide-scrollbars", f"--screenshot={png}", "--window-size=1280,2000", page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert png.is_file(), f"no screenshot; chromium said:\n{proc.stderr[-3000:]}"
    return proc.stderr


@pytest.fixture
def report_with_failure(real_run: Path, tmp_path: Path) -> Path:
    rec = load_run(real_run).records[0]
    crash = failed(rec, Status.CRASHED, SCRIPT_REASON, hidden=32, cell_id=rec.cell_id.replace(f"h{rec.hidden}", "h32"))
    run = derived_run(real_run, tmp_path / "run", extra=[crash])
    render(run)
    return run / "report.html"


def test_script_in_a_failure_reason_is_escaped(report_with_failure: Path) -> None:
    html = report_with_failure.read_text()
    assert "<script" not in html.lower()
    assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in html
    md = (report_with_failure.parent / "report.md").read_text()
    assert "<script" not in md and "&lt;script&gt;" in md


def test_report_is_self_contained(report_with_failure: Path) -> None:
    html = report_with_failure.read_text()
    refs = re.findall(r"""(?:src|href)\s*=\s*["']([^"']*)""", html, flags=re.IGNORECASE)
    assert refs, "the report embeds its plots"
    assert all(r.startswith("data:image/png;base64,") for r in refs), refs
    assert "<link" not in html.lower() and "@import" not in html and "url(" not in html


@needs_chromium
def test_page_error_detection_works(tmp_path: Path) -> None:
    # The check below must be able to fail: a page that throws is caught.
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>throw new Error('boom')</script></body></html>")
    assert PAGE_ERROR.search(screenshot(bad, tmp_path / "bad.png"))


@needs_chromium
def test_report_renders_in_chromium_without_errors(report_with_failure: Path, tmp_path: Path) -> None:
    png = tmp_path / "shot.png"
    log = screenshot(report_with_failure, png)
    errors = [ln for ln in log.splitlines() if PAGE_ERROR.search(ln)]
    assert not errors, errors
    pixels = imread(png)[..., :3]
    assert pixels.shape[:2] == (2000, 1280)
    assert float(np.std(pixels)) > 0.05, "the screenshot is (nearly) blank"
    # Text and plot lines: a good share of rows is not plain background.
    busy_rows = np.mean(np.std(pixels, axis=(1, 2)) > 0.02)
    assert busy_rows > 0.3


# report.html's colours of the answer box and of a column's fastest cell (templates/report.html.j2).
ANSWER_BG = (0xF0, 0xF7, 0xF2)
FASTEST_BG = (0xD8, 0xF3, 0xDC)


def _pixels_of(pixels: np.ndarray, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.all(np.abs(pixels * 255 - np.array(rgb)) <= 2, axis=-1)


@needs_chromium
def test_the_answer_section_and_the_fastest_cells_show_at_the_top_in_chromium(real_run: Path, tmp_path: Path) -> None:
    records = load_run(real_run).records
    twins = [as_framework(r, "numpy-twin", "numpy twin") for r in records]  # a tie at every size
    slow = [as_framework(r, "numpy-slow", "numpy slow", workload=r.workload.model_copy(
        update={"times_ms": [100 * t for t in r.workload.times_ms]})) for r in records if r.workload]
    run = derived_run(real_run, tmp_path / "run", extra=twins + slow)
    render(run)
    png = tmp_path / "top.png"
    log = screenshot(run / "report.html", png)
    assert not [ln for ln in log.splitlines() if PAGE_ERROR.search(ln)]
    pixels = imread(png)[..., :3]
    answer_rows = np.flatnonzero(_pixels_of(pixels, ANSWER_BG).sum(axis=1) > 600)  # the box spans the page width
    assert answer_rows.size and answer_rows[0] < 200, "the answer box is not at the top of the page"
    fastest = _pixels_of(pixels, FASTEST_BG)
    assert fastest.sum() > 500, "no highlighted fastest cell on the first screen"
    assert np.flatnonzero(fastest.any(axis=1))[0] > answer_rows[-1]  # the tables come after the answer
