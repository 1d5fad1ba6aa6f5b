"""Budget-driven allocation: uniform, global and sensitivity-guided plans fitted to a
budget by measurement — and the acceptance check that the sensitivity-guided allocation
is at least as good as uniform at 80% overall sparsity."""

from __future__ import annotations

from functools import cache

import pytest
from fixtures.sessions import bench_for

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params
from pruneviz.measure.storage import sparse_bytes
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    allocate,
    fit,
    max_removal,
    measure,
    plan_for_budget,
)
from pruneviz.workflows.sensitivity import Item, Point, SensitivityResult, SensitivityRun
from pruneviz.workflows.workbench import Workbench


@cache
def bench_and_result(name: str, granularity: str = "unstructured") -> tuple[
        Workbench, SensitivityResult]:
    bench = bench_for(name)
    result = SensitivityRun(bench.session, bench.eval_data, granularity=granularity).run()
    return bench, result


# -- acceptance ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["digits_cnn", "digits_mlp"])
def test_sensitivity_allocation_is_at_least_as_good_as_uniform_at_80_percent(name: str) -> None:
    bench, result = bench_and_result(name)
    budget = Budget(BudgetKind.SPARSITY, 0.8)
    uniform = plan_for_budget(bench, budget, Method.UNIFORM)
    guided = plan_for_budget(bench, budget, Method.SENSITIVITY, sensitivity=result)
    for outcome in (uniform, guided):
        assert outcome.met
        assert outcome.measured >= 0.8
        assert outcome.report.sparsity == pytest.approx(outcome.measured)
    # both measured for real, without fine-tuning
    assert guided.report.evaluation.metric >= uniform.report.evaluation.metric
    assert guided.predicted_metric is not None
    assert uniform.predicted_metric is None


# -- every method meets every counted budget, measured -----------------------------------------
@pytest.mark.parametrize("method", list(Method))
@pytest.mark.parametrize(("kind", "value"), [
    (BudgetKind.SPARSITY, 0.6), (BudgetKind.MACS, 0.5), (BudgetKind.SIZE, 40_000),
])
def test_each_method_meets_the_budget_as_measured(method: Method, kind: BudgetKind,
                                                   value: float) -> None:
    bench, result = bench_and_result("digits_mlp")
    before = bench.session.plan
    outcome = plan_for_budget(bench, Budget(kind, value), method, sensitivity=result)
    assert bench.session.plan == before  # the tab's own plan is left alone
    assert outcome.met, outcome.notes
    session = bench.session
    session.apply(outcome.plan)
    try:
        if kind is BudgetKind.SPARSITY:
            assert count_params(session.model).sparsity >= value
        elif kind is BudgetKind.MACS:
            dense, effective = bench.meter.macs()
            assert effective <= value * dense
        else:
            assert len(sparse_bytes(session.model.state_dict())) <= value
        assert outcome.measured == measure(bench, kind)
    finally:
        session.apply(before)


def test_the_fit_is_tight() -> None:
    # the smallest knob that meets the budget: a hair less misses it
    bench, _ = bench_and_result("digits_mlp")
    outcome = plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.5), Method.UNIFORM)
    looser = bench.session.uniform_plan((outcome.knob - 0.01) * 0.95, "unstructured", "l1")[0]
    bench.session.apply(looser)
    try:
        assert count_params(bench.session.model).sparsity < 0.5
    finally:
        bench.session.apply(bench.session.stamp(Plan()))


def test_structured_budget_prunes_coupled_groups() -> None:
    bench, result = bench_and_result("digits_cnn", "filter")
    outcome = plan_for_budget(bench, Budget(BudgetKind.MACS, 0.6), Method.SENSITIVITY,
                              granularity=Granularity.FILTER, sensitivity=result)
    assert outcome.met
    assert all(entry.granularity is Granularity.FILTER for entry in outcome.plan.layers.values())


def test_an_unreachable_budget_says_so() -> None:
    bench, _ = bench_and_result("digits_mlp")
    outcome = plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.9), Method.UNIFORM, cap=0.5)
    assert not outcome.met
    assert outcome.measured < 0.9
    assert "cannot reach 90% overall sparsity" in outcome.notes[0]


# -- the allocation itself, on curves made by hand ---------------------------------------------
def _curve_result(curves: dict[str, list[tuple[float, float, int]]]) -> SensitivityResult:
    """A result from (level, metric, params removed) per item; baseline metric 1.0."""
    base = Point(None, 0.0, 1.0, 0.1, 1000, 5000, 4000, 0)
    points = {key: [Point(key, level, metric, 0.1 + (1.0 - metric), 1000 - removed,
                          5000 - 5 * removed, 4000 - 4 * removed, 0)
                    for level, metric, removed in curve]
              for key, curve in curves.items()}
    items = [Item(key, (key,), Granularity.UNSTRUCTURED, "weight") for key in curves]
    return SensitivityResult("hand", "l1", Granularity.UNSTRUCTURED,
                             (0.0, 0.5, 0.9), "accuracy", True, base, items, points, True, 0.0)


def test_cheap_removals_go_first_and_the_budget_is_met_exactly() -> None:
    result = _curve_result({
        "robust": [(0.0, 1.0, 0), (0.5, 1.0, 100), (0.9, 0.98, 180)],
        "fragile": [(0.0, 1.0, 0), (0.5, 0.7, 100), (0.9, 0.2, 180)],
    })
    allocation = allocate(result, BudgetKind.SPARSITY, 150, cap=0.95)
    assert allocation.predicted_removed == pytest.approx(150)
    assert allocation.levels["fragile"] == 0.0
    assert allocation.levels["robust"] == pytest.approx(0.5 + 0.4 * 50 / 80)
    assert allocation.predicted_metric == pytest.approx(1.0 - 0.02 * 50 / 80)
    assert set(allocation.plan.layers) == {"robust"}
    assert max_removal(result, BudgetKind.SPARSITY, 0.95) == 360


def test_a_non_convex_curve_is_read_through_its_hull() -> None:
    # "dip" loses a lot at 50% but little more at 90%: stopping at 50% is never worth it
    result = _curve_result({
        "dip": [(0.0, 1.0, 0), (0.5, 0.8, 100), (0.9, 0.79, 180)],
        "line": [(0.0, 1.0, 0), (0.5, 0.85, 100), (0.9, 0.73, 180)],
    })
    allocation = allocate(result, BudgetKind.SPARSITY, 180, cap=0.95)
    assert allocation.levels == {"dip": pytest.approx(0.9), "line": 0.0}


def test_the_cap_is_respected() -> None:
    result = _curve_result({
        "a": [(0.0, 1.0, 0), (0.5, 1.0, 100), (0.9, 1.0, 180)],
        "b": [(0.0, 1.0, 0), (0.5, 0.9, 100), (0.9, 0.5, 180)],
    })
    allocation = allocate(result, BudgetKind.SPARSITY, 200, cap=0.5)
    assert max(allocation.levels.values()) <= 0.5
    assert allocation.predicted_removed == pytest.approx(200)


def test_fit_bisects_on_the_measured_quantity(monkeypatch: pytest.MonkeyPatch) -> None:
    bench, _ = bench_and_result("digits_mlp")
    asked: list[float] = []

    def family(knob: float) -> Plan:
        asked.append(knob)
        return bench.session.uniform_plan(knob, "unstructured", "l1")[0]

    plan, value, knob = fit(bench, family, Budget(BudgetKind.SPARSITY, 0.3))
    assert value >= 0.3
    assert asked[:2] == [0.0, 1.0]
    assert plan == family(knob)


# -- refusals -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("kind", "value", "message"), [
    ("sparsity", 1.5, "between 0 and 1"), ("macs", -0.1, ">= 0"),
    ("size_bytes", float("nan"), ">= 0"),
])
def test_bad_budgets_are_refused(kind: str, value: float, message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Budget(BudgetKind(kind), value)


def test_sensitivity_needs_a_matching_analysis() -> None:
    bench, result = bench_and_result("digits_mlp")
    budget = Budget(BudgetKind.SPARSITY, 0.5)
    with pytest.raises(PlanError, match="needs a sensitivity analysis"):
        plan_for_budget(bench, budget, Method.SENSITIVITY)
    with pytest.raises(PlanError, match="run it filter with l1"):
        plan_for_budget(bench, budget, Method.SENSITIVITY, granularity="filter",
                        sensitivity=result)


def test_layer_plan_entries_are_plain_sparsities() -> None:
    bench, result = bench_and_result("digits_mlp")
    outcome = plan_for_budget(bench, Budget(BudgetKind.SPARSITY, 0.7), Method.SENSITIVITY,
                              sensitivity=result)
    for entry in outcome.plan.layers.values():
        assert isinstance(entry, LayerPlan)
        assert entry.sparsity is not None
        assert 0 < entry.sparsity <= 0.95
    assert Plan.from_json(outcome.plan.to_json()) == outcome.plan


@pytest.mark.parametrize(("limit_ms", "met", "knob"), [(1e9, True, 0.0), (0.0, False, 1.0)])
def test_a_latency_budget_is_judged_on_measured_latency(limit_ms: float, met: bool,
                                                         knob: float) -> None:
    # No timing threshold: any measured latency is below 1e9 ms and above 0 ms.
    bench, _ = bench_and_result("digits_mlp")
    outcome = plan_for_budget(bench, Budget(BudgetKind.LATENCY, limit_ms), Method.UNIFORM,
                              granularity="filter")
    assert outcome.met is met
    assert outcome.knob == knob
    assert outcome.measured > 0
    if not met:
        assert "cannot reach 0.00 ms latency" in outcome.notes[0]
