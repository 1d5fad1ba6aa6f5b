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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pruneviz.criteria import criterion_names
from pruneviz.errors import PrunevizError
from pruneviz.export import write_atomic
from pruneviz.plan import GlobalPlan, Granularity, Plan
from pruneviz.report import Report
from pruneviz.storage import dense_bytes, sparse_bytes
from pruneviz.workbench import Workbench, open_workbench

GRANULARITIES = [g.value for g in Granularity]


def _add_plan_args(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--plan", type=Path, metavar="FILE", help="a plan JSON file")
    source.add_argument(
        "--sparsity", type=float, metavar="S", help="prune every layer to this fraction (0..1)"
    )
    parser.add_argument("--granularity", default="unstructured", choices=GRANULARITIES,
                        help="with --sparsity (default: unstructured)")
    parser.add_argument("--criterion", default="l1", choices=criterion_names(),
                        help="with --sparsity (default: l1)")
    parser.add_argument("--scope", default="local", choices=["local", "global"],
                        help="with --sparsity: the same amount per layer (local) or one "
                        "ranking across all layers (global)")
    parser.add_argument("--max-layer-sparsity", type=float, metavar="F",
                        help="with --scope global: cap on any one layer's sparsity")
    parser.add_argument("--remove-blocks", metavar="NAMES", default="",
                        help="comma-separated modules to replace by the identity (blocks or "
                        "layers whose output has their input's shape)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    parser = argparse.ArgumentParser(
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
    _add_plan_args(prune)
    prune.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    prune.add_argument("--latency", action="store_true", help="also time inference")
    prune.add_argument("--slim", action="store_true",
                       help="also write the slimmed model (pruned channels removed) and "
                       "measure the slimmed and sparse-deployed forms")
    prune.add_argument("--json", action="store_true", help="print one JSON object")

    bench = verbs.add_parser("bench", help="run the engine benchmarks (JSON results)")
    bench.add_argument("name", nargs="?", metavar="NAME", help="slider, live or size")
    bench.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# -- verbs ---------------------------------------------------------------------------------
def _read_plan_args(args: argparse.Namespace) -> Plan | None:
    """Check the plan options before any model is loaded; returns the plan file's plan."""
    if args.sparsity is not None and not 0.0 <= args.sparsity <= 1.0:
        raise PrunevizError(f"--sparsity {args.sparsity} is outside [0, 1]")
    if args.sparsity is None and (args.max_layer_sparsity is not None or args.scope != "local"):
        raise PrunevizError("--scope and --max-layer-sparsity need --sparsity")
    if args.plan is None:
        return None
    try:
        text = args.plan.read_text(encoding="utf-8")
    except OSError as exc:
        raise PrunevizError(f"cannot read plan file {args.plan}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PrunevizError(f"plan file {args.plan} is not UTF-8 text") from None
    return Plan.from_json(text)


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
        raise PrunevizError(
            f"no layer of {bench.name} can be pruned with --granularity {args.granularity} "
            f"--criterion {args.criterion}: {next(iter(skipped.values()))}"
        )
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
          skipped: dict[str, str], extra: dict[str, Any] | None = None) -> None:
    if args.json:
        out = report.to_dict()
        out["baseline"] = {k: v for k, v in baseline.to_dict().items()
                           if k not in ("layers", "plan")}
        out["skipped_layers"] = skipped
        out.update(extra or {})
        print(json.dumps(out, indent=2))
    else:
        _print_report(report, baseline, skipped)
        for key, value in (extra or {}).items():
            print(f"{key}: {value}")


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
    """Prune, then write weights (dense and sparse safetensors), plan and report."""
    bench, report, skipped = _measure(args)
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
    if args.slim:
        extra.update(_slim_outputs(bench, out, latency=args.latency))
    _emit(args, report, bench.baseline, skipped, extra)
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
        print(f"pruneviz: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("PRUNEVIZ_DEBUG"):
            raise
        print(f"pruneviz: internal error: {type(exc).__name__}: {exc} "
              "(set PRUNEVIZ_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 1
