"""Browser benchmark (issue 3): slider release to updated metric, in real Chromium.

    python benchmarks/browser_slider.py [--moves N] [--sample digits_resnet]

Starts the app on a free localhost port, opens the Prune page in Debian's headless
Chromium (driven by playwright), moves a layer slider with the keyboard and measures
the time until the shown 'non-zero params' metric has changed. Prints one JSON object.
Target: median under 1.5 s.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
READ_METRIC = """() => {
    const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
      .find(e => e.innerText.startsWith('non-zero params'));
    return m ? m.querySelector('[data-testid="stMetricValue"]').innerText : null;
}"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moves", type=int, default=12)
    parser.add_argument("--sample", default="digits_resnet")
    args = parser.parse_args()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
         "--server.port", str(port), "--server.headless", "true"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.2)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
            page = browser.new_page(viewport={"width": 1500, "height": 1100})
            page.goto(f"{url}/prune?model=sample:{args.sample}", wait_until="networkidle")
            page.get_by_text("All layers", exact=True).wait_for(timeout=60_000)
            slider = page.get_by_role("slider").nth(2)
            times = []
            for i in range(args.moves):
                before = page.evaluate(READ_METRIC)
                slider.focus()
                start = time.perf_counter()
                page.keyboard.press("PageUp" if i % 2 == 0 else "PageDown")
                page.wait_for_function(
                    f"(before) => ({READ_METRIC})() !== before", arg=before, timeout=30_000
                )
                times.append(time.perf_counter() - start)
                page.wait_for_timeout(300)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps({
        "name": "browser_slider_to_metric",
        "sample": args.sample,
        "median_s": statistics.median(times),
        "max_s": max(times),
        "moves": len(times),
        "target": "median_s < 1.5 (slider release to updated metric, headless Chromium)",
    }, indent=2))


if __name__ == "__main__":
    main()
