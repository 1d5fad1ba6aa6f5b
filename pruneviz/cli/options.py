"""Shared option reading of the verbs: the plan, budget and output-folder options, checked
before any model is loaded."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import Plan
from pruneviz.data.sources import Source
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
)
from pruneviz.workflows.finetune_job import unprunable_error
from pruneviz.workflows.workbench import Workbench, open_workbench

GRANULARITIES = [g.value for g in Granularity]


DEFAULT_CAP = 0.95  # --max-layer-sparsity with a target (as allocation.plan_for_budget)


TARGETS = {  # --target-* option -> what it limits
    "target_sparsity": BudgetKind.SPARSITY,
    "target_macs": BudgetKind.MACS,
    "target_size_bytes": BudgetKind.SIZE,
    "target_latency_ms": BudgetKind.LATENCY,
}


def open_bench(source: Source) -> Workbench:
    """The workbench of `source`, saying on stderr how its weights were read (a
    checkpoint's key, the entries ignored) when there is something to say."""
    bench = open_workbench(source)
    for note in bench.notes:
        print(f"note: {note}", file=sys.stderr)
    return bench


def read_plan_args(args: argparse.Namespace) -> Plan | None:
    """Check the plan options before any model is loaded; returns the plan file's plan."""
    if args.sparsity is not None and not 0.0 <= args.sparsity <= 1.0:
        raise PrunevizError(f"--sparsity {args.sparsity} is outside [0, 1]")
    check_cap(args)
    if args.sparsity is None and (args.max_layer_sparsity is not None or args.scope != "local"):
        raise PrunevizError("--scope and --max-layer-sparsity need --sparsity")
    if args.max_layer_sparsity is not None and args.scope != "global":
        raise PrunevizError("--max-layer-sparsity needs --scope global (with --scope local "
                            "every layer gets --sparsity)")
    if args.plan is None:
        return None
    return read_plan_file(args.plan)


def check_cap(args: argparse.Namespace) -> None:
    cap = args.max_layer_sparsity
    if cap is not None and not 0.0 < cap <= 1.0:
        raise PrunevizError(f"--max-layer-sparsity {cap} is outside (0, 1]")


def no_amount_error(granularity: Granularity, what: str) -> PlanError:
    return PlanError(f"{what} needs an amount to vary, and --granularity {granularity.value} "
                     "has a fixed sparsity; choose unstructured, filter or channel")


def read_budget(args: argparse.Namespace) -> Budget | None:
    """`prune`'s target as a Budget (None without one), checked before any model is loaded.

    argparse already refuses two targets, or a target with --plan or --sparsity."""
    given = [(option, kind) for option, kind in TARGETS.items()
             if getattr(args, option) is not None]
    if args.objective is not None and args.min_metric is None:
        raise PrunevizError("--objective is for --min-metric (what to prune the most of while "
                            "the metric stays at the floor)")
    if not given:
        if args.allocate is not None and args.min_metric is None:
            raise PrunevizError("--allocate needs a target: --target-sparsity, --target-macs, "
                                "--target-size-bytes, --target-latency-ms or --min-metric")
        return None
    option, kind = given[0]
    flag = "--" + option.replace("_", "-")
    value = getattr(args, option)
    if kind is BudgetKind.SIZE:
        if value <= 0:
            raise PrunevizError(f"{flag} {value} must be a positive number of bytes")
    elif kind is BudgetKind.LATENCY:
        if not (math.isfinite(value) and value > 0):  # NaN fails both
            raise PrunevizError(f"{flag} {value} must be a positive number of milliseconds "
                                "(the unpruned model's latency is in `pruneviz evaluate "
                                "--latency`)")
    elif not 0.0 < value <= 1.0:  # also refuses NaN
        raise PrunevizError(f"{flag} {value} is outside (0, 1]")
    check_amount_options(args, flag)
    return Budget(kind, float(value))


def check_amount_options(args: argparse.Namespace, flag: str) -> None:
    """The options a budget or a floor (`flag`) cannot be combined with."""
    if args.scope != "local":
        raise PrunevizError(f"--scope is for --sparsity; with {flag} choose --allocate global")
    if args.remove_blocks.strip():
        raise PrunevizError(f"--remove-blocks cannot be combined with {flag}: the budget is "
                            "met by pruning amounts only")
    check_cap(args)
    granularity = Granularity(args.granularity)
    if granularity.n_m is not None:
        raise no_amount_error(granularity, flag)


def read_floor(args: argparse.Namespace) -> float | None:
    """`prune`'s --min-metric (None without one), checked as far as it can be before the
    model is loaded (its range depends on the metric: checked once the data is read)."""
    value = args.min_metric
    if value is None:
        return None
    if not math.isfinite(value):
        raise PrunevizError(f"--min-metric {value} is not a number: give the metric the "
                            "pruned model must keep, such as --min-metric 0.98 for 98% "
                            "accuracy (or the largest mse allowed)")
    check_amount_options(args, "--min-metric")
    return float(value)


def refuse_unprunable(bench: Workbench, args: argparse.Namespace,
                      skipped: dict[str, str]) -> NoReturn:
    """No layer can be pruned with the options' granularity and criterion."""
    raise unprunable_error(bench.name, args.granularity, args.criterion, skipped)


def plan_for(
    args: argparse.Namespace, bench: Workbench, file_plan: Plan | None
) -> tuple[Plan, dict[str, str]]:
    session = bench.session
    if file_plan is not None:
        return file_plan, {}
    if args.sparsity is None:
        return Plan(), {}
    if args.scope == "global":  # layers that cannot take part are skipped, as locally
        plan, skipped = session.global_plan(args.sparsity, args.granularity, args.criterion,
                                            args.max_layer_sparsity)
    else:
        plan, skipped = session.uniform_plan(args.sparsity, args.granularity, args.criterion)
    if plan.is_empty and skipped:
        refuse_unprunable(bench, args, skipped)
    return plan, skipped


def option_flag(option: str) -> str:
    return "--" + option.replace("_", "-")


def check_out_folder(out: Path) -> None:
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


def read_plan_file(path: Path) -> Plan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PrunevizError(f"cannot read plan file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PrunevizError(f"plan file {path} is not UTF-8 text") from None
    return Plan.from_json(text)
