"""Browser benchmark: slider release to the first updated metric, and page switches, in
real Chromium.

    python benchmarks/browser_slider.py [--moves N] [--sample digits_resnet]
    python benchmarks/browser_slider.py --model benchmarks/live_models.py:resnet50 \
        --data images.npz          # (benchmarks/live.py writes such a set; see --images)

Starts the app on a free localhost port (on a sample, or on `--model` with `--data`),
opens the Prune page in Debian's headless Chromium (driven by playwright), moves a
layer slider with the keyboard and measures the time until the shown 'non-zero params'
metric has changed; then clicks through every page of the sidebar and measures the time
until each page's title is shown. Prints one JSON object with medians.
Targets (issue 17): slider -> first metric <= 2 x the model's forward_ms + 1 s (from
benchmarks/live.py); every page switch <= 2 s.
"""

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[1]
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]
READ_METRIC = """() => {
    const m = [...document.querySelectorAll('[data-testid="stMetric"]')]
      .find(e => e.innerText.startsWith('non-zero params'));
    return m ? m.querySelector('[data-testid="stMetricValue"]').innerText : null;
}"""
PAGES = {"Model": "pruneviz", "Inspect": "Inspect", "Sensitivity": "Sensitivity",
         "Prune": "Prune", "Fine-tune": "Fine-tune", "Deploy": "Deploy",
         "Trade-offs": "Trade-offs", "Export": "Export"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slider_moves(page: Page, moves: int) -> list[float]:
    """Seconds from a layer slider's key press to the changed metric, per move."""
    page.get_by_text("All layers", exact=True).wait_for(timeout=600_000)
    page.wait_for_function(f"() => ({READ_METRIC})() !== null", timeout=600_000)
    # the first layer's own slider: after 'Set all layers to' (and the layer picker)
    slider = page.get_by_role("slider").nth(1)
    times = []
    for i in range(moves):
        before = page.evaluate(READ_METRIC)
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("PageUp" if i % 2 == 0 else "PageDown")
        page.wait_for_function(f"(before) => ({READ_METRIC})() !== before", arg=before,
                               timeout=600_000)
        times.append(time.perf_counter() - start)
        page.wait_for_timeout(500)
    return times


def page_switches(page: Page, rounds: int) -> dict[str, list[float]]:
    """Seconds from a sidebar click to the page's title, per page and round."""
    found: dict[str, list[float]] = {name: [] for name in PAGES}
    for _ in range(rounds):
        for name, title in PAGES.items():
            link = page.locator('[data-testid="stSidebarNav"] a').filter(has_text=name).first
            start = time.perf_counter()
            link.click()
            page.locator("h1").filter(has_text=title).first.wait_for(timeout=600_000)
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
                " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText"
                ".includes('Running')", timeout=600_000)
            found[name].append(time.perf_counter() - start)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moves", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=2, help="page-switch rounds")
    parser.add_argument("--sample", default="digits_resnet")
    parser.add_argument("--model", help="file.py:factory (then --data is needed)")
    parser.add_argument("--data", help="evaluation data for --model")
    parser.add_argument("--images", action="store_true",
                        help="with --model: 256 random 3x64x64 images of 1,000 classes")
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            data = args.data
            if data is None:
                sys.path.insert(0, str(ROOT / "benchmarks"))
                from live import synthetic_images

                data = str(synthetic_images(Path(tmp)))
            app_args = ["--", "--model", args.model, "--data", data]
            query = ""
        else:
            app_args, query = [], f"?model=sample:{args.sample}"
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
             "--server.port", str(port), "--server.headless", "true", *app_args],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                page = browser.new_page(viewport={"width": 1500, "height": 1100})
                start = time.perf_counter()
                page.goto(f"{url}/prune{query}", wait_until="networkidle")
                moves = slider_moves(page, args.moves)
                first_load = time.perf_counter() - start - sum(moves) - 0.5 * len(moves)
                switches = page_switches(page, args.rounds)
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=10)
    every = [t for ts in switches.values() for t in ts]
    print(json.dumps({
        "name": "browser_slider_to_metric",
        "model": args.model or f"sample:{args.sample}",
        "first_load_s": first_load,
        "median_s": statistics.median(moves),
        "max_s": max(moves),
        "moves": len(moves),
        "page_switch_median_s": {k: statistics.median(v) for k, v in switches.items()},
        "page_switch_max_s": max(every),
        "targets": {"median_s": "<= 2 x forward_ms + 1 s (forward_ms: benchmarks/live.py)",
                    "page_switch_max_s": "<= 2"},
    }, indent=2))


if __name__ == "__main__":
    main()
