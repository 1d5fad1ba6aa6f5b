"""Per-layer amounts that meet a budget: uniform, global ranking, sensitivity-guided, or
outlier-weighted (OWL).

A budget is a target for the whole model — overall sparsity, weight MACs, the sparse
weights file's size, or measured latency. Each method is a family of plans with one knob
(uniform: the amount every layer gets; global: the amount of the one ranking;
sensitivity: how much the allocation removes), and `fit` turns the knob by bisection
until the *measured* model meets the budget. What is reported is always measured.

The sensitivity-guided allocation reads the curves of a `SensitivityResult`: for each
item, what pruning it alone costs in metric and what it removes. It takes the cheapest
removal first over the lower convex hull of every curve (the greedy solution of the
Lagrangian relaxation: at the optimum every item prunes up to the same marginal cost),
interpolating the last step so the predicted removal is met exactly. Its predicted metric
— the unpruned metric minus the sum of the items' drops — is shown beside the measured one.

The outlier-weighted allocation (Yin et al. 2023, "Outlier Weighed Layerwise Sparsity
(OWL)", as llm-compressor ships it) measures each layer's outlier ratio — the share of
its Wanda scores |W|·‖X‖ above M times their mean — and prunes layers with more outliers
less: their sparsities are spread over a range of 2λ around the target (the layer with
the most outliers at the low end), shifted so the model's overall sparsity, counted in
parameters, is the target, and held within [0, cap].
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from torch import Tensor

from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.errors import PlanError
from pruneviz.i18n import N_, _
from pruneviz.measure.forms import measure_forms
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import count_params
from pruneviz.measure.storage import sparse_size
from pruneviz.workflows.sensitivity import Point, SensitivityResult
from pruneviz.workflows.workbench import Workbench

FIT_STEPS = 24  # bisection steps for counted budgets (2^-24 of the knob's range)
LATENCY_FIT_STEPS = 8  # each step measures latency: fewer
LATENCY_RUNS = 10
OWL_M = 5.0  # a score is an outlier above M times its layer's mean score (OWL's default)
OWL_LAMBDA = 0.08  # sparsities spread +-lambda around the target (OWL's default)


class BudgetKind(StrEnum):
    """What a budget limits."""

    SPARSITY = "sparsity"  # fraction of all parameters that are zero: at least
    MACS = "macs"  # weight MACs per sample, as a fraction of the unpruned model's: at most
    SIZE = "size_bytes"  # bytes of the sparse-encoded weights file: at most
    LATENCY = "latency_ms"  # measured latency of the best deployable form: at most


class Method(StrEnum):
    """How the per-layer amounts are chosen."""

    UNIFORM = "uniform"
    GLOBAL = "global"
    SENSITIVITY = "sensitivity"
    OWL = "owl"


METHOD_NAMES = {Method.UNIFORM: N_("uniform"), Method.GLOBAL: N_("global"),
                Method.SENSITIVITY: N_("sensitivity"), Method.OWL: N_("owl")}


def method_name(method: Method | str) -> str:
    """An allocation method as the app shows it, in the current language."""
    return _(METHOD_NAMES[Method(method)])


@dataclass(frozen=True)
class Budget:
    """A target for the whole model (see BudgetKind for the units)."""

    kind: BudgetKind
    value: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", BudgetKind(self.kind))
        v = self.value
        if v != v or v < 0:
            raise PlanError(f"budget {self.kind.value} must be a number >= 0, got {v}")
        if self.kind in (BudgetKind.SPARSITY, BudgetKind.MACS) and v > 1:
            raise PlanError(f"budget {self.kind.value} is a fraction between 0 and 1, got {v}")

    def met(self, measured: float) -> bool:
        if self.kind is BudgetKind.SPARSITY:
            return measured >= self.value
        return measured <= self.value

    def describe(self) -> str:
        return {
            BudgetKind.SPARSITY: _("{value} overall sparsity"),
            BudgetKind.MACS: _("{value} of the MACs"),
            BudgetKind.SIZE: _("a {value} KiB sparse file"),
            BudgetKind.LATENCY: _("{value} ms latency"),
        }[self.kind].format(value={
            BudgetKind.SPARSITY: f"{self.value:.0%}", BudgetKind.MACS: f"{self.value:.0%}",
            BudgetKind.SIZE: f"{self.value / 1024:.1f}", BudgetKind.LATENCY: f"{self.value:.2f}",
        }[self.kind])


def measure(bench: Workbench, kind: BudgetKind) -> float:
    """The budget quantity of the session's current model, measured."""
    session = bench.session
    if kind is BudgetKind.SPARSITY:
        return count_params(session.model).sparsity
    if kind is BudgetKind.MACS:
        dense, effective = bench.meter.macs()
        return effective / dense if dense else 0.0
    if kind is BudgetKind.SIZE:
        return float(sparse_size(session.model.state_dict()))
    return best_latency(bench)


def best_latency(bench: Workbench) -> float:
    """Median latency (ms) of the deployable form of the current plan to ship for speed
    (`Forms.choice`: masked unless another form is measurably faster)."""
    forms = measure_forms(bench.session, bench.meter.latency_input, runs=LATENCY_RUNS)
    latency = forms.choice().latency_ms
    assert latency is not None
    return latency


# -- the sensitivity-guided allocation ---------------------------------------------------
@dataclass(frozen=True)
class _Step:
    item: str
    slope: float  # metric cost per unit removed
    start: Point
    end: Point


@dataclass(frozen=True)
class Allocation:
    """Per-item amounts from the sensitivity curves, and what they predict."""

    levels: dict[str, float]  # item key -> sparsity
    predicted_metric: float
    predicted_removed: float  # in the budget's units (parameters, MACs or bytes)
    plan: Plan


def _amount(point: Point, baseline: Point, kind: BudgetKind) -> float:
    """What a point removes, in units that add up across items."""
    if kind is BudgetKind.SPARSITY:
        return float(baseline.params_nonzero - point.params_nonzero)
    if kind is BudgetKind.SIZE:
        return float(baseline.size_bytes - point.size_bytes)
    return float(baseline.macs - point.macs)  # MACs; latency follows MACs (then measured)


def _damage(result: SensitivityResult, point: Point) -> float:
    """Metric lost (the loss breaks ties between points of equal metric)."""
    return result.drop(point) + 1e-3 * (point.loss - result.baseline.loss)


def _hull_steps(result: SensitivityResult, key: str, kind: BudgetKind, cap: float) -> list[_Step]:
    """The lower convex hull of one item's (removed, damage) curve, as steps."""
    base = result.baseline
    points = [p for p in result.curve(key) if p.level <= cap + 1e-9]
    start = next((p for p in points if p.level == 0.0), None)
    origin = start or Point(key, 0.0, base.metric, base.loss, base.params_nonzero,
                            base.macs, base.size_bytes, 0)
    xy = [(0.0, 0.0, origin)]
    for p in points:
        x = _amount(p, base, kind)
        if x > xy[-1][0]:  # more removed than every lower amount
            xy.append((x, _damage(result, p), p))
    hull: list[tuple[float, float, Point]] = []
    for q in xy:
        while len(hull) >= 2:
            (x1, y1, _), (x2, y2, _) = hull[-2], hull[-1]
            if (y2 - y1) * (q[0] - x1) >= (q[1] - y1) * (x2 - x1):
                hull.pop()  # hull[-1] lies on or above the chord: never worth stopping at
            else:
                break
        hull.append(q)
    return [_Step(key, (b[1] - a[1]) / (b[0] - a[0]), a[2], b[2])
            for a, b in itertools.pairwise(hull)]


def allocate(result: SensitivityResult, kind: BudgetKind, removed: float,
             cap: float = 0.95) -> Allocation:
    """Amounts per item that remove `removed` (in the budget's units) at the least
    predicted metric cost, no item above `cap`."""
    base = result.baseline
    steps = sorted((s for item in result.items
                    for s in _hull_steps(result, item.key, kind, cap)),
                   key=lambda s: s.slope)
    levels = {item.key: 0.0 for item in result.items}
    damage = {item.key: 0.0 for item in result.items}
    drops = {item.key: 0.0 for item in result.items}
    total = 0.0
    for step in steps:
        if total >= removed:
            break
        a, b = _amount(step.start, base, kind), _amount(step.end, base, kind)
        take = min(1.0, (removed - total) / (b - a))
        levels[step.item] = step.start.level + take * (step.end.level - step.start.level)
        d0, d1 = _damage(result, step.start), _damage(result, step.end)
        damage[step.item] = d0 + take * (d1 - d0)
        m0, m1 = result.drop(step.start), result.drop(step.end)
        drops[step.item] = m0 + take * (m1 - m0)
        total += take * (b - a)
    sign = 1.0 if result.higher_is_better else -1.0
    predicted = base.metric - sign * sum(drops.values())
    plan = Plan({key: LayerPlan(result.granularity, result.criterion, sparsity=round(level, 6))
                 for key, level in levels.items() if level > 0})
    return Allocation(levels, predicted, total, plan)


def max_removal(result: SensitivityResult, kind: BudgetKind, cap: float) -> float:
    """The most the allocation can remove with every item at its highest amount <= cap."""
    return sum(
        max((_amount(p, result.baseline, kind) for p in result.curve(item.key)
             if p.level <= cap + 1e-9), default=0.0)
        for item in result.items
    )


# -- the outlier-weighted allocation (OWL) -------------------------------------------------
def outlier_ratio(scores: Tensor, m: float = OWL_M) -> float:
    """The share of `scores` above `m` times their mean (OWL's layer outlier ratio)."""
    if scores.numel() == 0:
        return 0.0
    flat = scores.reshape(-1).double()
    return float((flat > m * flat.mean()).double().mean())


def outlier_ratios(session: PruningSession, m: float = OWL_M) -> dict[str, float]:
    """Each layer's outlier ratio of its Wanda scores (the calibration data's input norms
    times |W|); layers Wanda cannot score (recurrent, attention projections) are left out."""
    ratios = {}
    for name in session.layer_names:
        if session.unsupported(name, Granularity.UNSTRUCTURED, "wanda") is None:
            table = session.scores(name, Granularity.UNSTRUCTURED, "wanda")
            ratios[name] = outlier_ratio(table.scores, m)
    return ratios


def owl_sparsities(
    ratios: Mapping[str, float | None], params: Mapping[str, int], target: float, *,
    lam: float = OWL_LAMBDA, cap: float = 0.95,
) -> dict[str, float]:
    """Per-layer sparsities from outlier `ratios` (None: not measured, placed mid-range):
    the target minus the ratio's position in [-lam, lam] (min to max ratio), plus the one
    shift that makes the parameter-weighted mean the target with every layer in [0, cap]
    (found by bisection: the mean grows with the shift)."""
    names = list(params)
    if not names:
        return {}
    if not 0.0 <= target <= cap:
        raise PlanError(f"the target sparsity {target} is outside [0, cap={cap}]")
    known = [r for r in ratios.values() if r is not None]
    low, high = (min(known), max(known)) if known else (0.0, 0.0)
    spread = {}
    for name in names:
        ratio = ratios.get(name)
        if ratio is None or high == low:
            spread[name] = 0.0
        else:
            spread[name] = lam * (2 * (ratio - low) / (high - low) - 1)
    total = sum(params[n] for n in names)

    def levels(shift: float) -> dict[str, float]:
        return {n: min(cap, max(0.0, target - spread[n] + shift)) for n in names}

    def mean(shift: float) -> float:
        chosen = levels(shift)
        return sum(chosen[n] * params[n] for n in names) / total if total else target

    lo, hi = -1.0 - 2 * lam, 1.0 + 2 * lam
    for _step in range(60):
        mid = (lo + hi) / 2
        if mean(mid) < target:
            lo = mid
        else:
            hi = mid
    return levels(hi)


def _owl_family(session: PruningSession, granularity: Granularity, criterion: str,
                cap: float, ratios: Mapping[str, float]) -> Callable[[float], Plan]:
    """OWL's plans: knob k allocates a target of k * cap, each layer the criterion's."""
    if granularity.n_m is not None:
        raise PlanError(f"{granularity.value} fixes every layer's sparsity at "
                        f"{1 - granularity.n_m[0] / granularity.n_m[1]:.0%}: there is nothing "
                        "for owl to allocate; use unstructured, filter or channel")
    members = list(session.uniform_plan(cap, granularity, criterion)[0].layers)
    params = {n: session.layer_by_name[n].params for n in members}
    groups: dict[int, list[str]] = {}
    if granularity.structured:  # coupled layers are pruned together: one amount each group
        for name in members:
            group = session.group_of(name, granularity)
            if group is not None:
                groups.setdefault(group.id, []).append(name)

    def family(knob: float) -> Plan:
        levels = owl_sparsities({n: ratios.get(n) for n in members}, params, knob * cap,
                                cap=cap)
        for names in groups.values():
            shared = sum(levels[n] * params[n] for n in names) / sum(params[n] for n in names)
            levels.update(dict.fromkeys(names, shared))
        return Plan({n: LayerPlan(granularity, criterion, sparsity=round(levels[n], 6))
                     for n in members if levels[n] > 0})

    return family


# -- fitting a family of plans to a budget -----------------------------------------------
@dataclass
class Outcome:
    """A method's plan at a budget, measured."""

    method: Method
    budget: Budget
    plan: Plan
    measured: float  # the budget quantity, measured
    met: bool
    report: Report
    knob: float
    predicted_metric: float | None = None  # sensitivity only
    notes: list[str] = field(default_factory=list)
    outlier_ratios: dict[str, float] | None = None  # owl only: per layer

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method.value, "budget": {"kind": self.budget.kind.value,
                                                     "value": self.budget.value},
            "measured": self.measured, "met": self.met, "knob": self.knob,
            "metric": self.report.evaluation.metric,
            "predicted_metric": self.predicted_metric,
            "plan": self.plan.to_dict(), "notes": self.notes,
            "outlier_ratios": self.outlier_ratios,
        }


def fit(bench: Workbench, family: Callable[[float], Plan], budget: Budget,
        steps: int | None = None) -> tuple[Plan, float, float]:
    """The smallest knob in [0, 1] whose plan's measured quantity meets `budget` (the
    session's plan is put back). Returns the plan, its measured quantity and the knob;
    if even knob 1 misses the budget, knob 1's plan (the caller says it is not met)."""
    session = bench.session
    steps = steps or (LATENCY_FIT_STEPS if budget.kind is BudgetKind.LATENCY else FIT_STEPS)

    def quantity(knob: float) -> tuple[Plan, float]:
        plan = session.stamp(family(knob))
        with bench.applied(plan):
            return plan, measure(bench, budget.kind)

    plan, value = quantity(0.0)
    if budget.met(value):
        return plan, value, 0.0
    best = quantity(1.0)
    if not budget.met(best[1]):
        return best[0], best[1], 1.0
    lo, hi = 0.0, 1.0
    for _step in range(steps):
        mid = (lo + hi) / 2
        candidate = quantity(mid)
        if budget.met(candidate[1]):
            hi, best = mid, candidate
        else:
            lo = mid
    return best[0], best[1], hi


@dataclass
class Family:
    """A method's family of plans: `plan(knob)` for a knob in [0, 1] (0: nothing pruned,
    1: the most the method prunes with no layer above the cap); `predicted` collects the
    metric the sensitivity curves predict per knob asked for; `notes` what to tell."""

    method: Method
    plan: Callable[[float], Plan]
    predicted: dict[float, float]
    notes: list[str]
    outlier_ratios: dict[str, float] | None = None  # owl: each layer's outlier ratio


def method_family(
    bench: Workbench, method: Method | str, kind: BudgetKind, *,
    granularity: Granularity | str = Granularity.UNSTRUCTURED, criterion: str = "l1",
    sensitivity: SensitivityResult | None = None, cap: float = 0.95,
) -> Family:
    """`method`'s plans as one knob, the scale `fit` turns (the sensitivity allocation
    counts its removal in `kind`'s units)."""
    method = Method(method)
    g = parse_granularity(granularity)
    session = bench.session
    notes: list[str] = []
    predicted: dict[float, float] = {}
    ratios: dict[str, float] | None = None
    if method is Method.UNIFORM:
        def family(knob: float) -> Plan:
            return session.uniform_plan(knob * cap, g, criterion)[0]
    elif method is Method.GLOBAL:
        def family(knob: float) -> Plan:  # unsupported and unused layers left out
            return session.global_plan(knob * cap, g, criterion, cap)[0]
    elif method is Method.OWL:
        ratios = outlier_ratios(session)
        owl = _owl_family(session, g, criterion, cap, ratios)

        def family(knob: float) -> Plan:
            return owl(knob)
        unmeasured = [n for n in session.layer_names if n not in ratios]
        if unmeasured:
            notes.append(_("no outlier ratio for {layers} (wanda cannot score them): placed "
                           "in the middle of the range").format(layers=", ".join(unmeasured)))
    else:
        if sensitivity is None:
            raise PlanError("the sensitivity-guided allocation needs a sensitivity analysis: "
                            "run one first (same granularity and criterion)")
        if sensitivity.granularity is not g or sensitivity.criterion != criterion:
            raise PlanError(
                f"the sensitivity analysis was run {sensitivity.granularity.value} with "
                f"{sensitivity.criterion}; run it {g.value} with {criterion} to allocate so")
        if not sensitivity.complete:
            notes.append(_("the sensitivity analysis was stopped early: items without a "
                           "curve are left unpruned"))
        total = max_removal(sensitivity, kind, cap)

        def family(knob: float) -> Plan:
            allocation = allocate(sensitivity, kind, knob * total, cap)
            predicted[knob] = allocation.predicted_metric
            return allocation.plan
    return Family(method, family, predicted, notes, ratios)


def plan_for_budget(
    bench: Workbench, budget: Budget, method: Method | str, *,
    granularity: Granularity | str = Granularity.UNSTRUCTURED, criterion: str = "l1",
    sensitivity: SensitivityResult | None = None, cap: float = 0.95,
) -> Outcome:
    """`method`'s plan at `budget`, fitted by measurement, then evaluated for real."""
    found = method_family(bench, method, budget.kind, granularity=granularity,
                          criterion=criterion, sensitivity=sensitivity, cap=cap)
    method, predicted, notes = found.method, found.predicted, found.notes
    plan, value, knob = fit(bench, found.plan, budget)
    met = budget.met(value)
    if not met:
        notes.append(_("{method} cannot reach {budget} with every layer at most {cap} pruned: "
                       "it reaches {reached}").format(
            method=method_name(method), budget=budget.describe(), cap=f"{cap:.0%}",
            reached=format_quantity(budget.kind, value)))
    with bench.applied(plan):
        report = bench.meter.report()
    return Outcome(method, budget, plan, value, met, report, knob, predicted.get(knob), notes,
                   found.outlier_ratios)


def format_quantity(kind: BudgetKind, value: float) -> str:
    """A budget quantity for people: 80.0%, 12,345 bytes, 1.23 ms."""
    if kind in (BudgetKind.SPARSITY, BudgetKind.MACS):
        return f"{value:.1%}"
    if kind is BudgetKind.SIZE:
        return _("{count} bytes").format(count=f"{value:,.0f}")
    return f"{value:.2f} ms"


__all__ = [
    "Allocation", "Budget", "BudgetKind", "Family", "Method", "Outcome", "allocate", "fit",
    "METHOD_NAMES", "format_quantity", "max_removal", "measure", "method_family",
    "method_name", "outlier_ratio",
    "outlier_ratios", "owl_sparsities", "plan_for_budget",
]
