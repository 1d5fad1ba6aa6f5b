"""One real-browser test of lesson 5 (collapse and recovery) in Chinese at 1280x720 in the
classroom view: every step predicted, measured and revealed, with a screenshot of each.

The server is `pruneviz serve` on a free localhost port, the browser Debian's headless
Chromium driven by pip's playwright (never `playwright install`), as in test_browser.py."""

from __future__ import annotations

import os
import re
from typing import Any

import pytest

from pruneviz.i18n import _, use_language
from tests.fixtures.browser import ARTIFACTS, CHROMIUM, LAUNCH_FLAGS, serve

WIDTH, HEIGHT = 1280, 720
STEP_TIMEOUT = 300_000  # ms: a retraining step on a busy 2-core machine

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium is not installed at {CHROMIUM} "
                       "(Debian package 'chromium'; .ci/run installs it)"),
    pytest.mark.slow,
]


def zh(message: str) -> str:
    """`message` as the Chinese page shows it (from the catalogues)."""
    with use_language("zh-CN"):
        return _(message)


def _metric(page: Any, label: str) -> float:
    """The percentage shown by the metric labelled `label`."""
    metric = page.get_by_test_id("stMetric").filter(has_text=label).first
    text = str(metric.get_by_test_id("stMetricValue").inner_text())
    found = re.search(r"(\d+(?:\.\d+)?)%", text)
    assert found, text
    return float(found.group(1))


def _shot(page: Any, name: str) -> None:
    page.wait_for_timeout(800)  # charts finish drawing
    page.screenshot(path=str(ARTIFACTS / f"learn_lesson5_zh_{WIDTH}x{HEIGHT}_{name}.png"))


def _measure(page: Any, shown: str) -> None:
    """Press the step's button and wait until `shown` (a revealed metric's label) is up."""
    page.get_by_role("button", name=zh("Lock in my prediction and measure")).click()
    page.get_by_test_id("stMetric").filter(has_text=shown).first.wait_for(
        timeout=STEP_TIMEOUT)
    page.get_by_test_id("stMetric").filter(has_text=shown).first.scroll_into_view_if_needed()


def test_lesson5_in_chinese_end_to_end() -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    button_name = zh("Lock in my prediction and measure")
    step_1 = zh("Your prediction: accuracy after pruning")
    title = zh("Lesson {number}: {title}").format(number=5, title=zh("Collapse and recovery"))
    with serve() as url, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.goto(f"{url}/learn?lang=zh-CN&lesson=5&view=classroom",
                      wait_until="networkidle")
            page.get_by_text(step_1).wait_for(timeout=120_000)
            heading = page.get_by_role("heading", name=title).count()
            button = page.get_by_role("button", name=button_name).bounding_box()
            _shot(page, "1_predict")
            _measure(page, zh("Accuracy after pruning"))
            pruned = _metric(page, zh("Accuracy after pruning"))
            _shot(page, "2_collapse")
            _measure(page, zh("Accuracy after retraining"))
            retrained = _metric(page, zh("Accuracy after retraining"))
            _shot(page, "3_retrained")
            _measure(page, zh("Gradual (AGP)"))
            gradual = _metric(page, zh("Gradual (AGP)"))
            _shot(page, "4_gradual")
            page.get_by_role("tab", name=zh("Training curves")).click()
            _shot(page, "5_curves")
            body = page.locator("body").inner_text()
            page.evaluate("window.scrollTo(0, 0)")
            page.get_by_test_id("stMain").evaluate("el => el.scrollTo(0, 0)")
            _shot(page, "6_done")
            progress = page.get_by_test_id("stProgress").inner_text()
        finally:
            browser.close()
    assert heading == 1  # the lesson's title, in Chinese
    assert button is not None
    assert button["y"] + button["height"] <= HEIGHT  # step 1's button on the first screen
    assert pruned < retrained  # it collapsed, then came back
    assert 0 <= gradual <= 100
    took = zh("Measured on the real model in {seconds:.1f} s.").split("{")[0]
    seconds = [float(v) for v in re.findall(re.escape(took) + r"\s*([\d.]+)", body)]
    assert len(seconds) == 3  # each step says how long its measurement took
    print(f"lesson 5 steps measured in {seconds} s")
    assert "Lock in" not in body
    assert zh("{done} of {total} lessons done").format(done=1, total=6) in progress
