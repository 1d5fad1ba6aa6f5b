"""`python -m pruneviz` / `pruneviz`: the library's verbs on the command line.

Each verb makes library calls and prints either a short human summary or, with --json,
one JSON object on stdout. Errors are one line on stderr and a non-zero exit status
(2 for a problem with the input, 1 for an internal error); never a traceback, unless
PRUNEVIZ_DEBUG=1 is set.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pruneviz.allocation import Budget, BudgetKind, Method, Outcome, plan_for_budget
from pruneviz.criteria import criterion_names
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.export import write_atomic
from pruneviz.plan import GlobalPlan, Granularity, Plan
from pruneviz.report import Report
from pruneviz.sensitivity import DEFAULT_LEVELS, Point, SensitivityResult, SensitivityRun
from pruneviz.storage import dense_bytes, sparse_bytes
from pruneviz.workbench import Workbench, open_workbench

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
    evaluate.add_argument("model", metavar="MODEL", help="sample:NAME")
    _add_plan_args(evaluate)
    evaluate.add_argument("--latency", action="store_true", help="also time inference")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")

    prune = verbs.add_parser("prune", help="prune a model and write the weights and plan")
    prune.add_argument("model", metavar="MODEL", help="sample:NAME")
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
    sensitivity.add_argument("model", metavar="MODEL", help="sample:NAME")
    sensitivity.add_argument(
        "--levels", metavar="S,S,...",
        default=",".join(f"{level:g}" for level in DEFAULT_LEVELS),
        help="comma-separated sparsities in [0, 1] (default: %(default)s)")
    sensitivity.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                             help="unstructured, filter or channel (default: unstructured)")
    sensitivity.add_argument("--criterion", default="l1", choices=criterion_names(),
                             help="default: l1")
    sensitivity.add_argument("--json", action="store_true", help="print one JSON object")

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
    try:
        text = args.plan.read_text(encoding="utf-8")
    except OSError as exc:
        raise PrunevizError(f"cannot read plan file {args.plan}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PrunevizError(f"plan file {args.plan} is not UTF-8 text") from None
    return Plan.from_json(text)


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
    bench = open_workbench(args.model)
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
    bench = open_workbench(args.model)
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
    """A budget quantity for people."""
    if kind is BudgetKind.SPARSITY:
        return f"{value:.1%} overall sparsity"
    if kind is BudgetKind.MACS:
        return f"{value:.1%} of the MACs"
    return f"{value:,.0f} B sparse file"


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
    from pruneviz.models.samples import SAMPLES, load_sample

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
    """Measure a model, pruned by a plan or a uniform sparsity if one is given."""
    bench, report, skipped = _measure(args)
    _emit(args, report, bench.baseline, skipped)
    return 0


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
    bench = open_workbench(args.model)
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
    from pruneviz.export import save_slimmed
    from pruneviz.forms import slimmed_form, sparse_form
    from pruneviz.models.samples import load_sample
    from pruneviz.report import latency_batch

    batch = latency_batch(bench.eval_data, 64)
    slim_report, slim_model = slimmed_form(bench.session, batch, latency=latency)
    sparse_report, _ = sparse_form(bench.session, batch, latency=latency)
    result: dict[str, Any] = {"slim": slim_report.to_dict(),
                              "sparse_deployed": sparse_report.to_dict()}
    if slim_model is not None:
        base = load_sample(bench.name.removeprefix("sample:")).model
        result["slim_files"] = save_slimmed(bench.name, base, slim_model, batch[:8],
                                            out / "slim")
    return result


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmarks and print their JSON results."""
    from pruneviz.bench import run_benchmarks

    results = run_benchmarks(args.name)
    print(json.dumps(results, indent=2 if args.json else None))
    return 0


COMMANDS = {"samples": cmd_samples, "evaluate": cmd_evaluate, "prune": cmd_prune,
            "sensitivity": cmd_sensitivity, "bench": cmd_bench}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, run the verb, turn errors into one line on stderr."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.verb](args)
    except (PrunevizError, ValueError, OSError, KeyError) as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        message = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
        print(f"pruneviz: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        print(f"pruneviz: internal error: {type(exc).__name__}: {exc} "
              "(set PRUNEVIZ_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
