"""Retrain after pruning: masked fine-tuning, pruning schedules, sparsity-inducing
regularisation and distillation, in one deterministic loop.

The loop trains a `PruningSession`'s model in place. Pruned entries stay exactly zero:
their gradients are zeroed before every optimiser step and the weights are masked again
after it (Adam's momentum would otherwise move them). A schedule prunes during training:
at each of its events the session takes the current weights as its originals
(`PruningSession.rebase`), applies the plan for the event's sparsity, and the new masks
are ANDed with the old ones, so sparsity only rises. A regulariser (L1 on weights, group
lasso on filters, L1 on BatchNorm scales) is added to the loss before the first pruning
event — it pushes the weights the pruning will remove towards zero. Distillation adds the
KL divergence to the unpruned teacher's softened outputs (the MSE to them, for
reconstruction models).

Early stopping watches a validation split carved from the training data (the test split
stays untouched for the final report), and only after the last pruning event: before it
the model is not at its final sparsity. The best weights so far are kept, also on cancel.

Under `torchrun` (torch.distributed initialised) each process takes its share of every
batch and DistributedDataParallel averages the gradients: the same steps as one process
on the whole batch.
"""

from __future__ import annotations

import copy
import gc
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.i18n import N_
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.workflows.schedules import Schedule, ScheduleKind

NO_BATCHNORM = ("L1 on BatchNorm scales needs BatchNorm layers, and this model has none; "
                "choose l1 or group_lasso")


class Regularizer(StrEnum):
    """Sparsity-inducing penalties added to the loss before pruning."""

    L1 = "l1"  # sum |w| over the prunable layers' weights
    GROUP_LASSO = "group_lasso"  # sum of the L2 norms of the output structures (filters)
    BN_L1 = "bn_l1"  # sum |gamma| over BatchNorm scales (Network Slimming)


@dataclass(frozen=True)
class FinetuneRecipe:
    """How to retrain: fewer steps and a smaller learning rate than training."""

    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 64
    seed: int = 0
    patience: int = 3  # evaluations without a better validation metric before stopping
    val_fraction: float = 0.15  # of the training data, held out for early stopping
    regularizer: Regularizer | None = None
    strength: float = 1e-4  # the regulariser's weight in the loss
    distill: float = 0.0  # weight of the distillation term (0: none, 1: teacher only)
    temperature: float = 4.0
    max_steps: int | None = None

    def __post_init__(self) -> None:
        if self.regularizer is not None:
            object.__setattr__(self, "regularizer", Regularizer(self.regularizer))
        checks = [
            (self.epochs >= 1, f"epochs must be at least 1, got {self.epochs}"),
            (math.isfinite(self.lr) and self.lr > 0, f"lr must be positive, got {self.lr}"),
            (self.batch_size >= 1, f"batch size must be at least 1, got {self.batch_size}"),
            (self.patience >= 1, f"patience must be at least 1, got {self.patience}"),
            (0.0 < self.val_fraction < 1.0,
             f"validation fraction must be in (0, 1), got {self.val_fraction}"),
            (math.isfinite(self.strength) and self.strength >= 0,
             f"regulariser strength must be >= 0, got {self.strength}"),
            (0.0 <= self.distill <= 1.0, f"distill weight must be in [0, 1], got {self.distill}"),
            (math.isfinite(self.temperature) and self.temperature > 0,
             f"temperature must be positive, got {self.temperature}"),
            (self.max_steps is None or self.max_steps >= 1,
             f"max steps must be at least 1, got {self.max_steps}"),
        ]
        for ok, message in checks:
            if not ok:
                raise PlanError(message)


@dataclass(frozen=True)
class PruneSpec:
    """How a schedule's events prune: the same amount per layer, or one global ranking."""

    granularity: Granularity = Granularity.UNSTRUCTURED
    criterion: str = "l1"
    scope: str = "local"  # "local" (uniform) or "global"
    max_layer_sparsity: float | None = None  # global only
    blocks: tuple[str, ...] = ()  # removed (the identity) from the first step on

    def __post_init__(self) -> None:
        object.__setattr__(self, "granularity", parse_granularity(self.granularity))
        object.__setattr__(self, "blocks", tuple(sorted(set(self.blocks))))
        if self.scope not in ("local", "global"):
            raise PlanError(f"scope must be local or global, got {self.scope!r}")

    def plan(self, session: PruningSession, sparsity: float) -> Plan:
        if self.scope == "global":
            plan = session.global_plan(sparsity, self.granularity, self.criterion,
                                       self.max_layer_sparsity)[0]
        else:
            plan = session.uniform_plan(sparsity, self.granularity, self.criterion)[0]
        return plan.with_blocks(self.blocks) if self.blocks else plan


@dataclass(frozen=True)
class Record:
    """One point of the training curve."""

    step: int
    epoch: float
    loss: float  # mean training loss since the previous record
    metric: float | None  # on the validation split (None between evaluations)
    sparsity: float  # of all parameters
    event: str | None = None  # "pruned to 62%", "stopped early", ...

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class FinetuneResult:
    """The best weights, and how training went."""

    state: dict[str, Tensor]  # best weights (pruned entries zero)
    masks: dict[str, Tensor]  # keep-masks held during training
    history: list[Record]
    best_step: int
    best_metric: float | None
    steps: int
    stopped: str  # "done", "early" or "cancelled"
    final_plan: Plan  # the plan of the last pruning event (on the weights it saw)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"best_step": self.best_step, "best_metric": self.best_metric,
                "steps": self.steps, "stopped": self.stopped, "notes": self.notes,
                "history": [r.to_dict() for r in self.history]}


def split_validation(data: TensorData, fraction: float, seed: int) -> tuple[TensorData,
                                                                           TensorData]:
    """(train, validation): a seeded random `fraction` of `data` held out."""
    n = len(data)
    held = max(1, round(n * fraction))
    if n - held < 1:
        raise PlanError(f"{data.name} has {n} samples: too few to hold out a validation split")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919))
    val, train = order[:held].sort().values, order[held:].sort().values
    return (data.take(train, f"{data.name} (train)"),
            data.take(val, f"{data.name} (validation)"))


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return -(-samples // batch_size)


def total_steps(data: TensorData, recipe: FinetuneRecipe) -> int:
    """Optimiser steps the recipe runs on `data` (before early stopping)."""
    train, _ = split_validation(data, recipe.val_fraction, recipe.seed)
    steps = recipe.epochs * steps_per_epoch(len(train), recipe.batch_size)
    return min(steps, recipe.max_steps) if recipe.max_steps else steps


def _regularization(model: nn.Module, session: PruningSession, kind: Regularizer) -> Tensor:
    params = dict(model.named_parameters())
    terms: list[Tensor] = []
    if kind is Regularizer.BN_L1:
        terms = [m.weight.abs().sum() for m in model.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.weight is not None]
        if not terms:
            raise PlanError(NO_BATCHNORM)
    for layer in session.layers if kind is not Regularizer.BN_L1 else []:
        if layer.weight not in params:  # inside a removed block: not trained
            continue
        w = params[layer.weight]
        if kind is Regularizer.L1:
            terms.append(w.abs().sum())
        else:
            rows = w.movedim(layer.out_dim, 0).reshape(w.shape[layer.out_dim], -1)
            terms.append(rows.norm(dim=1).sum())
    return torch.stack(terms).sum()


def _distill_loss(task: Task, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
    if task is Task.CLASSIFICATION:
        t = temperature
        return F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1),
                        reduction="batchmean", log_target=True) * t * t
    return F.mse_loss(student, teacher)


def finetune(
    session: PruningSession,
    data: TensorData,
    recipe: FinetuneRecipe,
    *,
    schedule: Schedule | None = None,
    prune: PruneSpec | None = None,
    teacher: nn.Module | None = None,
    progress: Callable[[Record], None] | None = None,
    cancel: threading.Event | None = None,
    record_every: int = 10,
) -> FinetuneResult:
    """Train `session.model` on `data` under `recipe` (see the module docstring).

    Without a schedule, the session's current plan is held fixed (masked fine-tuning).
    With one, `prune` says how its events prune. Blocks the plan (or `prune.blocks`)
    removes are the identity throughout: the model trains without them, and the result's
    `state` holds their original weights (a state dict of the whole architecture). The
    session ends holding the best weights as its originals, with the last event's plan
    applied.
    """
    if schedule is not None and prune is None:
        prune = PruneSpec()
    if recipe.distill > 0 and teacher is None:
        raise PlanError("distillation needs a teacher model (the unpruned one)")
    if teacher is session.model:
        raise PlanError("the distillation teacher is the model being trained: give the "
                        "unpruned model (every block in place, original weights)")
    train_data, val_data = split_validation(data, recipe.val_fraction, recipe.seed)
    per_epoch = steps_per_epoch(len(train_data), recipe.batch_size)
    steps = total_steps(data, recipe)
    events = dict(schedule.events(steps)) if schedule is not None else {}
    last_event = max(events, default=-1)
    regularize_until = min(events, default=steps)  # the regulariser prepares the pruning
    higher = data.higher_is_better

    if prune is not None and prune.blocks and session.plan.blocks != prune.blocks:
        # before the optimiser and DDP see the model: the blocks go from the first step
        session.apply(session.stamp(Plan(blocks=prune.blocks)))
    torch.manual_seed(recipe.seed)
    shuffle = torch.Generator().manual_seed(recipe.seed)
    model = session.model
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    rank = torch.distributed.get_rank() if distributed else 0
    world = torch.distributed.get_world_size() if distributed else 1
    runner: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    params = dict(model.named_parameters())
    masks = session.keep_masks()
    plan = session.plan
    if teacher is not None:
        teacher = copy.deepcopy(teacher).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    history: list[Record] = []
    best: tuple[tuple[float, float], float, int, dict[str, Tensor]] | None = None
    stale = 0
    stopped = "done"
    notes: list[str] = []
    loss_sum, loss_count = 0.0, 0
    step = 0

    def sparsity() -> float:
        return count_params(model).sparsity

    def snapshot() -> dict[str, Tensor]:  # with the removed blocks' original weights
        return {k: v.clone() for k, v in session.state_dict().items()}

    def log(metric: float | None, event: str | None = None) -> None:
        nonlocal loss_sum, loss_count
        record = Record(step, step / per_epoch, loss_sum / loss_count if loss_count else
                        float("nan"), metric, sparsity(), event)
        loss_sum, loss_count = 0.0, 0
        history.append(record)
        if progress is not None and rank == 0:
            progress(record)

    def prune_to(target: float) -> None:
        nonlocal plan, masks
        assert prune is not None
        was_training = model.training
        if distributed:  # the same running statistics everywhere, for data-driven criteria
            _sync_buffers(model)
        session.rebase(snapshot())
        plan = prune.plan(session, target)
        session.apply(plan)
        merged = dict(masks)  # sparsity only rises: what was pruned stays pruned
        for name, keep in session.keep_masks().items():
            merged[name] = keep & merged[name] if name in merged else keep
        masks = merged
        _apply_masks(params, masks)
        model.train(was_training)

    model.train()
    try:
        for _ in range(recipe.epochs):
            order = torch.randperm(len(train_data), generator=shuffle)
            for start in range(0, len(train_data), recipe.batch_size):
                if step >= steps:
                    break
                if cancel is not None and cancel.is_set():
                    stopped = "cancelled"
                    raise _Stop
                if step in events:
                    prune_to(events[step])
                    log(None, f"pruned to {events[step]:.0%}")
                index = order[start:start + recipe.batch_size]
                share = 1.0
                if distributed:  # this process's share of the batch
                    whole = len(index)
                    index = index.tensor_split(world)[rank]
                    # DDP averages the processes' gradients: weighting each mean loss by
                    # its share makes that the whole batch's mean, also for unequal shares
                    share = len(index) * world / whole
                x, y = train_data.x[index], train_data.y[index]
                optimizer.zero_grad(set_to_none=True)
                out = runner(x)
                if len(index):
                    loss = data.task.loss(out, y)
                    if teacher is not None and recipe.distill > 0:
                        with torch.no_grad():
                            soft = teacher(x)
                        loss = (1 - recipe.distill) * loss + recipe.distill * _distill_loss(
                            data.task, out, soft, recipe.temperature)
                    loss = loss * share if distributed else loss
                else:  # an empty share (a last batch smaller than the world): no gradient
                    loss = out.sum() * 0.0
                if recipe.regularizer is not None and step < regularize_until:
                    loss = loss + recipe.strength * _regularization(model, session,
                                                                    recipe.regularizer)
                torch.autograd.backward(loss)
                if distributed:  # the whole batch's loss, the same in every process
                    loss = loss.detach().clone()
                    torch.distributed.all_reduce(loss)
                    loss /= world
                with torch.no_grad():
                    for name, keep in masks.items():
                        grad = params[name].grad
                        if grad is not None:
                            grad.masked_fill_(~keep, 0.0)
                optimizer.step()
                _apply_masks(params, masks)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise PlanError(f"training diverged at step {step} (loss {value}); try a "
                                    f"smaller learning rate than {recipe.lr}")
                loss_sum += value
                loss_count += 1
                step += 1
                if step % record_every == 0 and step % per_epoch:
                    log(None)
            # end of an epoch: validate; early stopping counts only at the final sparsity
            if distributed:  # every process validates the same model: the same decisions
                _sync_buffers(model)
            validation = evaluate(model, val_data)
            metric = validation.metric
            model.train()
            # better metric, or the same metric with a lower loss (accuracy on a few
            # hundred samples ties often; the loss still says which weights are better)
            score = (metric if higher else -metric, -validation.loss)
            if step > last_event:
                if best is None or score > best[0]:
                    best = (score, metric, step, snapshot())
                    stale = 0
                else:
                    stale += 1
            if stale >= recipe.patience:
                stopped = "early"
                log(metric, f"stopped early: no better for {stale} evaluations")
                break
            log(metric)
            if step >= steps:
                break
    except _Stop:
        pass
    finally:
        model.eval()
        if distributed:
            # DDP's reducer must go before the process group does: left to the garbage
            # collector it may outlive destroy_process_group, and its C++ threads then
            # abort the process at exit ("terminate called without an active exception").
            del runner
            gc.collect()
    if best is None:
        notes.append(N_("stopped before the schedule's last pruning event: the weights are "
                        "the latest, not the best at the final sparsity"))
        best = ((0.0, 0.0), float("nan"), step, snapshot())
    _, metric, best_step, state = best
    # The same structures stay pruned: re-deciding on the trained weights' scores could
    # pick others with a data-driven criterion (taylor, apoz).
    session.rebase(state, keep_decisions=True)
    return FinetuneResult(state, masks, history, best_step,
                          None if math.isnan(metric) else metric, step, stopped, plan, notes)


class _Stop(Exception):
    """Cancelled between two steps."""


def _sync_buffers(model: nn.Module) -> None:
    """The first process's buffers (BatchNorm running statistics) in every process: each
    updated its own from its share of the batch (DDP broadcasts them at the next forward)."""
    with torch.no_grad():
        for buffer in model.buffers():
            torch.distributed.broadcast(buffer, src=0)


def _apply_masks(params: dict[str, nn.Parameter], masks: dict[str, Tensor]) -> None:
    """Pruned entries to +0.0 (a multiply would leave -0.0 for negative weights)."""
    with torch.no_grad():
        for name, keep in masks.items():
            params[name].masked_fill_(~keep, 0.0)


@dataclass(frozen=True)
class Reference:
    """A recipe with a published target, reproduced on a sample (benchmarks/finetune.py)."""

    model: str  # sample name
    target: str
    tolerance: float  # metric drop allowed, in metric units
    recipe: FinetuneRecipe
    schedule: Schedule
    prune: PruneSpec
    distill_from_unpruned: bool = False


REFERENCES: dict[str, Reference] = {
    # TF Model Optimization's reference: polynomial decay 50% -> 90% over 1,000 steps.
    "cnn_poly": Reference(
        "digits_cnn", "90% +- 0.5% of the weights, within 1 point", 0.01,
        FinetuneRecipe(epochs=100, lr=2e-3, patience=15, distill=0.5),
        Schedule(ScheduleKind.POLY, final=0.9, initial=0.5, begin_step=0, end_step=1000,
                 frequency=100),
        PruneSpec(Granularity.UNSTRUCTURED, "l1", scope="global"), True),
    # Han et al. 2015, LeNet-300-100: 92% pruned, 1.64% -> 1.59% error on MNIST.
    "mlp_92": Reference(
        "digits_mlp", "92% of the weights, within 0.5 point", 0.005,
        FinetuneRecipe(epochs=80, lr=1e-3, patience=10),
        Schedule(ScheduleKind.POLY, final=0.92, initial=0.3, begin_step=0, end_step=1000,
                 frequency=50),
        PruneSpec(Granularity.UNSTRUCTURED, "l1", scope="global")),
    # Liu et al. 2017, Network Slimming: L1 on BN scales, prune channels by scale, retrain.
    "resnet_slimming": Reference(
        "digits_resnet", "50% of the channels by BN scale, within 1 point, faster", 0.01,
        FinetuneRecipe(epochs=25, lr=1e-3, patience=6, regularizer=Regularizer.BN_L1,
                       strength=1e-3),
        Schedule(ScheduleKind.ONESHOT, final=0.5, begin_step=200),
        PruneSpec(Granularity.FILTER, "bn_scale", scope="global")),
}


__all__ = ["REFERENCES", "FinetuneRecipe", "FinetuneResult", "PruneSpec", "Record", "Reference",
           "Regularizer", "finetune", "split_validation", "total_steps"]
