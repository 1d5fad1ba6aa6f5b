"""Lesson 6, budgets: at one budget (a share of the MACs or of the weights kept), the
uniform plan (every layer the same share) against the sensitivity-guided one (the
Sensitivity page's comparison: both fitted to the budget by measurement, then evaluated)."""

from __future__ import annotations

from dataclasses import dataclass

from pruneviz.core.granularity import Granularity
from pruneviz.workflows.allocation import Budget, BudgetKind, Method, plan_for_budget
from pruneviz.workflows.lessons.copies import lesson_bench
from pruneviz.workflows.sensitivity import SensitivityResult, SensitivityRun

KINDS = ("macs", "weights")  # what the learner budgets: MACs, or weights (the model's size)
LEVELS = (0.0, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95)  # a fast sensitivity analysis
CRITERION = "l1"
GRANULARITY = Granularity.UNSTRUCTURED


@dataclass(frozen=True)
class Curve:
    """One layer's sensitivity: accuracy with it alone pruned at each level."""

    layer: str
    levels: tuple[float, ...]
    accuracy: tuple[float, ...]


@dataclass(frozen=True)
class PlanOutcome:
    """One method's plan at the budget, measured: per-layer sparsity, accuracy, the share
    of MACs and of weights it keeps, and whether it met the budget."""

    method: str  # "uniform" or "sensitivity"
    layers: tuple[tuple[str, float], ...]  # (layer, sparsity)
    accuracy: float
    macs_kept: float
    weights_kept: float
    met: bool
    predicted: float | None  # sensitivity only: the accuracy its curves predict

    def sparsity(self, layer: str) -> float:
        return dict(self.layers)[layer]


@dataclass(frozen=True)
class BudgetResult:
    kind: str  # "macs" or "weights"
    kept: float  # the budget: share of the MACs or weights kept, at most
    baseline: float
    curves: tuple[Curve, ...]
    uniform: PlanOutcome
    guided: PlanOutcome


def sensitivity_curves(result: SensitivityResult) -> tuple[Curve, ...]:
    """The analysis' per-layer accuracy curves."""
    return tuple(Curve(item.key, tuple(p.level for p in result.curve(item.key)),
                       tuple(p.metric for p in result.curve(item.key)))
                 for item in result.items)


def layer_names(model_ref: str) -> list[str]:
    """The model's prunable layers, in model order."""
    return lesson_bench(model_ref).session.layer_names


def layer_sensitivity(model_ref: str) -> tuple[float, tuple[Curve, ...]]:
    """The unpruned accuracy and each layer's curve (a fast analysis, l1 unstructured)."""
    bench = lesson_bench(model_ref)
    result = SensitivityRun(bench.session, bench.eval_data, criterion=CRITERION,
                            granularity=GRANULARITY, levels=LEVELS).run()
    return result.baseline.metric, sensitivity_curves(result)


def most_robust(curves: tuple[Curve, ...], baseline: float, tolerance: float = 0.01) -> str:
    """The layer that can lose the largest share alone within `tolerance` of the baseline
    (ties: the one with the highest accuracy at its largest level)."""
    def reach(curve: Curve) -> tuple[float, float]:
        ok = [lv for lv, acc in zip(curve.levels, curve.accuracy, strict=True)
              if acc >= baseline - tolerance]
        return (max(ok, default=0.0), curve.accuracy[-1])
    return max(curves, key=reach).layer


def budget_for(kind: str, kept: float) -> Budget:
    """The library's budget: MACs kept at most, or weights removed at least."""
    if kind == "macs":
        return Budget(BudgetKind.MACS, kept)
    return Budget(BudgetKind.SPARSITY, round(1.0 - kept, 6))


def compare_budgets(model_ref: str, kind: str = "macs", kept: float = 0.5) -> BudgetResult:
    """Run a fast sensitivity analysis (l1, unstructured, a few levels), then fit the
    uniform and the sensitivity-guided plans to the budget and measure both."""
    bench = lesson_bench(model_ref)
    session = bench.session
    sensitivity = SensitivityRun(session, bench.eval_data, criterion=CRITERION,
                                 granularity=GRANULARITY, levels=LEVELS).run()
    budget = budget_for(kind, kept)
    plans = []
    for method in (Method.UNIFORM, Method.SENSITIVITY):
        outcome = plan_for_budget(bench, budget, method, granularity=GRANULARITY,
                                  criterion=CRITERION, sensitivity=sensitivity)
        with bench.applied(outcome.plan):
            dense, effective = bench.meter.macs()
            layers = tuple((r.name, r.sparsity) for r in session.results())
        report = outcome.report
        plans.append(PlanOutcome(
            outcome.method.value, layers, report.evaluation.metric,
            effective / dense if dense else 0.0,
            report.params_nonzero / report.params_total if report.params_total else 0.0,
            outcome.met, outcome.predicted_metric))
    return BudgetResult(kind, kept, sensitivity.baseline.metric,
                        sensitivity_curves(sensitivity), plans[0], plans[1])
