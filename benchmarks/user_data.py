"""User data benchmark: reading MNIST from IDX files, and what the live eval subset buys.

    python benchmarks/user_data.py [--rounds N] [--mnist FOLDER]

Uses the real MNIST test set in ../shared/data/mnist-t10k (checks and benchmarks only; it
is never copied into the project). Measures, as medians over `rounds`:

- `load_data("mnist:FOLDER")`: gunzip, SHA-256 of the uncompressed bytes against the
  published digests, IDX parsing, 10,000 images (checked: shape, first labels, class
  counts, value range; the issue keeps this real data out of the tests);
- a live slider move on a 784-300-100-10 MLP (LeNet-300-100's shape, untrained weights:
  the time does not depend on them): apply a plan and re-evaluate, on the app's default
  live subset (2,000 class-balanced samples) and on the whole 10,000, with the ratio.

Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pruneviz.core.plan import Plan
from pruneviz.data.readers import load_data
from pruneviz.data.sources import DEFAULT_EVAL_SUBSET
from pruneviz.data.tensors import TensorData
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.workbench import build_workbench

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-t10k"


def _median_ms(times: list[float]) -> float:
    return round(statistics.median(times) * 1000, 2)


def slider_moves(data: TensorData, subset: int | None, rounds: int) -> list[float]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100),
                          nn.ReLU(), nn.Linear(100, 10))
    bench = build_workbench("lenet300", model, data.x[:1], data, None, eval_subset=subset)
    session = bench.session
    times = []
    for i in range(rounds):
        amount = 0.3 + 0.6 * (i % 7) / 7  # a new plan each time: nothing is cached
        plan = session.uniform_plan(amount, "unstructured", "l1")[0]
        start = time.perf_counter()
        session.apply(plan)
        evaluate(bench.model, bench.eval_data)
        times.append(time.perf_counter() - start)
    session.apply(Plan())
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--mnist", type=Path, default=MNIST)
    args = parser.parse_args()
    if not args.mnist.is_dir():
        raise SystemExit(f"no MNIST folder at {args.mnist}; pass --mnist FOLDER")
    ref = f"mnist:{args.mnist}"
    loads = []
    for _ in range(max(3, args.rounds // 3)):
        start = time.perf_counter()
        data = load_data(ref)
        loads.append(time.perf_counter() - start)
    # The loader's check on real data: the published test split, verified and parsed.
    assert data.x.shape == (10_000, 1, 28, 28), data.x.shape
    assert data.y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(data.y).tolist()[:2] == [980, 1135]
    assert float(data.x.min()) == 0.0
    assert float(data.x.max()) == 1.0
    full = slider_moves(data, None, args.rounds)
    live = slider_moves(data, DEFAULT_EVAL_SUBSET, args.rounds)
    out: dict[str, Any] = {
        "threads": torch.get_num_threads(),
        "mnist_load_verified_ms": {"median": _median_ms(loads), "samples": len(data)},
        "slider_move_ms": {
            "whole_set_10000": _median_ms(full),
            f"live_subset_{DEFAULT_EVAL_SUBSET}": _median_ms(live),
            "ratio_subset_vs_whole": round(statistics.median(live) / statistics.median(full),
                                           3),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
