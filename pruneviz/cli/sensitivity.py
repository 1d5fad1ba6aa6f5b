"""The `sensitivity` verb: each layer pruned alone at a ladder of amounts, measured, as a
ranked table or JSON."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from pruneviz.cli.options import (
    no_amount_error,
    open_bench,
)
from pruneviz.core.granularity import Granularity
from pruneviz.data.sources import source_from_args
from pruneviz.errors import PrunevizError
from pruneviz.output.json_safe import safe_json
from pruneviz.workflows.sensitivity import Point, SensitivityResult, SensitivityRun
from pruneviz.workflows.workbench import Workbench


def _parse_levels(text: str) -> list[float]:
    levels = []
    for part in text.split(","):
        try:
            level = float(part.strip())
        except ValueError:
            raise PrunevizError(f"--levels: {part.strip()!r} is not a number") from None
        if not 0.0 <= level <= 1.0:  # also refuses NaN
            raise PrunevizError(f"--levels: {part.strip()} is outside [0, 1]")
        levels.append(level)
    return levels


def run_sensitivity(bench: Workbench, granularity: str, criterion: str,
                     levels: Sequence[float], *, progress: bool) -> SensitivityResult:
    """The analysis; with `progress`, one line on stderr per item finished."""
    run = SensitivityRun(bench.session, bench.eval_data, criterion=criterion,
                         granularity=granularity, levels=levels)
    start = time.perf_counter()
    finished: list[str] = []

    def report(run: SensitivityRun, point: Point) -> None:
        if run.done % len(run.levels) == 0 and point.item is not None:
            finished.append(point.item)
            label = next(item.label for item in run.items if item.key == point.item)
            print(f"sensitivity: {label} measured ({len(finished)}/{len(run.items)}, "
                  f"{time.perf_counter() - start:.1f} s)", file=sys.stderr, flush=True)

    return run.run(progress=report if progress else None)


def _percent(level: float) -> str:
    return f"{round(level * 100, 4):g}%"


def _print_sensitivity(result: SensitivityResult) -> None:
    base = result.baseline.metric
    fmt = "{:.4f}" if result.higher_is_better or abs(base) >= 0.1 else "{:.3g}"
    print(f"model     {result.model}")
    print(f"analysis  {result.granularity.value}, criterion {result.criterion}: "
          f"{len(result.items)} items x {len(result.levels)} levels in {result.seconds:.1f} s")
    better = "higher" if result.higher_is_better else "lower"
    print(f"{result.metric_name:<9} {fmt.format(base)} unpruned ({better} is better); safe = "
          f"the highest sparsity with it within {fmt.format(result.default_tolerance())}")
    print()
    rows = result.ranking()
    header = ["item", "unit", "safe", *(_percent(level) for level in result.levels)]
    table = [header]
    for row in rows:
        metrics = {p.level: p.metric for p in result.curve(row["item"])}
        table.append([row["label"], row["unit"], _percent(row["safe_sparsity"]),
                      *(fmt.format(metrics[level]) if level in metrics else "-"
                        for level in result.levels)])
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        cells = [f"{cell:>{width}}" for cell, width in zip(line, widths, strict=True)]
        print(f"{line[0]:<{widths[0]}}  {line[1]:<{widths[1]}}  {cells[2]}  "
              + " ".join(cells[3:]))


def cmd_sensitivity(args: argparse.Namespace) -> int:
    """Prune each item alone at every level and measure; a ranked table or JSON."""
    levels = _parse_levels(args.levels)
    granularity = Granularity(args.granularity)
    if granularity.n_m is not None:
        raise no_amount_error(granularity, "sensitivity")
    bench = open_bench(source_from_args(args))
    # Progress goes to stderr, and only in text mode: --json prints one object, nothing else.
    result = run_sensitivity(bench, args.granularity, args.criterion, levels,
                              progress=not args.json)
    if args.json:
        print(safe_json(result.to_dict()))
    else:
        _print_sensitivity(result)
    return 0
