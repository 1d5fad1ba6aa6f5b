"""How long each lesson's live steps take: the measurement behind each "Lock in my
prediction and measure" press, called as the Learn page calls it, on the teaching sample.

Each repetition is a fresh process that runs the six lessons' steps in order, as a class
would (so its first steps pay for loading the sample and warming PyTorch up, as a freshly
started server's would). Prints JSON: per step and per lesson the median seconds over the
repetitions with the range, and each lesson's total against the issue's target of 30 s for
a lesson's live steps (the ratio: under 1 meets it).

    python benchmarks/lessons.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

TARGET_SECONDS = 30.0


def steps() -> list[tuple[str, str, Callable[[], Any]]]:
    """(lesson, step, the call the page makes), in the order a class meets them."""
    from pruneviz.workflows.lessons import TEACHING_SAMPLE as ref
    from pruneviz.workflows.lessons import budgets, criteria, layers, masking, recovery, weights

    first_conv = criteria.conv_layers(ref)[0]
    middle = weights.layer_names(ref)[1]
    return [
        ("1 weights", "one layer zeroed", lambda: weights.zero_layer(ref, middle, 0.8)),
        ("1 weights", "the model's curve", lambda: weights.model_curve(ref)),
        ("2 masking", "masked vs slimmed, timed", lambda: masking.masking_vs_removing(ref)),
        ("2 masking", "the sparse file", lambda: masking.sparse_file(ref)),
        ("3 layers", "each layer alone", lambda: layers.layer_sensitivity(ref)),
        ("4 criteria", "three criteria", lambda: criteria.compare_criteria(ref, first_conv)),
        ("5 recovery", "90% at once", lambda: recovery.collapse(ref)),
        ("5 recovery", "retrain one-shot",
         lambda: recovery.retrain_oneshot(ref, "unstructured")),
        ("5 recovery", "gradual (AGP)", lambda: recovery.retrain_gradual(ref, "unstructured")),
        ("6 budgets", "sensitivity", lambda: budgets.layer_sensitivity(ref)),
        ("6 budgets", "uniform vs guided", lambda: budgets.compare_budgets(ref, "macs", 0.5)),
    ]


def child() -> None:
    times = []
    for lesson, step, call in steps():
        start = time.perf_counter()
        call()
        times.append([lesson, step, time.perf_counter() - start])
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return
    runs: list[list[list[Any]]] = []
    for _ in range(args.repeats):
        out = subprocess.run([sys.executable, __file__, "--child"], check=True,
                             capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    per_step: dict[tuple[str, str], list[float]] = {}
    per_lesson: dict[str, list[float]] = {}
    for run in runs:
        totals: dict[str, float] = {}
        for lesson, step, seconds in run:
            per_step.setdefault((lesson, step), []).append(seconds)
            totals[lesson] = totals.get(lesson, 0.0) + seconds
        for lesson, total in totals.items():
            per_lesson.setdefault(lesson, []).append(total)
    print(json.dumps({
        "machine": {"cpus": os.cpu_count(), "load_1min_at_end": os.getloadavg()[0]},
        "repeats": args.repeats,
        "steps": [{"lesson": lesson, "step": step, "median_s": round(statistics.median(v), 3),
                   "min_s": round(min(v), 3), "max_s": round(max(v), 3)}
                  for (lesson, step), v in per_step.items()],
        "lessons": [{"lesson": lesson, "median_total_s": round(statistics.median(v), 3),
                     "max_total_s": round(max(v), 3),
                     "ratio_to_30s_target": round(statistics.median(v) / TARGET_SECONDS, 3)}
                    for lesson, v in per_lesson.items()],
    }, indent=1))


if __name__ == "__main__":
    main()
