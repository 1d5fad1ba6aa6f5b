"""The verbs that measure a model: `samples`, `evaluate` and `prune` (to a plan or a
budget)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pruneviz.cli.options import (
    DEFAULT_CAP,
    open_bench,
    plan_for,
    read_budget,
    read_plan_args,
    read_plan_file,
    refuse_unprunable,
)
from pruneviz.cli.output import allocation_summary, check_out, emit, show_budget, write_files
from pruneviz.cli.refit import apply_refit, refit_settings
from pruneviz.cli.sensitivity import run_sensitivity
from pruneviz.data.sources import source_from_args
from pruneviz.errors import PrunevizError
from pruneviz.measure.meter import Report
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    Outcome,
    plan_for_budget,
)
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS
from pruneviz.workflows.workbench import Workbench


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


def measure(args: argparse.Namespace) -> tuple[Workbench, Report, dict[str, str]]:
    file_plan = read_plan_args(args)
    bench = open_bench(source_from_args(args))
    plan, skipped = plan_for(args, bench, file_plan)
    plan = plan.with_refit(None)  # the masks; a refit is the caller's (cmd_prune)
    blocks = [b.strip() for b in args.remove_blocks.split(",") if b.strip()]
    if blocks:
        plan = plan.with_blocks(sorted(set(plan.blocks) | set(blocks)))
    bench.session.apply(plan)
    return bench, bench.meter.report(latency=args.latency), skipped


def measure_budget(
    args: argparse.Namespace, budget: Budget
) -> tuple[Workbench, Report, dict[str, str], Outcome]:
    """Fit the chosen allocation to the budget, apply its plan and measure it."""
    bench = open_bench(source_from_args(args))
    session = bench.session
    method = Method(args.allocate or Method.SENSITIVITY)
    cap = DEFAULT_CAP if args.max_layer_sparsity is None else args.max_layer_sparsity
    # The layers no plan of this granularity and criterion can prune, and why.
    probe, skipped = session.uniform_plan(cap, args.granularity, args.criterion)
    if probe.is_empty and skipped:
        refuse_unprunable(bench, args, skipped)
    sensitivity = None
    if method is Method.SENSITIVITY:
        # The allocation never reads a level above the cap: measure up to the cap, exactly.
        levels = sorted({level for level in DEFAULT_LEVELS if level <= cap} | {cap})
        sensitivity = run_sensitivity(bench, args.granularity, args.criterion, levels,
                                       progress=not args.json)
    outcome = plan_for_budget(bench, budget, method, granularity=args.granularity,
                              criterion=args.criterion, sensitivity=sensitivity, cap=cap)
    session.apply(outcome.plan)
    return bench, bench.meter.report(latency=args.latency), skipped, outcome


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a model, pruned by a plan or a uniform sparsity if one is given (and, with
    --int8 / --low-rank, the pruned model quantized or factorized too)."""
    if args.low_rank is not None and not 0.0 < args.low_rank <= 1.0:
        raise PrunevizError(f"--low-rank must be in (0, 1], got {args.low_rank}")
    bench, report, skipped = measure(args)
    refit = read_plan_file(args.plan).refit if args.plan is not None else None
    refit_extra: dict[str, Any] = {}
    refit_lines: list[str] = []
    if refit is not None:  # the plan file says its weights were refit: so are these
        report, refit_extra, refit_lines = apply_refit(bench, refit, report,
                                                       latency=args.latency)
    combined = _combined(args, bench)
    extra = {"combined": [m.to_dict() for m in combined]} if combined else {}
    extra.update(refit_extra)
    lines = [f"{m.technique:<16} {m.evaluation.metric_name} {m.evaluation.metric:.4f}  "
             f"{m.params_total:,} params stored  file {m.sizes.dense:,} B"
             + (f"  latency {m.latency.median_ms:.2f} ms on {m.latency.where}"
                if m.latency else "")
             + "".join(f"\n  note: {n}" for n in m.notes) for m in combined]
    if args.json:
        emit(args, report, bench.baseline, skipped, extra)
    else:
        emit(args, report, bench.baseline, skipped, summary=[*refit_lines, *lines])
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


PRUNE_FILES = ("weights.safetensors", "weights.sparse.safetensors", "plan.json", "report.json")


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune (by the plan options, or to a budget), then write weights (dense and sparse
    safetensors), plan and report."""
    budget = read_budget(args)
    refit = refit_settings(args, read_plan_file(args.plan) if args.plan is not None else None)
    outcome: Outcome | None = None
    if budget is None:
        bench, report, skipped = measure(args)
    else:
        bench, report, skipped, outcome = measure_budget(args, budget)
    out: Path = args.out
    check_out(bench, out, PRUNE_FILES, args)  # before the refit's work
    plan = bench.session.stamp(bench.session.plan)
    extra: dict[str, Any] = {}
    summary: list[str] = []
    if outcome is not None:
        # The plan is in plan.json (and in the report's "plan"): not repeated here.
        extra["allocation"] = {k: v for k, v in outcome.to_dict().items() if k != "plan"}
        summary = allocation_summary(outcome, report.evaluation.metric_name)
    if refit is not None:
        report, refit_extra, refit_lines = apply_refit(bench, refit, report,
                                                       latency=args.latency)
        plan = plan.with_refit(refit)
        extra.update(refit_extra)
        summary += refit_lines
    state = bench.model.state_dict()
    files = {
        "weights.safetensors": dense_bytes(state),
        "weights.sparse.safetensors": sparse_bytes(state),
        "plan.json": plan.to_json().encode(),
        "report.json": json.dumps(report.to_dict(), indent=2).encode(),
    }
    write_files(bench, out, files, args)
    extra["written"] = {name: str(out / name) for name in files}
    if args.slim:
        extra.update(_slim_outputs(bench, out, latency=args.latency))
    emit(args, report, bench.baseline, skipped, extra, summary)
    # A budget out of reach is not an error: the closest plan (every layer at the cap) was
    # measured and written, like a plan the session had to adjust, whose notes are printed
    # but do not fail the command. So the exit status is 0; the text output also warns on
    # stderr, and --json says `"met": false` (with the reason in `notes`) for scripts.
    if outcome is not None and not outcome.met and not args.json:
        kind = outcome.budget.kind
        limit = "at least" if kind is BudgetKind.SPARSITY else "at most"
        wanted, measured = (show_budget(kind, outcome.budget.value),
                            show_budget(kind, outcome.measured))
        print(f"pruneviz: warning: budget not met ({limit} {wanted}, measured {measured}): "
              f"the closest plan was written to {out}", file=sys.stderr)
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
