"""`prune --refit`: reconstruction after pruning (workflows.refit), its options and output."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from pruneviz.core.plan import REFIT_DAMPING, REFIT_SAMPLES, REFIT_SEED, Plan, Refit
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.measure.meter import Report
from pruneviz.workflows.refit import RefitResult, refit_bench
from pruneviz.workflows.workbench import Workbench


def add_refit_arguments(parser: argparse.ArgumentParser) -> None:
    """--refit and its settings."""
    group = parser.add_argument_group("reconstruction (refit the kept weights)")
    group.add_argument("--refit", action="store_true",
                       help="after pruning, refit each layer's kept weights (damped least "
                       "squares per output row) to reproduce the unpruned layer's outputs on "
                       "calibration data; recorded in plan.json, so --plan repeats it")
    group.add_argument("--refit-damping", type=float, metavar="F",
                       help=f"with --refit: damping, a fraction of mean diag(XᵀX) "
                       f"(default {REFIT_DAMPING})")
    group.add_argument("--refit-samples", type=int, metavar="N",
                       help=f"with --refit: calibration samples, from the training data "
                       f"(default {REFIT_SAMPLES})")
    group.add_argument("--refit-seed", type=int, metavar="N",
                       help=f"with --refit: seed of the calibration samples (default "
                       f"{REFIT_SEED})")


def refit_settings(args: argparse.Namespace, file_plan: Plan | None) -> Refit | None:
    """The refit to do: --refit with its options, else the plan file's, else None
    (checked before any model is loaded)."""
    options = {"damping": args.refit_damping, "samples": args.refit_samples,
               "seed": args.refit_seed}
    given = {key: value for key, value in options.items() if value is not None}
    if not args.refit:
        if given:
            flags = ", ".join(f"--refit-{key}" for key in given)
            raise PrunevizError(f"{flags} {'needs' if len(given) == 1 else 'need'} --refit")
        return file_plan.refit if file_plan is not None else None
    try:
        return Refit(**given)
    except PlanError as exc:
        raise PrunevizError(str(exc).replace("refit: ", "--refit-", 1)) from None


def apply_refit(bench: Workbench, settings: Refit, before: Report, *,
                latency: bool) -> tuple[Report, dict[str, Any], list[str]]:
    """Refit the applied plan, make the refit weights the session's (same masks), measure
    them; returns their report (its plan says refit) and the JSON and text additions."""
    session = bench.session
    plan = session.plan
    if plan.is_empty:
        raise PrunevizError("--refit needs a plan that prunes something (--sparsity, --plan "
                            "or a target)")
    result = refit_bench(bench, settings)
    session.rebase(result.state, keep_decisions=True)
    after = bench.meter.report(latency=latency)
    after = replace(after, plan=session.stamp(plan).with_refit(settings).to_dict())
    return after, {"refit": _refit_dict(result, before, after)}, _refit_lines(result, before,
                                                                              after)


def _refit_dict(result: RefitResult, before: Report, after: Report) -> dict[str, Any]:
    out = result.to_dict()
    out["metric_name"] = after.evaluation.metric_name
    out["metric_before"] = before.evaluation.metric
    out["metric_after"] = after.evaluation.metric
    return out


def _refit_lines(result: RefitResult, before: Report, after: Report) -> list[str]:
    settings, name = result.settings, after.evaluation.metric_name
    lines = [
        "",
        f"refit     {name} {before.evaluation.metric:.4f} one-shot -> "
        f"{after.evaluation.metric:.4f} refit  (damping {settings.damping:g}, "
        f"{result.samples:,} samples of {result.data_name}, seed {settings.seed}, "
        f"{result.seconds:.2f} s)",
        f"{'layer':<28} {'output error before':>19} {'after':>8}  refit",
    ]
    for layer in result.layers:
        b = "-" if layer.before is None else f"{layer.before:.4f}"
        a = "-" if layer.after is None else f"{layer.after:.4f}"
        what = "yes" if layer.refit else f"no: {layer.reason}"
        lines.append(f"{layer.name:<28} {b:>19} {a:>8}  {what}")
    lines += [f"note: {note}" for note in result.notes]
    return lines
