"""The report in a real browser: headless Chromium (Debian's package) driven by playwright.

The page loads offline with no console error, no failed request and no request but the page
itself; every image decodes and is not blank as rendered. A screenshot of the whole page is saved
in the test's tmp dir, and copied to ``$GRADFLOW_REPORT_SCREENSHOT`` when that is set.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from matplotlib.image import imread

from lightning_gradflow.report import build_report

pytestmark = pytest.mark.browser

CHROMIUM = Path(shutil.which("chromium") or "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip(f"Chromium is not installed ({CHROMIUM}); apt-get install chromium")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason='playwright is not installed (pip install -e ".[dev]")'
    )
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield chromium
        chromium.close()


def test_report_renders_in_chromium(browser, sweep_dir, tmp_path):
    report = build_report(sweep_dir, tmp_path / "report")
    url = report.resolve().as_uri()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, failed, requested = [], [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
    page.on("request", lambda r: requested.append(r.url))
    response = page.goto(url, wait_until="load")
    assert response is None or response.ok
    assert "Gradient-flow report" in page.title()
    images = page.eval_on_selector_all(
        "img", "imgs => imgs.map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
    )
    # overview, 2 heatmaps, 2 pictures, 1 alert timeline, 1 forecast
    assert len(images) == 7
    for alt, complete, width, height in images:
        assert complete and width > 100 and height > 100, alt
    for img in page.locator("img").all():
        img.scroll_into_view_if_needed()
        pixels = imread(io.BytesIO(img.screenshot()))[..., :3]
        assert pixels.std() > 0.01, img.get_attribute("alt")
    assert page.locator("#summary").inner_text().startswith("Vanishing gradients: 1 of 2 runs")
    screenshot = tmp_path / "report.png"
    page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    assert errors == [] and failed == []
    assert [u for u in requested if not u.startswith("data:")] == [url]
    assert imread(screenshot)[..., :3].std() > 0.01
    if os.environ.get("GRADFLOW_REPORT_SCREENSHOT"):
        shutil.copyfile(screenshot, os.environ["GRADFLOW_REPORT_SCREENSHOT"])
