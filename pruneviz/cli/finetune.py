"""The `finetune` verb: read its options into a recipe and a schedule, prune, retrain and
write the weights, history and report (the job's rules and report are
workflows.finetune_job's)."""

from __future__ import annotations

import argparse
import copy
import gc
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from pruneviz.cli.distributed import check_ranks_agree, rank_device, start_distributed
from pruneviz.cli.options import (
    check_cap,
    check_out_folder,
    no_amount_error,
    open_bench,
    option_flag,
    plan_for,
    read_plan_file,
)
from pruneviz.cli.output import check_out, fmt_metric, write_files
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import Plan
from pruneviz.data.sources import source_from_args
from pruneviz.errors import PrunevizError
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.storage import dense_bytes, sparse_bytes
from pruneviz.output.json_safe import safe_json
from pruneviz.workflows.finetune import (
    FinetuneRecipe,
    PruneSpec,
    Record,
    finetune,
    total_steps,
)
from pruneviz.workflows.finetune_job import (
    DEFAULT_RECIPE,
    DISTILL_WEIGHT,
    Stages,
    default_lr,
    default_schedule,
    describe_pruning,
    epoch_steps,
    finetune_report,
    pruning_record,
    summarize_run,
    validate_prunable,
    validate_schedule_fits,
    validate_train_data,
)
from pruneviz.workflows.schedules import Schedule, ScheduleKind

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


def read_finetune_args(args: argparse.Namespace) -> tuple[Plan | None, FinetuneRecipe]:
    """Check `finetune`'s options before any model is loaded; fill in the defaults.

    Returns the plan file's plan (None without --plan) and the training recipe."""
    options = ["final", *SCHEDULE_OPTIONS]
    if args.schedule is None:
        given = [option_flag(o) for o in options if getattr(args, o) is not None]
        if given:
            raise PrunevizError(f"{given[0]} is a schedule option: it needs --schedule")
    args.blocks = read_blocks(args)
    if args.plan is None and args.sparsity is None and args.schedule is None \
            and not args.blocks:
        raise PrunevizError("finetune needs what to prune: --plan FILE, --sparsity S, "
                            "--schedule KIND or --remove-blocks NAMES")  # argparse refuses two
    amounts = ("granularity", "criterion", "scope", "max_layer_sparsity")
    if args.plan is not None:
        given = [option_flag(o) for o in amounts if getattr(args, o) is not None]
        if given:
            raise PrunevizError(f"{given[0]} is for --sparsity or --schedule: a plan file says "
                                "how each layer is pruned")
    args.granularity = args.granularity or Granularity.UNSTRUCTURED.value
    args.criterion = args.criterion or "l1"
    args.scope = args.scope or "local"
    if args.sparsity is not None and not 0.0 <= args.sparsity <= 1.0:
        raise PrunevizError(f"--sparsity {args.sparsity} is outside [0, 1]")
    check_cap(args)
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
                raise PrunevizError(f"{option_flag(option)} is not used by --schedule {kind.value} "
                                    f"(only by {users})")
        granularity = Granularity(args.granularity)
        if granularity.n_m is not None:
            raise no_amount_error(granularity, "--schedule")
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
    check_out_folder(args.out)
    file_plan = read_plan_file(args.plan) if args.plan is not None else None
    if file_plan is not None and file_plan.refit is not None:
        print(f"note: the plan file {args.plan} also refits the kept weights; fine-tuning "
              "trains them instead (it starts from the original weights, pruned)",
              file=sys.stderr)
        file_plan = file_plan.with_refit(None)
    return file_plan, recipe


def read_blocks(args: argparse.Namespace) -> tuple[str, ...]:
    """The blocks --remove-blocks names (none without it); refused with --plan, whose
    file says which blocks it removes."""
    text = args.remove_blocks
    if text is None:
        return ()
    blocks = tuple(sorted({b.strip() for b in text.split(",") if b.strip()}))
    if not blocks:
        raise PrunevizError(f"--remove-blocks {text!r} names no block: give module names "
                            "such as --remove-blocks layer1 (`pruneviz evaluate` lists the "
                            "removable ones under \"blocks\")")
    if args.plan is not None:
        raise PrunevizError("--remove-blocks is for --sparsity, --schedule or alone: a plan "
                            "file says which blocks it removes (its \"blocks\" list)")
    return blocks


def _schedule_for(args: argparse.Namespace, recipe: FinetuneRecipe, steps: int) -> Schedule:
    """The schedule of the options (defaults from the `steps` of training), checked to end
    within the training."""
    schedule = default_schedule(
        ScheduleKind(args.schedule), args.final, steps, initial=args.initial,
        begin_step=args.begin_step, end_step=args.end_step, frequency=args.frequency,
        power=args.power, rounds=args.rounds)
    validate_schedule_fits(schedule, recipe, steps)
    return schedule


FILES = ("weights.safetensors", "weights.sparse.safetensors", "history.json", "report.json")


@contextmanager
def stop_on_ctrl_c(enabled: bool) -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets (training then stops after its step and keeps the
    best weights so far); a second Ctrl-C stops at once. Without `enabled` (several
    processes, which must stop together) Ctrl-C keeps its usual effect."""
    event = threading.Event()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield event
        return

    def first(signum: int, frame: object) -> None:
        event.set()
        signal.signal(signal.SIGINT, previous)
        print("\npruneviz: stopping after this step; the best weights so far will be "
              "written (Ctrl-C again to stop at once, writing nothing)", file=sys.stderr,
              flush=True)

    previous = signal.signal(signal.SIGINT, first)
    try:
        yield event
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_finetune(args: argparse.Namespace) -> int:
    """Prune (once, or by a schedule while training), retrain, measure on the test split
    before pruning, right after it and after retraining, and write the weights, the
    training history and the report (the first process only, under torchrun)."""
    file_plan, recipe = read_finetune_args(args)
    source = source_from_args(args)
    cuda_devices = torch.cuda.device_count() if torch.cuda.is_available() else 0
    source = replace(source, device=rank_device(source.device, os.environ, cuda_devices))
    bench = open_bench(source)
    check_out(bench, args.out, FILES, args)  # before training, not after
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
    spec = PruneSpec(args.granularity, args.criterion, args.scope, args.max_layer_sparsity,
                     blocks=args.blocks)
    if schedule is None:
        plan, skipped = plan_for(args, bench, file_plan)
        if args.blocks:
            plan = session.stamp(plan.with_blocks(args.blocks))
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
    rank, world, started = start_distributed()
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
                    f"{fmt_metric(record.metric, higher)}  sparsity {record.sparsity:.1%}")
            if record.event:
                line += f"  ({record.event})"
            print(line, file=sys.stderr, flush=True)

        with stop_on_ctrl_c(world == 1) as interrupted:
            result = finetune(session, train_data, recipe, schedule=schedule,
                              prune=spec if schedule is not None else None, teacher=teacher,
                              progress=progress if rank == 0 and not args.json else None,
                              cancel=interrupted)
        if world > 1:
            check_ranks_agree(result)
    finally:
        if started:
            gc.collect()  # nothing of DDP may outlive the group (see finetune.py)
            torch.distributed.destroy_process_group()
    seconds = time.perf_counter() - start
    # The session holds the best weights (the plan's blocks removed); `result.state` is
    # the whole architecture's, the removed blocks' original weights included.
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
    state = session.state_dict()  # loads into the whole model; apply the plan to prune it
    files = {
        "weights.safetensors": dense_bytes(state),
        "weights.sparse.safetensors": sparse_bytes(state),
        "history.json": safe_json(result.to_dict()).encode(),
        "report.json": safe_json(report).encode(),
    }
    write_files(bench, out, files, args)
    code = 0
    if interrupted.is_set():
        code = 130  # what a shell expects of a command stopped by Ctrl-C
        print(f"pruneviz: stopped by Ctrl-C at step {result.steps} of {steps}: the best "
              f"weights so far, the history and the report were written to {out}",
              file=sys.stderr)
    if args.json:
        written = {name: str(out / name) for name in files}
        print(safe_json({**report, "written": written}))
        return code
    name = before.metric_name
    print(f"model     {bench.name}")
    print("pruning   " + describe_pruning(plan_file=plan_file, sparsity=args.sparsity,
                                          schedule=schedule, spec=spec))
    print(f"{name:<9} {fmt_metric(before.metric, higher)}  before pruning")
    print(f"{name:<9} {fmt_metric(after_pruning.metric, higher)}  right after pruning"
          + (" (the final sparsity one-shot; the schedule prunes gradually)"
             if schedule is not None else ""))
    print(f"{name:<9} {fmt_metric(after.metric, higher)}  after retraining "
          f"({before.samples} test samples)")
    layers = report["layers"]
    pruned = [f"{x['name']} " + ("removed" if x.get("removed") else f"{x['sparsity']:.1%}")
              for x in layers if x["nonzero"] < x["params"]]
    print(f"sparsity  {report['sparsity']:.1%} of all {report['params_total']:,} parameters "
          "zero" + (f"; weights: {', '.join(pruned)}" if pruned else ""))
    best = ("" if result.best_metric is None else
            f"; best validation {name} {fmt_metric(result.best_metric, higher)} at step "
            f"{result.best_step}, kept")
    procs = f", {world} processes" if world > 1 else ""
    print(f"training  {summary.stopped_reason} (batch {recipe.batch_size}, lr {recipe.lr:g}"
          f"{procs}, {seconds:.1f} s){best}")
    print(f"written   {out}: {', '.join(files)}")
    for layer_name, reason in skipped.items():
        print(f"skipped {layer_name}: {reason}")
    for note in report["notes"]:
        print(f"note: {note}")
    return code
