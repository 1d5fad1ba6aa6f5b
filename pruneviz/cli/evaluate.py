"""The verbs that measure a model: `samples`, `evaluate` and `prune` (to a plan or a
budget)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pruneviz.cli.options import (
    DEFAULT_CAP,
    open_bench,
    plan_for,
    read_budget,
    read_floor,
    read_plan_args,
    read_plan_file,
    refuse_unprunable,
)
from pruneviz.cli.output import (
    allocation_summary,
    check_out,
    emit,
    floor_curve_lines,
    show_budget,
    write_files,
)
from pruneviz.cli.refit import apply_refit, refit_settings
from pruneviz.cli.sensitivity import run_sensitivity
from pruneviz.core.explain import plan_notes
from pruneviz.data.sources import source_from_args
from pruneviz.errors import ModelError, PlanError, PrunevizError
from pruneviz.measure.meter import Report, latency_batch
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.output.json_safe import safe_json
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    Outcome,
    plan_for_budget,
)
from pruneviz.workflows.floor import FloorResult, check_floor, plan_for_floor
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS, SensitivityResult
from pruneviz.workflows.workbench import Workbench

if TYPE_CHECKING:
    from pruneviz.measure.forms import Forms


class FloorError(PlanError):
    """No plan of the method meets the metric floor (--min-metric)."""


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
        print(safe_json({"samples": rows}))
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
    bench, method, cap, skipped, sensitivity = _allocation_inputs(args)
    outcome = plan_for_budget(bench, budget, method, granularity=args.granularity,
                              criterion=args.criterion, sensitivity=sensitivity, cap=cap)
    bench.session.apply(outcome.plan)
    return bench, bench.meter.report(latency=args.latency), skipped, outcome


def _allocation_inputs(args: argparse.Namespace, floor: float | None = None) -> tuple[
        Workbench, Method, float, dict[str, str], SensitivityResult | None]:
    """The workbench, the --allocate method, its cap, the layers no plan can prune, and
    (for the sensitivity method) the sensitivity analysis it reads; a metric `floor` is
    checked against the metric's range before anything is measured."""
    bench = open_bench(source_from_args(args))
    if floor is not None:
        check_floor(floor, bench.eval_data)
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
    return bench, method, cap, skipped, sensitivity


def measure_floor(args: argparse.Namespace, floor: float) -> tuple[
        Workbench, Report, dict[str, str], FloorResult]:
    """Search the chosen allocation for the plan that prunes the most while the measured
    metric meets `floor`, apply it and measure it; an unreachable floor is an error."""
    bench, method, cap, skipped, sensitivity = _allocation_inputs(args, floor)
    result = plan_for_floor(bench, floor, method, objective=args.objective or "sparsity",
                            granularity=args.granularity, criterion=args.criterion,
                            sensitivity=sensitivity, cap=cap)
    if result.chosen is None:
        if not args.json:
            for line in floor_curve_lines(result):
                print(line, file=sys.stderr)
        raise FloorError(f"--min-metric {floor:g}: {result.message()}")
    bench.session.apply(result.chosen.plan)
    return bench, bench.meter.report(latency=args.latency), skipped, result


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Measure a model, pruned by a plan or a uniform sparsity if one is given (and, with
    --int8 / --int8-static / --int4 / --low-rank, the pruned model quantized or factorized
    too)."""
    if args.low_rank is not None and not 0.0 < args.low_rank <= 1.0:
        raise PrunevizError(f"--low-rank must be in (0, 1], got {args.low_rank}")
    if args.int4_group < 1:
        raise PrunevizError(f"--int4-group must be a whole number of at least 1, got "
                            f"{args.int4_group}")
    if args.quantized_out is not None and not (args.int8_static or args.int4):
        raise PrunevizError("--quantized-out writes the files of --int8-static and --int4: "
                            "give one of them too")
    _check_quantized_out(args.quantized_out,
                         [name for name, on in (("int8-static.safetensors", args.int8_static),
                                                ("int4-w.safetensors", args.int4)) if on])
    bench, report, skipped = measure(args)  # (the folder is checked before the slow part)
    refit = read_plan_file(args.plan).refit if args.plan is not None else None
    refit_extra: dict[str, Any] = {}
    refit_lines: list[str] = []
    if refit is not None:  # the plan file says its weights were refit: so are these
        report, refit_extra, refit_lines = apply_refit(bench, refit, report,
                                                       latency=args.latency)
    combined, files = _combined(args, bench)
    written = _write_quantized(args.quantized_out, files)
    criteria = plan_notes(bench.session)
    extra: dict[str, Any] = {"combined": [m.to_dict() for m in combined]} if combined else {}
    extra.update(refit_extra)
    if combined and written:
        extra["written"] = written
    if criteria:
        extra["criterion_notes"] = criteria
    lines = [f"note: {note}" for note in criteria]
    lines += [f"{m.technique:<19} {m.evaluation.metric_name} {m.evaluation.metric:.4f}  "
              f"{m.params_total:,} params stored  file {m.sizes.dense:,} B"
              + (f"  latency {m.latency.median_ms:.2f} ms on {m.latency.where}"
                 if m.latency else "  latency: storage only (no int4 kernel)"
                 if m.technique.split(" ")[0].endswith("int4-w") and args.latency else "")
              + (f", vs unpruned in the same rounds: {m.latency_speedup.text()}"
                 if m.latency_speedup else "")
              + "".join(f"\n  note: {n}" for n in m.notes) for m in combined]
    lines += [f"wrote {path}" for path in written.values()]
    if args.json:
        emit(args, report, bench.baseline, skipped, extra or None)
    else:
        emit(args, report, bench.baseline, skipped, summary=[*refit_lines, *lines])
    return 0


def _check_quantized_out(folder: Path | None, names: list[str]) -> None:
    """Refuse a --quantized-out that is a file or already holds one of `names`."""
    if folder is None:
        return
    if folder.exists() and not folder.is_dir():
        raise PrunevizError(f"--quantized-out {folder} is a file, not a folder")
    clash = [name for name in names if (folder / name).exists()]
    if clash:
        raise PrunevizError(f"{', '.join(str(folder / n) for n in clash)} already exists: "
                            "choose another --quantized-out folder or remove it")


def _write_quantized(folder: Path | None, files: dict[str, bytes]) -> dict[str, str]:
    """Write each quantized model's file into `folder` (never over an existing file)."""
    if folder is None:
        return {}
    _check_quantized_out(folder, list(files))
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {name: str(folder / name) for name in files}


def _combined(args: argparse.Namespace, bench: Workbench) -> tuple[list[Any], dict[str, bytes]]:
    """The pruned model quantized (--int8, --int8-static, --int4) and/or factorized
    (--low-rank), each measured as the Trade-offs page measures it; and the files of the
    quantized models that have one, by file name."""
    from pruneviz.measure.compression import (
        INT4,
        INT8,
        INT8_STATIC,
        STORAGE_ONLY,
        SVD,
        measure_model,
    )
    from pruneviz.measure.compression import technique_name as name
    from pruneviz.measure.meter import latency_batch
    from pruneviz.workflows.techniques import transform

    pruned = not bench.session.plan.is_empty
    chosen = [kind for kind, on in ((INT8, args.int8), (INT8_STATIC, args.int8_static),
                                    (INT4, args.int4), (SVD, args.low_rank is not None)) if on]
    calibration = bench.session.calibration
    done = []
    files: dict[str, bytes] = {}
    for kind in chosen:
        made = transform(kind, bench.model, example=latency_batch(bench.eval_data, 64),
                         calibration=(calibration if calibration is not None
                                      else bench.eval_data).x,
                         rank=args.low_rank, group_size=args.int4_group)
        done.append(measure_model(
            made.model, bench.eval_data, reference=bench.pristine, notes=made.notes,
            technique=name(kind, pruned=pruned, rank=args.low_rank, group_size=args.int4_group),
            latency=args.latency and kind not in STORAGE_ONLY, saved=made.saved))
        if made.saved is not None:
            files[f"{kind}.safetensors"] = made.saved
    return done, files


PRUNE_FILES = ("weights.safetensors", "weights.sparse.safetensors", "plan.json", "report.json")


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune (by the plan options, or to a budget), then write weights (dense and sparse
    safetensors), plan and report."""
    budget = read_budget(args)
    floor = read_floor(args)
    refit = refit_settings(args, read_plan_file(args.plan) if args.plan is not None else None)
    outcome: Outcome | None = None
    found: FloorResult | None = None
    if floor is not None:
        bench, report, skipped, found = measure_floor(args, floor)
    elif budget is None:
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
    criteria = plan_notes(bench.session)
    if criteria:  # what the criterion did (lsh without duplicates, criteria that agree)
        extra["criterion_notes"] = criteria
        summary = [*summary, *(f"note: {note}" for note in criteria)]
    if found is not None:
        extra["floor"] = found.to_dict()
        summary = [*summary, "", *floor_curve_lines(found), f"floor     {found.message()}",
                   *(f"note: {note}" for note in found.notes)]
    if refit is not None:
        report, refit_extra, refit_lines = apply_refit(bench, refit, report,
                                                       latency=args.latency)
        plan = plan.with_refit(refit)
        extra.update(refit_extra)
        summary += refit_lines
    # The slim is built and checked before anything is written: a slim that cannot be
    # built or does not compute what the masked model computes fails the command and
    # leaves nothing on disk.
    slim_forms = _slim_forms(bench, latency=args.latency) if args.slim else None
    state = bench.model.state_dict()
    files = {
        "weights.safetensors": dense_bytes(state),
        "weights.sparse.safetensors": sparse_bytes(state),
        "plan.json": plan.to_json().encode(),
        "report.json": safe_json(report.to_dict()).encode(),
    }
    write_files(bench, out, files, args)
    extra["written"] = {name: str(out / name) for name in files}
    if slim_forms is not None:
        extra.update(_slim_outputs(bench, slim_forms, out, latency=args.latency))
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


def _slim_forms(bench: Workbench, *, latency: bool) -> Forms:
    """Measure the slimmed and sparse-deployed forms, with `latency` timed together with
    the masked model in the same interleaved rounds (each form's speed-up over it with an
    interval and verdict: `forms.measure_forms`). The slim is checked on the evaluation
    data; ModelError when it cannot be built or does not match the masked model."""
    from pruneviz.measure.forms import measure_forms

    batch = latency_batch(bench.eval_data, 64)
    forms = measure_forms(bench.session, batch, latency=latency,
                          runs=bench.meter.latency_runs, data=bench.eval_data)
    if forms.slim_model is None:
        raise ModelError(f"--slim: no slimmed model was made, and nothing was written: "
                         f"{forms.slimmed.note}")
    return forms


def _slim_outputs(bench: Workbench, forms: Forms, out: Path, *,
                  latency: bool) -> dict[str, Any]:
    """The measured forms as JSON; write the slimmed model."""
    from pruneviz.output.model_files import save_slimmed

    batch = latency_batch(bench.eval_data, 64)
    result: dict[str, Any] = {"slim": forms.slimmed.to_dict(),
                              "sparse_deployed": forms.sparse.to_dict()}
    if forms.slim_differs:  # by design not the masked model: measured on its own
        result["slim_differs"] = list(forms.slim_differs)
    if latency:
        fastest = forms.fastest()
        result["fastest_form"] = None if fastest is None else fastest.form
        if forms.timing is not None and (busy := forms.timing.busy()) is not None:
            result["machine_busy"] = busy
    if forms.slim_model is not None:
        result["slim_files"] = save_slimmed(bench.name, bench.pristine, forms.slim_model,
                                            batch[:8], out / "slim")
    return result
