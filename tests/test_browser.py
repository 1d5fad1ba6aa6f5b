"""One real-browser test: the server on a free localhost port, Debian's headless Chromium
driven by playwright; a slider moves and the measured metric changes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "tests" / "artifacts"
LAUNCH_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

pytestmark = [
    pytest.mark.skipif(not os.path.exists(CHROMIUM),
                       reason=f"Chromium is not installed at {CHROMIUM} "
                       "(Debian package 'chromium'; .ci/run installs it)"),
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1",
         "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"the Streamlit server did not start:\n{out}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _metric(page: Any, label: str) -> str:
    metric = page.get_by_test_id("stMetric").filter(has_text=label).first
    return str(metric.get_by_test_id("stMetricValue").inner_text())


def test_slider_move_updates_the_measured_metric(server: str) -> None:
    playwright = pytest.importorskip("playwright.sync_api")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{server}/prune", wait_until="networkidle")
            page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
            before = _metric(page, "accuracy")
            slider = page.get_by_role("slider", name="conv2 sparsity %")
            slider.focus()
            start = time.monotonic()
            for _ in range(90):
                page.keyboard.press("ArrowRight")
            page.wait_for_function(
                """(before) => {
                    const el = [...document.querySelectorAll('[data-testid="stMetric"]')]
                      .find(m => m.innerText.startsWith('accuracy'));
                    return el && !el.innerText.includes(before);
                }""",
                arg=before, timeout=30_000,
            )
            elapsed = time.monotonic() - start
            after = _metric(page, "accuracy")
            page.screenshot(path=str(ARTIFACTS / "prune.png"), full_page=True)
        finally:
            browser.close()
    assert after != before
    assert elapsed < 30
