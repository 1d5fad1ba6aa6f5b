"""The rules of a fine-tuning job, shared by the CLI's `finetune` verb and the app's
Fine-tune page: one set of defaults, the checks a job must pass before training starts
(each with the one message both print), and the summary and report of a finished run.

The messages name the CLI's options (`--schedule`, `--epochs`, ...): the CLI prints them
as they are, and the app shows the same text, whose options match its controls' labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.i18n import _
from pruneviz.measure.metrics import EvalResult, count_params
from pruneviz.workflows.finetune import (
    NO_BATCHNORM,
    FinetuneRecipe,
    FinetuneResult,
    PruneSpec,
    Regularizer,
    split_validation,
    steps_per_epoch,
)
from pruneviz.workflows.schedules import Schedule, ScheduleKind

# -- defaults ------------------------------------------------------------------------------
DEFAULT_RECIPE = FinetuneRecipe()  # epochs, batch size, seed, patience, strength, temperature
LR_MASKED = 1e-4  # masked fine-tuning: the kept weights are trained already, nudge them
LR_SCHEDULE = 1e-3  # a schedule prunes while training: the rate the samples were trained at
DISTILL_WEIGHT = 0.5  # distillation's share of the loss when none is given
ROUNDS = 3  # an iterative schedule's prune-retrain rounds when none are given
EVENTS = 10  # without a frequency: about this many pruning events from begin to end
POWER = 3.0  # a polynomial schedule's exponent when none is given


def default_lr(*, scheduled: bool) -> float:
    """The learning rate when none is given: smaller when the pruning comes first."""
    return LR_SCHEDULE if scheduled else LR_MASKED


def default_schedule(kind: ScheduleKind, final: float, steps: int, *,
                     initial: float | None = None, begin_step: int | None = None,
                     end_step: int | None = None, frequency: int | None = None,
                     power: float | None = None, rounds: int | None = None) -> Schedule:
    """A schedule of `kind` ending at `final`, its unset parts filled in from the `steps` of
    training: it begins at step 0 and, but for one-shot, ends halfway from its begin step
    to the end of training (leaving the second half to recover), with about EVENTS
    pruning events."""
    begin = 0 if begin_step is None else begin_step
    end = 0
    if kind is not ScheduleKind.ONESHOT:
        end = begin + max(1, (steps - begin) // 2) if end_step is None else end_step
    every = max(1, -(-(end - begin) // EVENTS)) if frequency is None else frequency
    return Schedule(
        kind, final=final, initial=0.0 if initial is None else initial,
        begin_step=begin, end_step=end, frequency=every,
        power=POWER if power is None else power,
        rounds=(ROUNDS if kind is ScheduleKind.ITERATIVE else 1) if rounds is None else rounds)


def epoch_steps(data: TensorData, recipe: FinetuneRecipe) -> int:
    """Optimiser steps in one epoch of `recipe` on `data` (its validation split held out)."""
    train, _held_out = split_validation(data, recipe.val_fraction, recipe.seed)
    return steps_per_epoch(len(train), recipe.batch_size)


# -- the job's rules -----------------------------------------------------------------------
def validate_train_data(name: str, data: TensorData | None) -> TensorData:
    """The training data to fine-tune on; refuses a model without any."""
    if data is None:
        raise PrunevizError(f"{name} has no training data to fine-tune on")
    return data


def validate_schedule_fits(schedule: Schedule, recipe: FinetuneRecipe, steps: int) -> None:
    """Refuse a schedule whose pruning does not end within the `steps` of training, or
    that prunes at step 0 while a regulariser should act before its first event."""
    planned = schedule.events(max(schedule.begin_step, schedule.end_step) + 1)
    kind = schedule.kind.value
    if schedule.events(steps) != planned:
        limit = f"--max-steps {recipe.max_steps}" if recipe.max_steps and \
            recipe.max_steps == steps else f"--epochs {recipe.epochs}"
        raise PrunevizError(
            f"--schedule {kind} prunes until step {planned[-1][0]}, but the training "
            f"runs {steps} steps ({limit}, batch {recipe.batch_size}): raise the number of "
            "steps or end the schedule earlier")
    if recipe.regularizer is not None and planned[0][0] == 0:
        raise PrunevizError(f"--regularizer acts before the first pruning event, and --schedule "
                            f"{kind} prunes at step 0: set --begin-step above 0")


def validate_regularizer_fits(recipe: FinetuneRecipe, model: nn.Module) -> None:
    """Refuse L1 on BatchNorm scales for a model without BatchNorm."""
    if recipe.regularizer is Regularizer.BN_L1 and not has_batchnorm(model):
        raise PlanError(NO_BATCHNORM)


def has_batchnorm(model: nn.Module) -> bool:
    """Whether `model` has a BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def validate_plan_prunes(plan: Plan | None, what: str) -> Plan:
    """The plan to hold fixed while fine-tuning: it must prune something (weights,
    structures or whole blocks: removed blocks stay the identity while training)."""
    if plan is None or plan.is_empty:
        raise PlanError(f"{what} prunes nothing: there is nothing to fine-tune")
    return plan


def unprunable_error(name: str, granularity: str, criterion: str,
                     skipped: dict[str, str]) -> PrunevizError:
    """No layer of `name` can be pruned this way: the first layer's reason."""
    return PrunevizError(
        f"no layer of {name} can be pruned with --granularity {granularity} "
        f"--criterion {criterion}: {next(iter(skipped.values()))}")


def validate_prunable(session: PruningSession, spec: PruneSpec,
                      sparsity: float) -> dict[str, str]:
    """The layers `spec` cannot prune (and why); refuses when it can prune none. A global
    ranking is checked when its plan is applied."""
    if spec.scope != "local":
        return {}
    probe, skipped = session.uniform_plan(sparsity, spec.granularity, spec.criterion)
    if probe.is_empty and skipped:
        raise unprunable_error(session.name, spec.granularity.value, spec.criterion, skipped)
    return skipped


# -- the run's summary and report ----------------------------------------------------------
@dataclass(frozen=True)
class RunSummary:
    """How a fine-tuning run went, in the report's words."""

    steps: int
    steps_planned: int
    epochs: float
    stopped: str  # "done", "early" or "cancelled"
    stopped_reason: str
    best_step: int
    best_validation_metric: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def stop_reason(result: FinetuneResult, recipe: FinetuneRecipe, steps: int,
                metric_name: str) -> str:
    """Why the training ended, in one phrase (in the app's language when a page asks)."""
    if result.stopped == "early":
        return _("stopped early at step {step} of {steps}: no better validation {metric} for "
                 "{epochs} epochs").format(step=result.steps, steps=steps, metric=metric_name,
                                           epochs=recipe.patience)
    if result.stopped == "cancelled":
        return _("cancelled at step {step} of {steps}").format(step=result.steps, steps=steps)
    if recipe.max_steps is not None and result.steps == recipe.max_steps:
        return _("ran to --max-steps {max_steps}").format(max_steps=recipe.max_steps)
    return _("ran all {steps} steps ({epochs} epochs)").format(steps=result.steps,
                                                               epochs=recipe.epochs)


def summarize_run(result: FinetuneResult, recipe: FinetuneRecipe, steps: int, per_epoch: int,
                  metric_name: str) -> RunSummary:
    """The run's summary: `steps` planned, `per_epoch` of them an epoch."""
    return RunSummary(
        steps=result.steps, steps_planned=steps, epochs=result.steps / per_epoch,
        stopped=result.stopped, stopped_reason=stop_reason(result, recipe, steps, metric_name),
        best_step=result.best_step, best_validation_metric=result.best_metric)


def describe_pruning(*, plan_file: str | None, sparsity: float | None,
                     schedule: Schedule | None, spec: PruneSpec) -> str:
    """What was pruned and when, in one phrase."""
    how = f"{spec.granularity.value}, criterion {spec.criterion}, " + (
        "one global ranking" if spec.scope == "global" else "the same amount per layer")
    blocks = f"{', '.join(spec.blocks)} removed" if spec.blocks else ""
    if plan_file is not None:
        return f"plan {plan_file}, applied once, then fine-tuned"
    if schedule is None:
        amount = (f"{sparsity:.1%} ({how})" if sparsity is not None else "") + (
            " and " if sparsity is not None and blocks else "") + blocks
        return f"{amount} once, then fine-tuned"
    if blocks:
        how += f"; {blocks} from the first step"
    events = schedule.events(max(schedule.begin_step, schedule.end_step) + 1)
    (first, low), (last, high) = events[0], events[-1]
    span = (f"to {high:.1%} at step {first}" if len(events) == 1 else
            f"{len(events)} events from {low:.1%} at step {first} to {high:.1%} at step {last}")
    return f"schedule {schedule.kind.value} while training: {span} ({how})"


def pruning_record(*, plan_file: str | None, sparsity: float | None,
                   schedule: Schedule | None, spec: PruneSpec, steps: int) -> dict[str, Any]:
    """The report's "pruning": the plan file, or the amount or schedule and how."""
    pruning: dict[str, Any] = {"source": "plan" if plan_file is not None else
                               "schedule" if schedule is not None else
                               "blocks" if sparsity is None else "sparsity"}
    if plan_file is not None:
        pruning["file"] = plan_file
        return pruning
    if spec.blocks:
        pruning["blocks"] = list(spec.blocks)
    if schedule is None:
        pruning["sparsity"] = sparsity
    else:
        pruning["schedule"] = schedule.to_dict()
        pruning["events"] = [list(e) for e in schedule.events(steps)]
    pruning.update(granularity=spec.granularity.value, criterion=spec.criterion,
                   scope=spec.scope, max_layer_sparsity=spec.max_layer_sparsity)
    return pruning


def recipe_record(recipe: FinetuneRecipe) -> dict[str, Any]:
    """The report's "recipe": every training setting."""
    out = dict(recipe.__dict__)
    out["regularizer"] = None if recipe.regularizer is None else recipe.regularizer.value
    return out


def eval_record(ev: EvalResult) -> dict[str, Any]:
    return {"metric": ev.metric, "loss": ev.loss, "samples": ev.samples}


def layer_records(session: PruningSession) -> list[dict[str, Any]]:
    """Each prunable layer's weight count, non-zeros and sparsity, in the model now (a layer
    inside a removed block: none left, `removed`)."""
    live = {k: v.detach() for k, v in session.model.state_dict().items()}
    whole = session.state_dict()
    layers = []
    for layer in session.layers:
        weight = live.get(layer.weight)
        if weight is None:  # its block is the identity now
            layers.append({"name": layer.name, "weight": layer.weight,
                           "params": whole[layer.weight].numel(), "nonzero": 0,
                           "sparsity": 1.0, "removed": True})
            continue
        nonzero = int(torch.count_nonzero(weight))
        layers.append({"name": layer.name, "weight": layer.weight, "params": weight.numel(),
                       "nonzero": nonzero, "sparsity": 1.0 - nonzero / weight.numel()})
    return layers


@dataclass(frozen=True)
class Stages:
    """The test metric at the run's three stages, and what "after pruning" measured."""

    before_pruning: EvalResult
    after_pruning: EvalResult
    after_retraining: EvalResult
    after_pruning_is: str


def finetune_report(session: PruningSession, result: FinetuneResult, stages: Stages, *,
                    pruning: dict[str, Any], recipe: FinetuneRecipe, summary: RunSummary,
                    processes: int, seconds: float, skipped: dict[str, str],
                    notes: list[str]) -> dict[str, Any]:
    """The report of a finished run, the session's model holding the weights kept."""
    counts = count_params(session.model)
    return {
        "model": session.name,
        "metric_name": stages.before_pruning.metric_name,
        "before_pruning": eval_record(stages.before_pruning),
        "after_pruning": eval_record(stages.after_pruning),
        "after_retraining": eval_record(stages.after_retraining),
        "after_pruning_is": stages.after_pruning_is,
        "params_total": counts.total,
        "params_nonzero": counts.nonzero,
        "sparsity": counts.sparsity,
        "layers": layer_records(session),
        "pruning": pruning,
        "recipe": recipe_record(recipe),
        "processes": processes,
        "steps": summary.steps,
        "steps_planned": summary.steps_planned,
        "epochs": summary.epochs,
        "stopped": summary.stopped,
        "stopped_reason": summary.stopped_reason,
        "best_step": summary.best_step,
        "best_validation_metric": summary.best_validation_metric,
        "train_seconds": seconds,
        "skipped_layers": skipped,
        "notes": notes + result.notes,
        "plan": session.stamp(result.final_plan).to_dict(),
    }
