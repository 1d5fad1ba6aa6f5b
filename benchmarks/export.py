"""Export benchmark: time to write and verify an export bundle, and the size of each file.

    python benchmarks/export.py [--runs N]

For digits_cnn (uniform 50% unstructured, L1) and digits_resnet (uniform 50% filter, L1;
a slimmed model is written): `export_bundle` into a fresh temporary folder, `runs` times
(default 5) — everything it does: measure the plan (cached by the meter after the first
run, as in the app), build the weights, sparse file, plan, slimmed model, write them
atomically, verify them from disk (reload + outputs on the 450 eval samples, re-applying
the plan in a fresh session, rebuilding the slimmed model), then the HTML and Markdown
reports. The median and spread of the wall-clock times, the time of the verification alone
(`verify_bundle`, median), and every file's size in bytes.

Prints one JSON object. Takes about half a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from pruneviz.core.slim import slim
from pruneviz.output.bundle import export_bundle
from pruneviz.output.verify import verify_bundle
from pruneviz.workflows.workbench import open_workbench

CASES = {"digits_cnn": "unstructured", "digits_resnet": "filter"}
SPARSITY = 0.5


def run_case(name: str, granularity: str, runs: int) -> dict[str, Any]:
    bench = open_workbench(f"sample:{name}")
    session = bench.session
    session.apply(session.uniform_plan(SPARSITY, granularity, "l1")[0])
    times, verify_times = [], []
    sizes: dict[str, int] = {}
    passed = True
    with tempfile.TemporaryDirectory(prefix="pruneviz-bench-export-") as tmp:
        for i in range(runs):
            out = Path(tmp) / f"run{i}"
            start = time.perf_counter()
            result = export_bundle(bench, out)
            times.append(time.perf_counter() - start)
            passed = passed and result.passed
            sizes = result.sizes()
            slim_model = slim(session).model if "slim/slim.json" in result.files else None
            start = time.perf_counter()
            checks = verify_bundle(bench, out, slim_model=slim_model)
            verify_times.append(time.perf_counter() - start)
            passed = passed and all(c.passed for c in checks)
    return {
        "plan": f"uniform {SPARSITY:.0%} {granularity} l1",
        "verified": passed,
        "checks": len(result.checks),
        "export_seconds_median": round(statistics.median(times), 4),
        "export_seconds_min": round(min(times), 4),
        "export_seconds_max": round(max(times), 4),
        "verify_seconds_median": round(statistics.median(verify_times), 4),
        "eval_samples": result.eval_samples,
        "file_bytes": sizes,
        "total_bytes": sum(sizes.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    results = {name: run_case(name, granularity, args.runs)
               for name, granularity in CASES.items()}
    print(json.dumps({
        "benchmark": "export",
        "runs": args.runs,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "results": results,
    }, indent=2))


if __name__ == "__main__":
    main()
