"""App benchmark (issue 3): a slider move on the Prune page, as a full page rerun.

    python benchmarks/app_slider.py [--moves N]

Drives the real app with Streamlit's AppTest on `digits_cnn` and `digits_resnet`: each
move sets one layer's sparsity slider to a new value and reruns the whole script —
plan change, re-evaluation of the test split, file sizes, latency (15 timed runs),
figures. Prints one JSON object with the median and spread per sample.
Target: median under 300 ms on 2 cores.
"""

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import MODEL_KEY, WORKSPACE_KEY, widget_key

APP = str(Path(__file__).resolve().parents[1] / "app.py")


def bench_sample(sample: str, moves: int) -> dict[str, object]:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state[MODEL_KEY] = f"sample:{sample}"
    at.run()
    at.switch_page("app_pages/prune.py").run()
    layers = at.session_state[WORKSPACE_KEY].bench.session.layer_names
    rng = random.Random(0)
    times = []
    for _ in range(moves):
        layer = rng.choice(layers)
        slider = at.slider(key=widget_key("sp", layer))
        value = rng.choice([v for v in range(5, 100, 5) if v != slider.value])
        slider.set_value(value)
        start = time.perf_counter()
        at.run()
        times.append((time.perf_counter() - start) * 1000.0)
        assert not at.exception, at.exception
    return {
        "median_ms": statistics.median(times),
        "p90_ms": sorted(times)[int(0.9 * (len(times) - 1))],
        "max_ms": max(times),
        "moves": moves,
        "layers": len(layers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--moves", type=int, default=25)
    args = parser.parse_args()
    results = {s: bench_sample(s, args.moves) for s in ["digits_cnn", "digits_resnet"]}
    print(json.dumps({
        "name": "app_slider_rerun",
        "samples": results,
        "target": "median_ms < 300 (full page rerun incl. re-evaluation, AppTest, 2 cores)",
        "threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
