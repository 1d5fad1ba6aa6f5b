"""`python -m pruneviz` / `pruneviz`: the library's verbs on the command line.

Each verb makes library calls and prints either a short human summary or, with --json,
one JSON object on stdout. Errors are one line on stderr and a non-zero exit status
(2 for a problem with the input, 1 for an internal error); never a traceback, unless
PRUNEVIZ_DEBUG=1 is set.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn

from pruneviz.core.criteria import criterion_names
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, Plan
from pruneviz.data.sources import add_source_arguments, refuse_overwriting_inputs, source_from_args
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.output.model_files import write_atomic
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    Outcome,
    format_quantity,
    plan_for_budget,
)
from pruneviz.workflows.finetune import (
    FinetuneRecipe,
    FinetuneResult,
    PruneSpec,
    Record,
    Regularizer,
    finetune,
    total_steps,
)
from pruneviz.workflows.finetune_job import (
    DEFAULT_RECIPE,
    DISTILL_WEIGHT,
    EVENTS,
    LR_MASKED,
    LR_SCHEDULE,
    ROUNDS,
    Stages,
    default_lr,
    default_schedule,
    describe_pruning,
    epoch_steps,
    finetune_report,
    pruning_record,
    summarize_run,
    validate_no_blocks,
    validate_prunable,
    validate_schedule_fits,
    validate_train_data,
)
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS, Point, SensitivityResult, SensitivityRun
from pruneviz.workflows.workbench import Workbench, open_workbench

GRANULARITIES = [g.value for g in Granularity]
DEFAULT_CAP = 0.95  # --max-layer-sparsity with a target (as allocation.plan_for_budget)
TARGETS = {  # --target-* option -> what it limits
    "target_sparsity": BudgetKind.SPARSITY,
    "target_macs": BudgetKind.MACS,
    "target_size_bytes": BudgetKind.SIZE,
}


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line on stderr like every other error."""

    def error(self, message: str) -> NoReturn:
        print(f"pruneviz: error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _add_plan_args(parser: argparse.ArgumentParser, *, targets: bool = False) -> None:
    """The options that choose the plan (with `targets`: also the budgets of `prune`)."""
    source = parser.add_mutually_exclusive_group()  # one source of amounts at most
    source.add_argument("--plan", type=Path, metavar="FILE", help="a plan JSON file")
    source.add_argument(
        "--sparsity", type=float, metavar="S", help="prune every layer to this fraction (0..1)"
    )
    with_amount = "with --sparsity or a target" if targets else "with --sparsity"
    if targets:
        source.add_argument("--target-sparsity", type=float, metavar="S",
                            help="a budget: at least this fraction of all parameters zero "
                            "(0 < S <= 1)")
        source.add_argument("--target-macs", type=float, metavar="F",
                            help="a budget: at most this fraction of the unpruned model's "
                            "weight MACs per sample (0 < F <= 1)")
        source.add_argument("--target-size-bytes", type=int, metavar="N",
                            help="a budget: the sparse-encoded weights file at most N bytes")
        parser.add_argument("--allocate", choices=[m.value for m in Method],
                            help="with a target: how the per-layer amounts are chosen "
                            "(default: sensitivity, which runs a sensitivity analysis first)")
    parser.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                        help=f"{with_amount} (default: unstructured)")
    parser.add_argument("--criterion", default="l1", choices=criterion_names(),
                        help=f"{with_amount} (default: l1)")
    parser.add_argument("--scope", default="local", choices=["local", "global"],
                        help="with --sparsity: the same amount per layer (local) or one "
                        "ranking across all layers (global)")
    parser.add_argument("--max-layer-sparsity", type=float, metavar="F",
                        help="with --scope global" + (
                            f" or a target (default there: {DEFAULT_CAP})" if targets else "")
                        + ": cap on any one layer's sparsity")
    parser.add_argument("--remove-blocks", metavar="NAMES", default="",
                        help="comma-separated modules to replace by the identity (blocks or "
                        "layers whose output has their input's shape)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    parser = _Parser(
        prog="pruneviz", description="Prune PyTorch models and measure the result honestly."
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    samples = verbs.add_parser("samples", help="list the sample models with baseline metrics")
    samples.add_argument("--json", action="store_true", help="print one JSON object")

    evaluate = verbs.add_parser("evaluate", help="measure a model, optionally pruned")
    add_source_arguments(evaluate)
    _add_plan_args(evaluate)
    evaluate.add_argument("--latency", action="store_true", help="also time inference")
    evaluate.add_argument("--int8", action="store_true",
                          help="also measure the (pruned) model with dynamic int8 quantization "
                          "of its Linear/LSTM/GRU layers")
    evaluate.add_argument("--low-rank", type=float, metavar="F",
                          help="also measure the (pruned) model with its Linear layers "
                          "factorized by truncated SVD, at this fraction of full rank (0..1]")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    prune = verbs.add_parser("prune", help="prune a model and write the weights and plan")
    add_source_arguments(prune)
    _add_plan_args(prune, targets=True)
    prune.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    prune.add_argument("--latency", action="store_true", help="also time inference")
    prune.add_argument("--slim", action="store_true",
                       help="also write the slimmed model (pruned channels removed) and "
                       "measure the slimmed and sparse-deployed forms")
    prune.add_argument("--json", action="store_true", help="print one JSON object")

    sensitivity = verbs.add_parser(
        "sensitivity", help="prune each layer (or coupled group) alone at a ladder of amounts "
        "and measure what the model loses")
    add_source_arguments(sensitivity)
    sensitivity.add_argument(
        "--levels", metavar="S,S,...",
        default=",".join(f"{level:g}" for level in DEFAULT_LEVELS),
        help="comma-separated sparsities in [0, 1] (default: %(default)s)")
    sensitivity.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                             help="unstructured, filter or channel (default: unstructured)")
    sensitivity.add_argument("--criterion", default="l1", choices=criterion_names(),
                             help="default: l1")
    sensitivity.add_argument("--json", action="store_true", help="print one JSON object")

    export = verbs.add_parser(
        "export", help="prune, then write the weights, plan, slimmed model and an HTML / "
        "Markdown report into a folder, each verified on reload")
    add_source_arguments(export)
    _add_plan_args(export)
    export.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    export.add_argument("--latency", action="store_true",
                        help="also time the pruned model against the unpruned one")
    slim_choice = export.add_mutually_exclusive_group()
    slim_choice.add_argument("--slim", dest="slim", action="store_const", const=True,
                             help="require the slimmed model (an error if the plan removes "
                             "no structure); default: written when the plan is structured")
    slim_choice.add_argument("--no-slim", dest="slim", action="store_const", const=False,
                             help="never write the slimmed model")
    export.add_argument("--json", action="store_true", help="print one JSON object")

    _add_finetune_parser(verbs)

    bench = verbs.add_parser("bench", help="run the engine benchmarks (JSON results)")
    bench.add_argument("name", nargs="?", metavar="NAME", help="slider, live or size")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# -- verbs ---------------------------------------------------------------------------------
def _read_plan_args(args: argparse.Namespace) -> Plan | None:
    """Check the plan options before any model is loaded; returns the plan file's plan."""
    if args.sparsity is not None and not 0.0 <= args.sparsity <= 1.0:
        raise PrunevizError(f"--sparsity {args.sparsity} is outside [0, 1]")
    _check_cap(args)
    if args.sparsity is None and (args.max_layer_sparsity is not None or args.scope != "local"):
        raise PrunevizError("--scope and --max-layer-sparsity need --sparsity")
    if args.max_layer_sparsity is not None and args.scope != "global":
        raise PrunevizError("--max-layer-sparsity needs --scope global (with --scope local "
                            "every layer gets --sparsity)")
    if args.plan is None:
        return None
    return _read_plan_file(args.plan)


def _check_cap(args: argparse.Namespace) -> None:
    cap = args.max_layer_sparsity
    if cap is not None and not 0.0 < cap <= 1.0:
        raise PrunevizError(f"--max-layer-sparsity {cap} is outside (0, 1]")


def _no_amount(granularity: Granularity, what: str) -> PlanError:
    return PlanError(f"{what} needs an amount to vary, and --granularity {granularity.value} "
                     "has a fixed sparsity; choose unstructured, filter or channel")


def _read_budget(args: argparse.Namespace) -> Budget | None:
    """`prune`'s target as a Budget (None without one), checked before any model is loaded.

    argparse already refuses two targets, or a target with --plan or --sparsity."""
    given = [(option, kind) for option, kind in TARGETS.items()
             if getattr(args, option) is not None]
    if not given:
        if args.allocate is not None:
            raise PrunevizError("--allocate needs a target: --target-sparsity, --target-macs "
                                "or --target-size-bytes")
        return None
    option, kind = given[0]
    flag = "--" + option.replace("_", "-")
    value = getattr(args, option)
    if kind is BudgetKind.SIZE:
        if value <= 0:
            raise PrunevizError(f"{flag} {value} must be a positive number of bytes")
    elif not 0.0 < value <= 1.0:  # also refuses NaN
        raise PrunevizError(f"{flag} {value} is outside (0, 1]")
    if args.scope != "local":
        raise PrunevizError(f"--scope is for --sparsity; with {flag} choose --allocate global")
    if args.remove_blocks.strip():
        raise PrunevizError(f"--remove-blocks cannot be combined with {flag}: the budget is "
                            "met by pruning amounts only")
    _check_cap(args)
    granularity = Granularity(args.granularity)
    if granularity.n_m is not None:
        raise _no_amount(granularity, flag)
    return Budget(kind, float(value))


def _unprunable(bench: Workbench, args: argparse.Namespace, skipped: dict[str, str]) -> None:
    raise PrunevizError(
        f"no layer of {bench.name} can be pruned with --granularity {args.granularity} "
        f"--criterion {args.criterion}: {next(iter(skipped.values()))}"
    )


def _plan_for(
    args: argparse.Namespace, bench: Workbench, file_plan: Plan | None
) -> tuple[Plan, dict[str, str]]:
    session = bench.session
    if file_plan is not None:
        return file_plan, {}
    if args.sparsity is None:
        return Plan(), {}
    if args.scope == "global":
        section = GlobalPlan(args.granularity, args.criterion, sparsity=args.sparsity,
                             max_layer_sparsity=args.max_layer_sparsity)
        return session.stamp(Plan(global_=section)), {}
    plan, skipped = session.uniform_plan(args.sparsity, args.granularity, args.criterion)
    if plan.is_empty and skipped:
        _unprunable(bench, args, skipped)
    return plan, skipped


def _measure(args: argparse.Namespace) -> tuple[Workbench, Report, dict[str, str]]:
    file_plan = _read_plan_args(args)
    bench = open_workbench(source_from_args(args))
    plan, skipped = _plan_for(args, bench, file_plan)
    blocks = [b.strip() for b in args.remove_blocks.split(",") if b.strip()]
    if blocks:
        plan = plan.with_blocks(sorted(set(plan.blocks) | set(blocks)))
    bench.session.apply(plan)
    return bench, bench.meter.report(latency=args.latency), skipped


def _measure_budget(
    args: argparse.Namespace, budget: Budget
) -> tuple[Workbench, Report, dict[str, str], Outcome]:
    """Fit the chosen allocation to the budget, apply its plan and measure it."""
    bench = open_workbench(source_from_args(args))
    session = bench.session
    method = Method(args.allocate or Method.SENSITIVITY)
    cap = DEFAULT_CAP if args.max_layer_sparsity is None else args.max_layer_sparsity
    # The layers no plan of this granularity and criterion can prune, and why.
    probe, skipped = session.uniform_plan(cap, args.granularity, args.criterion)
    if probe.is_empty and skipped:
        _unprunable(bench, args, skipped)
    sensitivity = None
    if method is Method.SENSITIVITY:
        # The allocation never reads a level above the cap: measure up to the cap, exactly.
        levels = sorted({level for level in DEFAULT_LEVELS if level <= cap} | {cap})
        sensitivity = _run_sensitivity(bench, args.granularity, args.criterion, levels,
                                       progress=not args.json)
    outcome = plan_for_budget(bench, budget, method, granularity=args.granularity,
                              criterion=args.criterion, sensitivity=sensitivity, cap=cap)
    session.apply(outcome.plan)
    return bench, bench.meter.report(latency=args.latency), skipped, outcome


def _print_report(report: Report, baseline: Report, skipped: dict[str, str]) -> None:
    ev, base = report.evaluation, baseline.evaluation
    print(f"model     {report.model}")
    print(f"{ev.metric_name:<9} {ev.metric:.4f}  (baseline {base.metric:.4f}, "
          f"{ev.samples} eval samples)")
    print(f"loss      {ev.loss:.4f}  (baseline {base.loss:.4f})")
    print(f"params    {report.params_nonzero:,} non-zero of {report.params_total:,} "
          f"({report.sparsity:.1%} sparse)")
    print(f"MACs      {report.macs_effective:,} effective of {report.macs_dense:,} dense "
          "(weight MACs per sample)")
    print(f"file      dense {report.sizes.dense:,} B | sparse {report.sizes.sparse:,} B | "
          f"gzip {report.sizes.gzip:,} B")
    if report.latency is not None:
        lat = report.latency
        print(f"latency   {lat.median_ms:.2f} ms median (batch {lat.batch_size}, "
              f"{lat.threads} threads, {lat.runs} runs)")
    print()
    print(f"{'layer':<28} {'type':<10} {'params':>9} {'nonzero':>9} {'sparsity':>8}  threshold")
    for layer in report.layers:
        threshold = "-" if layer.threshold is None else f"{layer.threshold:.4g}"
        print(f"{layer.name:<28} {layer.type:<10} {layer.params:>9,} {layer.nonzero:>9,} "
              f"{layer.sparsity:>8.1%}  {threshold}")
    for name, reason in skipped.items():
        print(f"skipped {name}: {reason}")
    for note in report.notes:
        print(f"note: {note}")


def _emit(args: argparse.Namespace, report: Report, baseline: Report,
          skipped: dict[str, str], extra: dict[str, Any] | None = None,
          summary: Sequence[str] = ()) -> None:
    """Print the report; `extra` joins the JSON object, `summary` lines the text."""
    if args.json:
        out = report.to_dict()
        out["baseline"] = {k: v for k, v in baseline.to_dict().items()
                           if k not in ("layers", "plan")}
        out["skipped_layers"] = skipped
        out.update(extra or {})
        print(json.dumps(out, indent=2))
    else:
        _print_report(report, baseline, skipped)
        for line in summary:
            print(line)
        for key, value in (extra or {}).items():
            if key != "allocation":  # in `summary`
                print(f"{key}: {value}")


def _show(kind: BudgetKind, value: float) -> str:
    """A budget quantity for people, with what it measures."""
    what = {BudgetKind.SPARSITY: "overall sparsity", BudgetKind.MACS: "of the MACs",
            BudgetKind.SIZE: "sparse file", BudgetKind.LATENCY: "latency"}[kind]
    return f"{format_quantity(kind, value)} {what}"


def _allocation_summary(outcome: Outcome, metric_name: str) -> list[str]:
    kind = outcome.budget.kind
    limit = "at least" if kind is BudgetKind.SPARSITY else "at most"
    lines = [
        "",
        f"budget    {limit} {_show(kind, outcome.budget.value)}, allocated "
        f"{outcome.method.value}: measured {_show(kind, outcome.measured)} "
        f"({'met' if outcome.met else 'NOT met'})",
    ]
    if outcome.predicted_metric is not None:
        lines.append(f"predicted {metric_name} {outcome.predicted_metric:.4f} from the "
                     f"sensitivity curves (measured {outcome.report.evaluation.metric:.4f})")
    lines += [f"note: {note}" for note in outcome.notes]
    return lines


def cmd_samples(args: argparse.Namespace) -> int:
    """List the sample models and their baseline metrics from their cards."""
    from pruneviz.data.samples import SAMPLES, load_sample

    rows = []
    for name, spec in SAMPLES.items():
        card = load_sample(name).card
        rows.append({
            "name": name, "model": f"sample:{name}", "title": spec.title,
            "task": spec.task.value, "params": card["params"],
            "metric_name": card["metrics"]["metric_name"], "metric": card["metrics"]["metric"],
            "description": spec.description,
        })
    if args.json:
        print(json.dumps({"samples": rows}, indent=2))
    else:
        for row in rows:
            print(f"sample:{row['name']:<20} {row['metric_name']} {row['metric']:.4f}  "
                  f"{row['params']:>8,} params  {row['title']}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a model, pruned by a plan or a uniform sparsity if one is given (and, with
    --int8 / --low-rank, the pruned model quantized or factorized too)."""
    if args.low_rank is not None and not 0.0 < args.low_rank <= 1.0:
        raise PrunevizError(f"--low-rank must be in (0, 1], got {args.low_rank}")
    bench, report, skipped = _measure(args)
    combined = _combined(args, bench)
    extra = {"combined": [m.to_dict() for m in combined]} if combined else None
    lines = [f"{m.technique:<16} {m.evaluation.metric_name} {m.evaluation.metric:.4f}  "
             f"{m.params_total:,} params stored  file {m.sizes.dense:,} B"
             + (f"  latency {m.latency.median_ms:.2f} ms" if m.latency else "")
             + "".join(f"\n  note: {n}" for n in m.notes) for m in combined]
    if args.json:
        _emit(args, report, bench.baseline, skipped, extra)
    else:
        _emit(args, report, bench.baseline, skipped, summary=lines)
    return 0


def _combined(args: argparse.Namespace, bench: Workbench) -> list[Any]:
    """The pruned model quantized (--int8) and/or factorized (--low-rank), measured."""
    from pruneviz.measure.compression import (
        INT8,
        SVD,
        low_rank,
        measure_model,
        quantize_dynamic_int8,
    )
    from pruneviz.measure.compression import technique_name as name
    from pruneviz.measure.meter import latency_batch

    pruned = not bench.session.plan.is_empty
    done = []
    if args.int8:
        done.append(measure_model(quantize_dynamic_int8(bench.model), bench.eval_data,
                                  technique=name(INT8, pruned=pruned), latency=args.latency,
                                  reference=bench.pristine))
    if args.low_rank is not None:
        factored = low_rank(bench.model, args.low_rank,
                            example=latency_batch(bench.eval_data, 8))
        factored.check_changed()
        done.append(measure_model(factored.model, bench.eval_data,
                                  technique=name(SVD, pruned=pruned, rank=args.low_rank),
                                  latency=args.latency, reference=bench.pristine,
                                  notes=factored.notes))
    return done


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune (by the plan options, or to a budget), then write weights (dense and sparse
    safetensors), plan and report."""
    budget = _read_budget(args)
    outcome: Outcome | None = None
    if budget is None:
        bench, report, skipped = _measure(args)
    else:
        bench, report, skipped, outcome = _measure_budget(args, budget)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrunevizError(f"cannot create output folder {out}: {exc.strerror}") from None
    state = bench.model.state_dict()
    files = {
        "weights.safetensors": dense_bytes(state),
        "weights.sparse.safetensors": sparse_bytes(state),
        "plan.json": bench.session.stamp(bench.session.plan).to_json().encode(),
        "report.json": json.dumps(report.to_dict(), indent=2).encode(),
    }
    refuse_overwriting_inputs(bench.source, out, files)
    for filename, data in files.items():
        write_atomic(out / filename, data)
    extra: dict[str, Any] = {"written": {name: str(out / name) for name in files}}
    summary: list[str] = []
    if outcome is not None:
        # The plan is in plan.json (and in the report's "plan"): not repeated here.
        extra["allocation"] = {k: v for k, v in outcome.to_dict().items() if k != "plan"}
        summary = _allocation_summary(outcome, report.evaluation.metric_name)
    if args.slim:
        extra.update(_slim_outputs(bench, out, latency=args.latency))
    _emit(args, report, bench.baseline, skipped, extra, summary)
    # A budget out of reach is not an error: the closest plan (every layer at the cap) was
    # measured and written, like a plan the session had to adjust, whose notes are printed
    # but do not fail the command. So the exit status is 0; the text output also warns on
    # stderr, and --json says `"met": false` (with the reason in `notes`) for scripts.
    if outcome is not None and not outcome.met and not args.json:
        kind = outcome.budget.kind
        limit = "at least" if kind is BudgetKind.SPARSITY else "at most"
        print(f"pruneviz: warning: budget not met ({limit} {_show(kind, outcome.budget.value)}"
              f", measured {_show(kind, outcome.measured)}): the closest plan was written to "
              f"{out}", file=sys.stderr)
    return 0


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


def _run_sensitivity(bench: Workbench, granularity: str, criterion: str,
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
        raise _no_amount(granularity, "sensitivity")
    bench = open_workbench(source_from_args(args))
    # Progress goes to stderr, and only in text mode: --json prints one object, nothing else.
    result = _run_sensitivity(bench, args.granularity, args.criterion, levels,
                              progress=not args.json)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        _print_sensitivity(result)
    return 0


def _slim_outputs(bench: Workbench, out: Path, *, latency: bool) -> dict[str, Any]:
    """Measure the slimmed and sparse-deployed forms; write the slimmed model."""
    from pruneviz.measure.forms import slimmed_form, sparse_form
    from pruneviz.measure.meter import latency_batch
    from pruneviz.output.model_files import save_slimmed

    batch = latency_batch(bench.eval_data, 64)
    slim_report, slim_model = slimmed_form(bench.session, batch, latency=latency)
    sparse_report, _ = sparse_form(bench.session, batch, latency=latency)
    result: dict[str, Any] = {"slim": slim_report.to_dict(),
                              "sparse_deployed": sparse_report.to_dict()}
    if slim_model is not None:
        result["slim_files"] = save_slimmed(bench.name, bench.pristine, slim_model, batch[:8],
                                            out / "slim")
    return result


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and print their JSON results."""
    from pruneviz.workflows.bench import run_benchmarks

    results = run_benchmarks(args.name)
    print(json.dumps(results, indent=2 if args.json else None))
    return 0


# -- finetune ------------------------------------------------------------------------------
_ALL_KINDS = frozenset(ScheduleKind)
_RAMPS = frozenset({ScheduleKind.POLY, ScheduleKind.AGP})
SCHEDULE_OPTIONS: dict[str, frozenset[ScheduleKind]] = {  # option -> the kinds that use it
    "initial": _RAMPS,
    "begin_step": _ALL_KINDS,
    "end_step": _ALL_KINDS - {ScheduleKind.ONESHOT},
    "frequency": _RAMPS | {ScheduleKind.CONSTANT},
    "power": frozenset({ScheduleKind.POLY}),
    "rounds": frozenset({ScheduleKind.ITERATIVE}),
}
FINETUNE_FILES = ("weights.safetensors", "weights.sparse.safetensors", "history.json",
                  "report.json")


def _add_finetune_parser(verbs: argparse._SubParsersAction[_Parser]) -> None:
    finetune_ = verbs.add_parser(
        "finetune", help="prune, then retrain: masked fine-tuning of a one-shot pruning, or "
        "a schedule that prunes gradually while training",
        description="Prune MODEL and retrain it on its training data, printing the test "
        "metric before pruning, right after pruning and after retraining. Under torchrun "
        "the training is data-parallel (see the README).")
    add_source_arguments(finetune_)
    what = finetune_.add_argument_group("what to prune (exactly one of --plan, --sparsity, "
                                        "--schedule)")
    source = what.add_mutually_exclusive_group()
    source.add_argument("--plan", type=Path, metavar="FILE",
                        help="apply this plan JSON file once, then fine-tune with the pruned "
                        "entries held at zero")
    source.add_argument("--sparsity", type=float, metavar="S",
                        help="prune to this fraction (0..1) once, then fine-tune")
    source.add_argument("--schedule", choices=[k.value for k in ScheduleKind],
                        help="prune while training, by this schedule (see --final etc.)")
    what.add_argument("--granularity", choices=GRANULARITIES,
                      help="with --sparsity or --schedule (default: unstructured)")
    what.add_argument("--criterion", choices=criterion_names(),
                      help="with --sparsity or --schedule (default: l1)")
    what.add_argument("--scope", choices=["local", "global"],
                      help="with --sparsity or --schedule: the same amount per layer (local, "
                      "the default) or one ranking across all layers (global)")
    what.add_argument("--max-layer-sparsity", type=float, metavar="F",
                      help="with --scope global: cap on any one layer's sparsity")
    plan = finetune_.add_argument_group("schedule (with --schedule; steps are optimiser steps)")
    plan.add_argument("--final", type=float, metavar="S",
                      help="the sparsity it ends at, in [0, 1) (required)")
    plan.add_argument("--initial", type=float, metavar="S",
                      help="poly, agp: the sparsity at the begin step (default: 0)")
    plan.add_argument("--begin-step", type=int, metavar="N",
                      help="the first pruning event (default: 0)")
    plan.add_argument("--end-step", type=int, metavar="N",
                      help="constant, iterative, poly, agp: when the pruning ends (default: "
                      "halfway from the begin step to the end of training, leaving the "
                      "second half to recover)")
    plan.add_argument("--frequency", type=int, metavar="N",
                      help=f"constant, poly, agp: steps between pruning events (default: "
                      f"about {EVENTS} events from begin to end)")
    plan.add_argument("--power", type=float, metavar="P",
                      help="poly: the polynomial's exponent (default: 3)")
    plan.add_argument("--rounds", type=int, metavar="N",
                      help=f"iterative: prune-retrain rounds (default: {ROUNDS})")
    train = finetune_.add_argument_group("training")
    defaults = DEFAULT_RECIPE
    train.add_argument("--epochs", type=int, default=defaults.epochs, metavar="N",
                       help="passes over the training data (default: %(default)s)")
    train.add_argument("--lr", type=float, metavar="X",
                       help=f"Adam learning rate (default: {LR_MASKED:g} with --plan or "
                       f"--sparsity, {LR_SCHEDULE:g} with --schedule)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, metavar="N",
                       help="samples per step, over all processes (default: %(default)s)")
    train.add_argument("--seed", type=int, default=defaults.seed, metavar="N",
                       help="shuffling and validation split (default: %(default)s)")
    train.add_argument("--patience", type=int, default=defaults.patience, metavar="N",
                       help="stop after N epochs without a better validation metric "
                       "(counted after the last pruning event; default: %(default)s)")
    train.add_argument("--max-steps", type=int, metavar="N", help="stop after N steps")
    train.add_argument("--regularizer", choices=[r.value for r in Regularizer],
                       help="with --schedule: a sparsity-inducing penalty before its first "
                       "pruning event (l1 on weights, group_lasso on filters, bn_l1 on "
                       "BatchNorm scales)")
    train.add_argument("--strength", type=float, metavar="X",
                       help=f"the regulariser's weight in the loss (default: "
                       f"{defaults.strength:g})")
    train.add_argument("--distill", action="store_true",
                       help="also learn from the unpruned model's outputs (distillation)")
    train.add_argument("--distill-weight", type=float, metavar="W",
                       help=f"with --distill: the distillation term's share of the loss, in "
                       f"[0, 1] (default: {DISTILL_WEIGHT:g})")
    train.add_argument("--temperature", type=float, metavar="T",
                       help=f"with --distill: softmax temperature (default: "
                       f"{defaults.temperature:g})")
    finetune_.add_argument("--out", type=Path, required=True, metavar="DIR",
                           help="output folder")
    finetune_.add_argument("--json", action="store_true", help="print one JSON object")


def _flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def _read_finetune_args(args: argparse.Namespace) -> tuple[Plan | None, FinetuneRecipe]:
    """Check `finetune`'s options before any model is loaded; fill in the defaults.

    Returns the plan file's plan (None without --plan) and the training recipe."""
    options = ["final", *SCHEDULE_OPTIONS]
    if args.schedule is None:
        given = [_flag(o) for o in options if getattr(args, o) is not None]
        if given:
            raise PrunevizError(f"{given[0]} is a schedule option: it needs --schedule")
    if args.plan is None and args.sparsity is None and args.schedule is None:
        raise PrunevizError("finetune needs what to prune: --plan FILE, --sparsity S or "
                            "--schedule KIND")  # argparse refuses two
    amounts = ("granularity", "criterion", "scope", "max_layer_sparsity")
    if args.plan is not None:
        given = [_flag(o) for o in amounts if getattr(args, o) is not None]
        if given:
            raise PrunevizError(f"{given[0]} is for --sparsity or --schedule: a plan file says "
                                "how each layer is pruned")
    args.granularity = args.granularity or Granularity.UNSTRUCTURED.value
    args.criterion = args.criterion or "l1"
    args.scope = args.scope or "local"
    if args.sparsity is not None and not 0.0 <= args.sparsity <= 1.0:
        raise PrunevizError(f"--sparsity {args.sparsity} is outside [0, 1]")
    _check_cap(args)
    if args.max_layer_sparsity is not None and args.scope != "global":
        raise PrunevizError("--max-layer-sparsity needs --scope global (with --scope local "
                            "every layer gets the same amount)")
    if args.schedule is not None:
        kind = ScheduleKind(args.schedule)
        if args.final is None:
            raise PrunevizError(f"--schedule {kind.value} needs --final S, the sparsity it "
                                "ends at")
        for option, kinds in SCHEDULE_OPTIONS.items():
            if getattr(args, option) is not None and kind not in kinds:
                users = ", ".join(k.value for k in ScheduleKind if k in kinds)
                raise PrunevizError(f"{_flag(option)} is not used by --schedule {kind.value} "
                                    f"(only by {users})")
        granularity = Granularity(args.granularity)
        if granularity.n_m is not None:
            raise _no_amount(granularity, "--schedule")
    if args.strength is not None and args.regularizer is None:
        raise PrunevizError("--strength needs --regularizer")
    if args.regularizer is not None and args.schedule is None:
        source = "--plan" if args.plan is not None else "--sparsity"
        raise PrunevizError(f"--regularizer acts before the first pruning event, preparing the "
                            f"weights for it; with {source} the pruning comes before training: "
                            "use it with --schedule and a --begin-step above 0")
    if not args.distill:
        given = [f for f, v in (("--distill-weight", args.distill_weight),
                                ("--temperature", args.temperature)) if v is not None]
        if given:
            raise PrunevizError(f"{given[0]} needs --distill")
    defaults = DEFAULT_RECIPE
    lr = args.lr
    if lr is None:
        lr = default_lr(scheduled=args.schedule is not None)
    distill = 0.0
    if args.distill:
        distill = DISTILL_WEIGHT if args.distill_weight is None else args.distill_weight
        if not 0.0 <= distill <= 1.0:  # also refuses NaN
            raise PrunevizError(f"--distill-weight {distill} is outside [0, 1]")
    recipe = FinetuneRecipe(
        epochs=args.epochs, lr=lr, batch_size=args.batch_size, seed=args.seed,
        patience=args.patience, regularizer=args.regularizer,
        strength=defaults.strength if args.strength is None else args.strength,
        distill=distill,
        temperature=defaults.temperature if args.temperature is None else args.temperature,
        max_steps=args.max_steps)
    _check_out(args.out)
    file_plan = _read_plan_file(args.plan) if args.plan is not None else None
    if file_plan is not None:
        validate_no_blocks(file_plan, f"plan file {args.plan}")
    return file_plan, recipe


def _check_out(out: Path) -> None:
    """Refuse an output folder that cannot be made before training, without making it
    (an error later leaves nothing behind)."""
    if out.exists():
        if not out.is_dir():
            raise PrunevizError(f"output folder {out} exists and is not a folder")
        existing = out
    else:
        existing = out.absolute().parent
        while not existing.exists():
            existing = existing.parent
        if not existing.is_dir():
            raise PrunevizError(f"cannot create output folder {out}: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PrunevizError(f"cannot write the output folder {out}: {existing} is not writable")


def _read_plan_file(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PrunevizError(f"cannot read plan file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PrunevizError(f"plan file {path} is not UTF-8 text") from None
    return Plan.from_json(text)


def _schedule_for(args: argparse.Namespace, recipe: FinetuneRecipe, steps: int) -> Schedule:
    """The schedule of the options (defaults from the `steps` of training), checked to end
    within the training."""
    schedule = default_schedule(
        ScheduleKind(args.schedule), args.final, steps, initial=args.initial,
        begin_step=args.begin_step, end_step=args.end_step, frequency=args.frequency,
        power=args.power, rounds=args.rounds)
    validate_schedule_fits(schedule, recipe, steps)
    return schedule


def _start_distributed() -> tuple[int, int, bool]:
    """Join the torchrun process group if launched by torchrun with more than one process:
    (rank, world size, whether this call started the group)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        raise PrunevizError(f"WORLD_SIZE={text!r} is not a number of processes") from None
    if world <= 1:
        return 0, 1, False
    dist = torch.distributed
    if not dist.is_available():
        raise PrunevizError(f"launched as one of {world} processes, but this PyTorch build "
                            "has no torch.distributed")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    try:
        dist.init_process_group("gloo")
    except (RuntimeError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise PrunevizError(f"cannot join the process group (gloo, MASTER_ADDR="
                            f"{os.environ.get('MASTER_ADDR')}, MASTER_PORT="
                            f"{os.environ.get('MASTER_PORT')}): {first}") from None
    return dist.get_rank(), dist.get_world_size(), True


def _check_ranks_agree(result: FinetuneResult) -> None:
    """Every process must end with the same weights and the same stopping decision."""
    dist = torch.distributed
    weights = [v.detach().double() for v in result.state.values() if v.is_floating_point()]
    mine = torch.tensor([float(result.steps), float(result.best_step),
                         float(sum(w.sum() for w in weights)),
                         float(sum(w.abs().sum() for w in weights))], dtype=torch.float64)
    low, high = mine.clone(), mine.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    if not torch.equal(low, high):
        raise RuntimeError("the processes ended training with different weights or steps "
                           f"(steps {int(low[0])}..{int(high[0])}); they must stay in step")


def _rank_tag() -> str:
    """' (rank N)' in the error lines of the processes other than torchrun's first."""
    rank = os.environ.get("RANK", "0")
    return f" (rank {rank})" if os.environ.get("WORLD_SIZE", "1") != "1" and rank != "0" else ""


def _fmt_metric(value: float, higher_is_better: bool) -> str:
    return f"{value:.4f}" if higher_is_better or abs(value) >= 0.1 else f"{value:.4g}"


def cmd_finetune(args: argparse.Namespace) -> int:
    """Prune (once, or by a schedule while training), retrain, measure on the test split
    before pruning, right after it and after retraining, and write the weights, the
    training history and the report (the first process only, under torchrun)."""
    file_plan, recipe = _read_finetune_args(args)
    bench = open_workbench(source_from_args(args))
    session = bench.session
    train_data = validate_train_data(bench.name, bench.train_data)
    steps = total_steps(train_data, recipe)
    per_epoch = epoch_steps(train_data, recipe)
    schedule = _schedule_for(args, recipe, steps) if args.schedule is not None else None
    teacher: nn.Module | None = None
    if recipe.distill > 0:  # the unpruned model (the workbench's pristine copy)
        reference = bench.meter.reference
        teacher = copy.deepcopy(bench.model) if reference is None else reference
    before = bench.baseline.evaluation
    higher = bench.eval_data.higher_is_better
    spec = PruneSpec(args.granularity, args.criterion, args.scope, args.max_layer_sparsity)
    if schedule is None:
        plan, skipped = _plan_for(args, bench, file_plan)
        session.apply(plan)
        after_pruning_is = "the plan applied to the unpruned weights"
    else:
        skipped = validate_prunable(session, spec, schedule.final)
        session.apply(spec.plan(session, schedule.final))
        after_pruning_is = (f"the schedule's final {schedule.final:.1%} applied one-shot to the "
                            "unpruned weights (same granularity, criterion and scope); the "
                            "schedule itself prunes gradually while training")
    after_pruning = evaluate(bench.model, bench.eval_data)
    notes = list(session.notes)
    if schedule is not None:
        session.reset()  # the schedule starts from the unpruned model
    rank, world, started = _start_distributed()
    if world > 1:  # DDP's note on 1x1 convolutions' gradient layout: performance, not an error
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view")
    out: Path = args.out
    start = time.perf_counter()
    try:
        epochs_done = [0]

        def progress(record: Record) -> None:
            if record.metric is None:  # one line per epoch: the validated records
                return
            epochs_done[0] += 1
            line = (f"finetune: epoch {epochs_done[0]}/{recipe.epochs}  step {record.step}/"
                    f"{steps}  loss {record.loss:.4f}  validation {before.metric_name} "
                    f"{_fmt_metric(record.metric, higher)}  sparsity {record.sparsity:.1%}")
            if record.event:
                line += f"  ({record.event})"
            print(line, file=sys.stderr, flush=True)

        result = finetune(session, train_data, recipe, schedule=schedule,
                          prune=spec if schedule is not None else None, teacher=teacher,
                          progress=progress if rank == 0 and not args.json else None)
        if world > 1:
            _check_ranks_agree(result)
    finally:
        if started:
            gc.collect()  # nothing of DDP may outlive the group (see finetune.py)
            torch.distributed.destroy_process_group()
    seconds = time.perf_counter() - start
    bench.model.load_state_dict(result.state, strict=True)  # the best weights, as written
    after = evaluate(bench.model, bench.eval_data)
    if rank != 0:
        return 0
    plan_file = None if args.plan is None else str(args.plan)
    summary = summarize_run(result, recipe, steps, per_epoch, before.metric_name)
    report = finetune_report(
        session, result, Stages(before, after_pruning, after, after_pruning_is),
        pruning=pruning_record(plan_file=plan_file, sparsity=args.sparsity, schedule=schedule,
                               spec=spec, steps=steps),
        recipe=recipe, summary=summary, processes=world, seconds=seconds, skipped=skipped,
        notes=notes)
    state = {k: v.detach() for k, v in bench.model.state_dict().items()}
    files = {
        "weights.safetensors": dense_bytes(state),
        "weights.sparse.safetensors": sparse_bytes(state),
        "history.json": json.dumps(result.to_dict(), indent=2).encode(),
        "report.json": json.dumps(report, indent=2).encode(),
    }
    _write_files(bench, out, files)
    if args.json:
        written = {name: str(out / name) for name in files}
        print(json.dumps({**report, "written": written}, indent=2))
        return 0
    name = before.metric_name
    print(f"model     {bench.name}")
    print("pruning   " + describe_pruning(plan_file=plan_file, sparsity=args.sparsity,
                                          schedule=schedule, spec=spec))
    print(f"{name:<9} {_fmt_metric(before.metric, higher)}  before pruning")
    print(f"{name:<9} {_fmt_metric(after_pruning.metric, higher)}  right after pruning"
          + (" (the final sparsity one-shot; the schedule prunes gradually)"
             if schedule is not None else ""))
    print(f"{name:<9} {_fmt_metric(after.metric, higher)}  after retraining "
          f"({before.samples} test samples)")
    layers = report["layers"]
    pruned = [f"{x['name']} {x['sparsity']:.1%}" for x in layers if x["nonzero"] < x["params"]]
    print(f"sparsity  {report['sparsity']:.1%} of all {report['params_total']:,} parameters "
          "zero" + (f"; weights: {', '.join(pruned)}" if pruned else ""))
    best = ("" if result.best_metric is None else
            f"; best validation {name} {_fmt_metric(result.best_metric, higher)} at step "
            f"{result.best_step}, kept")
    procs = f", {world} processes" if world > 1 else ""
    print(f"training  {summary.stopped_reason} (batch {recipe.batch_size}, lr {recipe.lr:g}"
          f"{procs}, {seconds:.1f} s){best}")
    print(f"written   {out}: {', '.join(files)}")
    for layer_name, reason in skipped.items():
        print(f"skipped {layer_name}: {reason}")
    for note in report["notes"]:
        print(f"note: {note}")
    return 0


def _write_files(bench: Workbench, out: Path, files: dict[str, bytes]) -> None:
    """Write `files` into the folder `out` (made if missing), never over the inputs."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PrunevizError(f"cannot create output folder {out}: {exc.strerror}") from None
    refuse_overwriting_inputs(bench.source, out, files)
    for filename, data in files.items():
        write_atomic(out / filename, data)


def cmd_export(args: argparse.Namespace) -> int:
    """Prune as the plan options say, export everything into --out and verify it."""
    from pruneviz.output.bundle import export_bundle

    bench, _, _ = _measure(args)
    result = export_bundle(bench, args.out, slim=args.slim, latency=args.latency)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(result.status)
        for check in result.checks:
            print(f"  {'ok  ' if check.passed else 'FAIL'} {check.name}: {check.detail}")
        for name, size in result.sizes().items():
            print(f"{size:>10,} B  {args.out / name}")
        print(f"slim: {result.slim_note}")
        print(f"reproduce: {result.command}")
    if not result.passed:
        print(f"pruneviz: error: the export in {args.out} did not verify: {result.status}",
              file=sys.stderr)
        return 1
    return 0


COMMANDS = {"samples": cmd_samples, "evaluate": cmd_evaluate, "prune": cmd_prune,
            "sensitivity": cmd_sensitivity, "export": cmd_export, "finetune": cmd_finetune,
            "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the verb, turn errors into one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except (PrunevizError, ValueError, OSError, KeyError) as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        message = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
        print(f"pruneviz: error{_rank_tag()}: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        print(f"pruneviz: internal error{_rank_tag()}: {type(exc).__name__}: {exc} "
              "(set PRUNEVIZ_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
