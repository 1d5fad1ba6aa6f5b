"""The `bench` verb: the engine benchmarks' JSON results."""

from __future__ import annotations

import argparse

from pruneviz.data.sources import source_from_args
from pruneviz.errors import PlanError
from pruneviz.output.json_safe import safe_json


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and print their JSON results."""
    from pruneviz.workflows.bench import run_benchmarks
    from pruneviz.workflows.live_bench import bench_live_model

    if args.model is not None:
        if args.name != "live":
            raise PlanError(f"a MODEL is measured by 'bench live MODEL' only, not by "
                            f"'bench {args.name}'")
        if args.moves < 2:
            raise PlanError(f"--moves must be at least 2, not {args.moves}")
        results = bench_live_model(source_from_args(args), moves=args.moves)
    else:
        results = run_benchmarks(args.name, device=args.device)
    print(safe_json(results, indent=2 if args.json else None))
    return 0
