"""The accuracy floor: the plan that prunes the most while its measured metric stays at or
above a floor (at or below it for lower-is-better metrics such as MSE).

A method's plans are one family with one knob in [0, 1] (`allocation.method_family`, the
scale `plan_for_budget` turns); the search walks that knob and *measures* every plan it
tries. Metric against knob is not monotone (pruning a little can help, noise moves it
either way), so the search does not bisect from the start:

1. a coarse scan measures the unpruned plan and `scan` evenly spaced knobs up to 1 (the
   cap), all of them, so a dip followed by a recovery is seen;
2. the best plan that passed (by the objective: most sparsity, fewest MACs or smallest
   sparse file) and the next scanned knob above it that failed bracket the edge;
   `refine` bisection steps between them narrow it to (1 / scan) / 2^refine of the
   knob's range.

So a search measures at most 1 + scan + refine plans (the meter caches plans measured
before). What is returned is the best plan that passed among all measured, the whole
explored curve (for a figure), and the chosen plan's margin to the floor beside the
metric's standard error: a margin smaller than the ~95% interval's half-width is said
to be within noise.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.plan import Plan
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.i18n import N_, _
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import Stop
from pruneviz.workflows.allocation import BudgetKind, Method, method_family, method_name
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench

SCAN = 10  # coarse scan: knobs 1/10, 2/10, ..., 1
REFINE = 6  # bisection steps between the last passing and the first failing knob
Z95 = 1.96  # the margin is "within noise" below Z95 standard errors


OBJECTIVE_NAMES = {"sparsity": N_("sparsity"), "macs": N_("macs"), "size": N_("size")}


def _metric_name(name: str) -> str:
    """A metric's name in the current language (accuracy translated, others as named)."""
    return _("accuracy") if name == "accuracy" else name


class Objective(StrEnum):
    """What "prunes the most" means."""

    SPARSITY = "sparsity"  # the most parameters zero
    MACS = "macs"  # the fewest weight MACs per sample
    SIZE = "size"  # the smallest sparse-encoded weights file

    @property
    def kind(self) -> BudgetKind:
        """The budget quantity the objective counts (the sensitivity allocation's units)."""
        return {Objective.SPARSITY: BudgetKind.SPARSITY, Objective.MACS: BudgetKind.MACS,
                Objective.SIZE: BudgetKind.SIZE}[self]

    def quantity(self, point: FloorPoint) -> float:
        """The point's objective quantity (sparsity, MACs fraction or bytes)."""
        return {Objective.SPARSITY: point.sparsity, Objective.MACS: point.macs_fraction,
                Objective.SIZE: float(point.size_bytes)}[self]

    def better(self, a: FloorPoint, b: FloorPoint) -> bool:
        """Whether `a` prunes more than `b` by this objective."""
        if self is Objective.SPARSITY:
            return self.quantity(a) > self.quantity(b)
        return self.quantity(a) < self.quantity(b)


class Status(StrEnum):
    """How a search ended."""

    FOUND = "found"  # a pruned plan meets the floor, and a plan above it does not
    CAP = "cap"  # every knob up to the cap that was measured meets the floor
    NONE = "none"  # no pruned plan measured meets the floor


@dataclass(frozen=True)
class Floor:
    """A bound on the task metric: at least `value` (higher is better) or at most it."""

    value: float
    higher_is_better: bool = True

    def met(self, metric: float) -> bool:
        if math.isnan(metric):
            return False
        return metric >= self.value if self.higher_is_better else metric <= self.value

    def margin(self, metric: float) -> float:
        """How far `metric` is on the good side of the floor (negative: it misses it)."""
        return metric - self.value if self.higher_is_better else self.value - metric

    def describe(self, metric_name: str) -> str:
        return f"{metric_name} {'>=' if self.higher_is_better else '<='} {self.value:.6g}"


def check_floor(value: float, data: TensorData) -> Floor:
    """The floor `value` for `data`'s metric, refused (PlanError, saying what to give) when it
    is not a number or outside the metric's range: [0, 1] for accuracies, >= 0 for MSE."""
    name = data.metric_name
    if not math.isfinite(value):
        raise PlanError(f"the metric floor must be a number, got {value}; give the {name} "
                        "the pruned model must keep (for example 0.95)")
    if data.proportion and not 0.0 <= value <= 1.0:
        hint = f" (for {value:g}% give {value / 100:g})" if 1.0 < value <= 100.0 else ""
        raise PlanError(f"the metric floor {value:g} is outside {name}'s range [0, 1]: give a "
                        f"fraction{hint}")
    if name == "mse" and value < 0:
        raise PlanError(f"the metric floor {value:g} is below 0, and an mse never is: give the "
                        "largest mse the pruned model may have (for example 0.01)")
    return Floor(float(value), data.higher_is_better)


@dataclass(frozen=True)
class FloorPoint:
    """One plan the search measured."""

    knob: float
    phase: str  # "start" (unpruned), "scan" or "refine"
    metric: float
    stderr: float | None
    passes: bool
    sparsity: float
    macs_fraction: float  # weight MACs per sample, of the unpruned model's
    macs: int
    size_bytes: int  # sparse-encoded weights file
    plan: Plan = field(compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"knob": self.knob, "phase": self.phase, "metric": self.metric,
                "stderr": self.stderr, "passes": self.passes, "sparsity": self.sparsity,
                "macs_fraction": self.macs_fraction, "macs": self.macs,
                "size_bytes": self.size_bytes}


def point_of(knob: float, phase: str, plan: Plan, report: Report, floor: Floor) -> FloorPoint:
    """A measured plan as a point of the curve."""
    ev = report.evaluation
    macs = report.macs_effective / report.macs_dense if report.macs_dense else 0.0
    return FloorPoint(knob, phase, ev.metric, ev.stderr, floor.met(ev.metric), report.sparsity,
                      macs, report.macs_effective, report.sizes.sparse, plan)


def scan_knob(measure: Callable[[float, str], FloorPoint], objective: Objective, *,
              scan: int = SCAN, refine: int = REFINE) -> list[FloorPoint]:
    """Every point a search measures, in the order measured: knob 0, a coarse scan of `scan`
    knobs up to 1, then `refine` bisection steps between the best passing point and the
    first failing scanned knob above it (pure: `measure(knob, phase)` does the measuring)."""
    if scan < 1 or refine < 0:
        raise ValueError(f"scan must be >= 1 and refine >= 0, got {scan} and {refine}")
    points = [measure(0.0, "start")]
    points += [measure(i / scan, "scan") for i in range(1, scan + 1)]
    best = best_passing(points, objective)
    if best is None:  # nothing passed, not even unpruned: nothing to bracket
        return points
    above = [p for p in points if p.knob > best.knob and not p.passes]
    if not above:  # every scanned knob above the best passed: it is knob 1 (the cap)
        return points
    lo, hi = best.knob, min(p.knob for p in above)
    for _step in range(refine):
        mid = (lo + hi) / 2
        point = measure(mid, "refine")
        points.append(point)
        if point.passes:
            lo = mid
        else:
            hi = mid
    return points


def best_passing(points: list[FloorPoint], objective: Objective) -> FloorPoint | None:
    """The point that prunes the most by `objective` among those meeting the floor (the
    smaller knob on a tie)."""
    best: FloorPoint | None = None
    for point in sorted(points, key=lambda p: p.knob):
        if point.passes and (best is None or objective.better(point, best)):
            best = point
    return best


@dataclass
class FloorResult:
    """What an accuracy-floor search found, and everything it measured."""

    floor: Floor
    metric_name: str
    method: Method
    objective: Objective
    granularity: str
    criterion: str
    cap: float
    status: Status
    points: list[FloorPoint]  # in the order measured
    chosen: FloorPoint | None  # the best pruned point meeting the floor (None: no such)
    baseline: FloorPoint
    samples: int  # evaluation samples each metric was measured on
    resolution: float  # of the knob, where the search bracketed the edge
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def evaluations(self) -> int:
        """How many plans were measured (distinct knobs)."""
        return len({p.knob for p in self.points})

    @property
    def met(self) -> bool:
        return self.chosen is not None

    @property
    def curve(self) -> list[FloorPoint]:
        """The explored points by knob (a knob measured twice, once)."""
        return sorted({p.knob: p for p in self.points}.values(), key=lambda p: p.knob)

    @property
    def margin(self) -> float | None:
        """How far the chosen plan's metric is on the good side of the floor."""
        return None if self.chosen is None else self.floor.margin(self.chosen.metric)

    @property
    def within_noise(self) -> bool:
        """The chosen plan meets the floor by less than the ~95% interval's half-width."""
        chosen, margin = self.chosen, self.margin
        if chosen is None or margin is None or chosen.stderr is None:
            return False
        return margin < Z95 * chosen.stderr

    def message(self) -> str:
        """What the search found, in one or two sentences."""
        base = self.baseline
        if self.chosen is None:  # shown by the app: in the tab's language
            name = _metric_name(self.metric_name)
            scanned = [p for p in self.points if p.knob > 0]
            first = min(scanned, key=lambda p: p.knob)
            if not self.floor.met(base.metric):
                why = _("the floor is beyond the unpruned model's {metric_name} "
                        "({metric})").format(metric_name=name, metric=f"{base.metric:.6g}")
            else:
                why = _("even the smallest step measured ({sparsity} sparsity) gives "
                        "{metric}").format(sparsity=f"{first.sparsity:.1%}",
                                           metric=f"{first.metric:.6g}")
            return _("no pruning by {method} keeps {floor}: {why}; lower the floor, or try "
                     "another method, criterion or granularity").format(
                method=method_name(self.method), floor=self.floor.describe(name), why=why)
        floor = self.floor.describe(self.metric_name)
        chosen = self.chosen
        text = (f"{self.method.value} keeps {floor} up to {chosen.sparsity:.1%} sparsity "
                f"({chosen.macs_fraction:.1%} of the MACs, {chosen.size_bytes:,} B sparse): "
                f"{self.metric_name} {chosen.metric:.6g}, {self.margin:.3g} inside the floor")
        if chosen.stderr is not None:
            text += f" (standard error {chosen.stderr:.3g})"
        text += f"; {self.evaluations} plans measured"
        if self.status is Status.CAP:
            text += (f". Everything up to the cap ({self.cap:.0%} per layer) meets the floor: "
                     "raise the cap to prune more")
        if self.within_noise:
            text += (f". The margin is less than {Z95:g} standard errors: on other data like "
                     f"this, the {self.metric_name} may miss the floor")
        return text

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "floor": self.floor.value, "higher_is_better": self.floor.higher_is_better,
            "metric_name": self.metric_name, "method": self.method.value,
            "objective": self.objective.value, "granularity": self.granularity,
            "criterion": self.criterion, "cap": self.cap, "status": self.status.value,
            "met": self.met, "chosen": None if chosen is None else chosen.to_dict(),
            "margin": self.margin, "stderr": None if chosen is None else chosen.stderr,
            "within_noise": self.within_noise, "baseline": self.baseline.to_dict(),
            "evaluations": self.evaluations, "samples": self.samples,
            "resolution": self.resolution, "seconds": self.seconds,
            "curve": [p.to_dict() for p in self.curve], "message": self.message(),
            "notes": self.notes,
        }


def plan_for_floor(
    bench: Workbench, floor: float, method: Method | str, *,
    objective: Objective | str = Objective.SPARSITY,
    granularity: Granularity | str = Granularity.UNSTRUCTURED, criterion: str = "l1",
    sensitivity: SensitivityResult | None = None, cap: float = 0.95,
    scan: int = SCAN, refine: int = REFINE,
    progress: Callable[[int, int], None] | None = None, stop: Stop | None = None,
) -> FloorResult:
    """The plan of `method` that prunes the most (by `objective`) while its metric, measured
    on the bench's evaluation data, meets `floor`; the session's plan is put back.

    `progress(done, at_most)` is called after each plan measured; `stop()` returning True
    ends the search early with what was measured (a note says so)."""
    started = time.perf_counter()
    objective = Objective(objective)
    bound = check_floor(floor, bench.eval_data)
    if not 0.0 < cap <= 1.0:
        raise PlanError(f"the per-layer cap {cap} is outside (0, 1]")
    family = method_family(bench, method, objective.kind, granularity=granularity,
                           criterion=criterion, sensitivity=sensitivity, cap=cap)
    session = bench.session
    at_most = 1 + scan + refine
    measured: dict[float, FloorPoint] = {}
    notes = list(family.notes)

    class _Stopped(Exception):
        pass

    def measure(knob: float, phase: str) -> FloorPoint:
        if knob in measured:
            return measured[knob]
        if stop is not None and stop():
            raise _Stopped
        plan = session.stamp(family.plan(knob))
        with bench.applied(plan):
            report = bench.meter.report(gzip=False)
        point = point_of(knob, phase, plan, report, bound)
        measured[knob] = point
        if progress is not None:
            progress(len(measured), at_most)
        return point

    try:
        points = scan_knob(measure, objective, scan=scan, refine=refine)
    except _Stopped:
        points = list(measured.values())
        notes.append(_("stopped after {count} of up to {most} plans: the result is the "
                       "best of those").format(count=len(points), most=at_most))
    if not points:
        raise PlanError("the search was stopped before it measured anything")
    baseline = points[0]
    best = best_passing([p for p in points if p.knob > 0], objective)
    if best is None:
        status = Status.NONE
    elif best.knob >= 1.0:
        status = Status.CAP
    else:
        status = Status.FOUND
    resolution = 1.0 / scan / 2 ** refine
    if bench.eval_full is not None:
        notes.append(_("measured on the live subset of {count} of the {full} evaluation "
                       "samples: on the whole set the metric may differ").format(
            count=f"{len(bench.eval_data):,}", full=f"{len(bench.eval_full):,}"))
    if not bound.met(baseline.metric) and best is not None:
        notes.append(_("the unpruned model's {metric_name} ({metric}) misses the floor; "
                       "pruning happened to improve it").format(
            metric_name=_metric_name(bench.eval_data.metric_name),
            metric=f"{baseline.metric:.6g}"))
    return FloorResult(bound, bench.eval_data.metric_name, family.method, objective,
                       parse_granularity(granularity).value, criterion, cap, status, points, best,
                       baseline, len(bench.eval_data), resolution,
                       time.perf_counter() - started, notes)


__all__ = ["OBJECTIVE_NAMES", "Floor", "FloorPoint", "FloorResult", "Objective", "Status",
           "best_passing",
           "check_floor", "plan_for_floor", "point_of", "scan_knob"]
