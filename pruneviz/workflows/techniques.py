"""Other compressions as points on the Trade-offs chart: dynamic or static int8, int4
weight-only or low-rank applied to the original model, to the current pruned plan or to
both, measured and put in the tab's experiment log."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from pruneviz.core.plan import Plan
from pruneviz.measure.compression import (
    INT4,
    INT8,
    INT8_STATIC,
    KINDS,
    STORAGE_ONLY,
    SVD,
    low_rank,
    measure_model,
    quantize_dynamic_int8,
    quantize_int4,
    quantize_static_int8,
    technique_name,
)
from pruneviz.measure.meter import latency_batch
from pruneviz.measure.quantize import DEFAULT_GROUP_SIZE
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


@dataclass(frozen=True)
class Transformed:
    """A model another technique made, what it left out, and its own file if it has one."""

    model: nn.Module
    notes: tuple[str, ...] = ()
    saved: bytes | None = None  # its real weight file (static int8, int4), checked to reload


def transform(kind: str, model: nn.Module, *, example: Tensor, calibration: Tensor,
              rank: float | None = None, group_size: int = DEFAULT_GROUP_SIZE
              ) -> Transformed:
    """Technique `kind` (one of compression.KINDS) applied to a copy of `model`: `example`
    is a batch of real inputs (which Linears run; the reload check), `calibration` the
    inputs static int8 observes, `rank` SVD's fraction of full rank, `group_size` int4's."""
    if kind == INT8:
        return Transformed(quantize_dynamic_int8(model))
    if kind == INT8_STATIC:
        quantized, saved = quantize_static_int8(model, calibration, example)
        return Transformed(quantized.model, quantized.notes, saved)
    if kind == INT4:
        quantized, saved = quantize_int4(model, example, group_size)
        return Transformed(quantized.model, quantized.notes, saved)
    if kind != SVD:
        raise ValueError(f"unknown technique {kind!r}; allowed: {', '.join(KINDS)}")
    if rank is None:
        raise ValueError("low-rank factorization needs its rank")
    factored = low_rank(model, rank, example=example)
    factored.check_changed()
    return Transformed(factored.model, factored.notes)


def record_technique(
    bench: Workbench,
    log: ExperimentLog,
    kind: str,
    *,
    apply_to: str = BOTH,
    weights: str = ORIGINAL,
    rank: float | None = None,
    runs: int = 20,
    group_size: int = DEFAULT_GROUP_SIZE,
) -> list[Recorded]:
    """Apply technique `kind` (INT8, INT8_STATIC — calibrated on the session's calibration
    data —, INT4 in groups of at most `group_size`, or SVD at `rank`, a fraction of full
    rank) to the bench's unpruned model, to its model with the current plan, or to both
    (`apply_to`, one of APPLY_TO), measure each result with `measure_model` — latency
    timed against the pristine model, as every pruning experiment is — and record it in
    `log` as made on `weights` (the weights the session prunes). With nothing pruned, the
    current plan is the unpruned model: measured once. Already-recorded points are not
    measured again. Static int8 and int4 are measured on their real files' bytes; int4
    has no kernel to time, so its latency is not measured (its experiment says "storage
    only"). The session's plan is the same after as before.
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
    calibration = (session.calibration if session.calibration is not None
                   else bench.eval_data).x
    recorded: list[Recorded] = []
    for plan in plans:
        technique = technique_name(kind, pruned=not plan.is_empty, rank=rank,
                                   group_size=group_size)
        found = log.find(plan, weights, technique)
        if found is not None:
            recorded.append(Recorded(found, new=False))
            continue
        with bench.applied(plan):
            made = transform(kind, session.model, example=batch, calibration=calibration,
                             rank=rank, group_size=group_size)
        measured = measure_model(made.model, bench.eval_data, technique=technique,
                                 reference=bench.pristine, runs=runs,
                                 latency=kind not in STORAGE_ONLY,
                                 latency_batch_size=bench.meter.latency_batch_size,
                                 notes=made.notes, name=bench.name, plan=plan.to_dict(),
                                 saved=made.saved)
        recorded.append(Recorded(log.record_measurement(measured, plan, weights=weights),
                                 made.notes))
    return recorded


__all__ = ["APPLY_TO", "BOTH", "CURRENT_PLAN", "ORIGINAL_MODEL", "Recorded", "Transformed",
           "record_technique", "transform"]
