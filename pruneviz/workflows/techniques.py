"""Other compressions as points on the Trade-offs chart: int8 or low-rank applied to the
original model, to the current pruned plan or to both, measured and put in the tab's
experiment log."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pruneviz.core.plan import Plan
from pruneviz.measure.compression import (
    INT8,
    SVD,
    low_rank,
    measure_model,
    quantize_dynamic_int8,
    technique_name,
)
from pruneviz.measure.meter import latency_batch
from pruneviz.workflows.experiments import ORIGINAL, Experiment, ExperimentLog
from pruneviz.workflows.workbench import Workbench

# -- points for the Trade-offs chart -------------------------------------------------------------
ORIGINAL_MODEL = "original model"
CURRENT_PLAN = "current pruned plan"
BOTH = "both"
APPLY_TO: tuple[str, ...] = (ORIGINAL_MODEL, CURRENT_PLAN, BOTH)


@dataclass(frozen=True)
class Recorded:
    """One technique measured and in the experiment log."""

    experiment: Experiment
    notes: tuple[str, ...] = ()  # layers left out, and why
    new: bool = True  # False: the same technique, plan and weights were already measured


def _transform(kind: str, model: nn.Module, rank: float | None, example: Tensor
               ) -> tuple[nn.Module, tuple[str, ...]]:
    if kind == INT8:
        return quantize_dynamic_int8(model), ()
    assert rank is not None
    factored = low_rank(model, rank, example=example)
    factored.check_changed()
    return factored.model, factored.notes


def record_technique(
    bench: Workbench,
    log: ExperimentLog,
    kind: str,
    *,
    apply_to: str = BOTH,
    weights: str = ORIGINAL,
    rank: float | None = None,
    runs: int = 20,
) -> list[Recorded]:
    """Apply technique `kind` (INT8, or SVD at `rank`, a fraction of full rank) to the
    bench's unpruned model, to its model with the current plan, or to both (`apply_to`,
    one of APPLY_TO), measure each result with `measure_model` — latency timed against the
    pristine model, as every pruning experiment is — and record it in `log` as made on
    `weights` (the weights the session prunes). With nothing pruned, the current plan is
    the unpruned model: measured once. Already-recorded points are not measured again.
    The session's plan is the same after as before.
    """
    if apply_to not in APPLY_TO:
        raise ValueError(f"apply_to must be one of {', '.join(APPLY_TO)}, got {apply_to!r}")
    if kind == SVD and rank is None:
        raise ValueError("low-rank factorization needs its rank")
    session = bench.session
    current = session.plan
    plans: list[Plan] = []
    if apply_to in (ORIGINAL_MODEL, BOTH):
        plans.append(session.stamp(Plan()))
    if apply_to in (CURRENT_PLAN, BOTH):
        stamped = session.stamp(current)
        if not (stamped.is_empty and plans):
            plans.append(stamped)
    batch = latency_batch(bench.eval_data, bench.meter.latency_batch_size)
    recorded: list[Recorded] = []
    for plan in plans:
        technique = technique_name(kind, pruned=not plan.is_empty, rank=rank)
        found = log.find(plan, weights, technique)
        if found is not None:
            recorded.append(Recorded(found, new=False))
            continue
        with bench.applied(plan):
            model, notes = _transform(kind, session.model, rank, batch)
        measured = measure_model(model, bench.eval_data, technique=technique,
                                 reference=bench.pristine, runs=runs,
                                 latency_batch_size=bench.meter.latency_batch_size,
                                 notes=notes, name=bench.name, plan=plan.to_dict())
        recorded.append(Recorded(log.record_measurement(measured, plan, weights=weights),
                                 notes))
    return recorded


__all__ = ["APPLY_TO", "BOTH", "CURRENT_PLAN", "ORIGINAL_MODEL", "Recorded", "record_technique"]
