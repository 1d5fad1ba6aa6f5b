"""Sensitivity benchmark: our analysis against the naive loop, same numbers required.

    python benchmarks/sensitivity.py [--rounds R]

1. For every sample and for unstructured and filter granularity (l1, the default 11
   levels): the naive loop — apply the one-item plan and re-run the whole model on the
   test split for every point (`SensitivityRun(reuse=False)`, which measures exactly the
   same fields) — and ours (shared baseline, repeated amounts once, prefix reuse). Each
   is timed `rounds` times in alternation; medians and the ratio naive / ours are
   reported, with whether every number is identical. Target: >= 2x on digits_resnet.
2. Allocation at 80% overall sparsity on digits_cnn and digits_mlp: the measured metric
   of uniform, global and sensitivity-guided plans, the sensitivity prediction, and the
   time each fit takes.

Prints one JSON object. Takes about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from typing import Any

import torch

from pruneviz.data.samples import sample_names
from pruneviz.workflows.allocation import Budget, BudgetKind, Method, plan_for_budget
from pruneviz.workflows.sensitivity import SensitivityResult, SensitivityRun
from pruneviz.workflows.workbench import open_workbench

TARGET = ">= 2x faster than the naive loop on digits_resnet, identical numbers"


def _numbers(result: SensitivityResult) -> dict[str, list[tuple[Any, ...]]]:
    return {k: [(p.level, p.metric, p.loss, p.params_nonzero, p.macs, p.size_bytes)
                for p in v] for k, v in result.points.items()}


def analysis(name: str, granularity: str, rounds: int) -> dict[str, Any]:
    bench = open_workbench(f"sample:{name}")
    times: dict[str, list[float]] = {"naive": [], "ours": []}
    results: dict[str, SensitivityResult] = {}
    evaluated: dict[str, int] = {}
    for _ in range(rounds):
        for mode in ("naive", "ours"):
            run = SensitivityRun(bench.session, bench.eval_data, granularity=granularity,
                                 reuse=mode == "ours")  # a fresh cache every time
            start = time.perf_counter()
            results[mode] = run.run()
            times[mode].append(time.perf_counter() - start)
            evaluated[mode] = run.evaluated
    naive, ours = statistics.median(times["naive"]), statistics.median(times["ours"])
    return {
        "items": len(results["ours"].items), "points": sum(
            len(v) for v in results["ours"].points.values()),
        "forward_passes": evaluated,
        "naive_s": round(naive, 3), "ours_s": round(ours, 3),
        "all_s": {k: [round(t, 3) for t in v] for k, v in times.items()},
        "speedup": round(naive / ours, 2),
        "identical": _numbers(results["naive"]) == _numbers(results["ours"])
        and results["naive"].baseline == results["ours"].baseline,
    }


def allocation(name: str) -> dict[str, Any]:
    bench = open_workbench(f"sample:{name}")
    start = time.perf_counter()
    result = SensitivityRun(bench.session, bench.eval_data).run()
    out: dict[str, Any] = {"sensitivity_s": round(time.perf_counter() - start, 3),
                           "baseline_metric": result.baseline.metric}
    for method in Method:
        start = time.perf_counter()
        outcome = plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.8), method,
                                  sensitivity=result)
        out[method.value] = {
            "metric": round(outcome.report.evaluation.metric, 4),
            "predicted_metric": None if outcome.predicted_metric is None
            else round(outcome.predicted_metric, 4),
            "sparsity": round(outcome.measured, 4), "met": outcome.met,
            "fit_s": round(time.perf_counter() - start, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    analyses = {f"{name}/{g}": analysis(name, g, args.rounds)
                for name in sample_names() for g in ("unstructured", "filter")}
    report = {
        "target": TARGET,
        "threads": torch.get_num_threads(),
        "analysis": analyses,
        "allocation_at_80pct_sparsity": {n: allocation(n) for n in ("digits_cnn", "digits_mlp")},
        "load_1min": {"before": round(load, 2), "after": round(os.getloadavg()[0], 2),
                      "cores": os.cpu_count()},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
