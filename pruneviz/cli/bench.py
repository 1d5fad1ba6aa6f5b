"""The `bench` verb: the engine benchmarks' JSON results."""

from __future__ import annotations

import argparse
import json


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and print their JSON results."""
    from pruneviz.workflows.bench import run_benchmarks

    results = run_benchmarks(args.name)
    print(json.dumps(results, indent=2 if args.json else None))
    return 0
