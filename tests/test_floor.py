"""The accuracy floor: the plan that prunes the most while its measured metric meets a floor
— met when measured again, exact on a constructed monotone curve, the other way round for
MSE, and a clear message when no plan can meet it."""

from __future__ import annotations

import math
from functools import cache

import pytest
from fixtures.sessions import bench_for

from pruneviz.core.plan import Plan
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.workflows.allocation import Method
from pruneviz.workflows.floor import (
    Floor,
    FloorPoint,
    FloorResult,
    Objective,
    Status,
    best_passing,
    check_floor,
    plan_for_floor,
    scan_knob,
)
from pruneviz.workflows.sensitivity import SensitivityRun
from pruneviz.workflows.workbench import Workbench


@cache
def bench(name: str) -> Workbench:
    return bench_for(name)


def fake_point(knob: float, phase: str, metric: float, floor: Floor) -> FloorPoint:
    """A point of a constructed curve: sparsity grows with the knob as in a uniform family."""
    return FloorPoint(knob, phase, metric, 0.001, floor.met(metric), 0.9 * knob,
                      1 - 0.9 * knob, round(1000 * (1 - 0.9 * knob)),
                      round(10_000 * (1 - 0.9 * knob)), Plan())


# -- the search on constructed curves (pure) -------------------------------------------------
@pytest.mark.parametrize("edge", [0.3827, 0.05, 0.71, 0.999])
def test_a_monotone_curve_is_bracketed_to_the_searchs_resolution(edge: float) -> None:
    floor = Floor(0.5)
    asked: list[float] = []

    def measure(knob: float, phase: str) -> FloorPoint:
        asked.append(knob)
        return fake_point(knob, phase, 0.5 + (edge - knob), floor)  # passes up to `edge`

    points = scan_knob(measure, Objective.SPARSITY, scan=10, refine=6)
    best = best_passing(points, Objective.SPARSITY)
    assert best is not None
    resolution = 1 / 10 / 2**6
    assert edge - resolution <= best.knob <= edge
    assert len(asked) == 1 + 10 + 6 == len(set(asked))
    assert asked[:11] == [i / 10 for i in range(11)]
    # the first failing point above is within one resolution step too
    failing = min(p.knob for p in points if not p.passes)
    assert failing - best.knob <= resolution + 1e-12


def test_a_dip_in_the_curve_does_not_stop_the_scan() -> None:
    floor = Floor(0.9)
    # passes up to 0.62, except a dip at 0.3 (noise, or pruning that hurts then helps)
    curve = {0.3: 0.85}

    def measure(knob: float, phase: str) -> FloorPoint:
        metric = curve.get(round(knob, 6), 0.95 if knob <= 0.62 else 0.5)
        return fake_point(knob, phase, metric, floor)

    points = scan_knob(measure, Objective.SPARSITY)
    best = best_passing(points, Objective.SPARSITY)
    assert best is not None
    assert 0.62 - 1 / 640 <= best.knob <= 0.62
    assert not next(p for p in points if p.knob == 0.3).passes


def test_everything_up_to_the_cap_passing_needs_no_refinement() -> None:
    floor = Floor(0.0)
    points = scan_knob(lambda k, phase: fake_point(k, phase, 1.0, floor), Objective.MACS)
    assert [p.knob for p in points] == [i / 10 for i in range(11)]
    best = best_passing(points, Objective.MACS)
    assert best is not None
    assert best.knob == 1.0


def test_the_smallest_step_failing_is_refined_below_it() -> None:
    floor = Floor(0.9)
    points = scan_knob(lambda k, phase: fake_point(k, phase, 0.95 if k < 0.01 else 0.5, floor),
                       Objective.SPARSITY)
    assert [p.knob for p in points if p.phase == "refine"] == pytest.approx(
        [0.05, 0.025, 0.0125, 0.00625, 0.009375, 0.0109375])
    best = best_passing([p for p in points if p.knob > 0], Objective.SPARSITY)
    assert best is not None
    assert best.knob == pytest.approx(0.009375)


def unreachable(baseline_metric: float) -> FloorResult:
    floor = Floor(0.98)
    points = [fake_point(0.0, "start", baseline_metric, floor),
              *(fake_point(i / 10, "scan", 0.97, floor) for i in range(1, 11))]
    return FloorResult(floor, "accuracy", Method.UNIFORM, Objective.SPARSITY, "unstructured",
                       "l1", 0.95, Status.NONE, points, None, points[0], 450, 1 / 640)


def test_unreachable_floors_say_why() -> None:
    above = unreachable(0.975).message()
    assert "no pruning by uniform keeps accuracy >= 0.98" in above
    assert "beyond the unpruned model's accuracy (0.975)" in above
    smallest = unreachable(0.99).message()
    assert "even the smallest step measured (9.0% sparsity) gives 0.97" in smallest
    assert "lower the floor" in smallest
    assert unreachable(0.99).to_dict()["met"] is False


# -- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(("sample", "value", "words"), [
    ("digits_mlp", math.nan, ["must be a number", "nan"]),
    ("digits_mlp", math.inf, ["must be a number"]),
    ("digits_mlp", 98.0, ["outside accuracy's range [0, 1]", "for 98% give 0.98"]),
    ("digits_mlp", -0.1, ["outside accuracy's range"]),
    ("digits_autoencoder", -1.0, ["below 0", "mse"]),
])
def test_bad_floors_say_what_to_give(sample: str, value: float, words: list[str]) -> None:
    with pytest.raises(PlanError) as caught:
        check_floor(value, bench(sample).eval_data)
    for word in words:
        assert word in str(caught.value)


# -- on the samples ----------------------------------------------------------------------------
def test_the_chosen_plan_meets_the_floor_measured_again() -> None:
    b = bench("digits_cnn")
    before = b.session.plan
    result = plan_for_floor(b, 0.98, "uniform")
    assert b.session.plan is before  # put back
    chosen = result.chosen
    assert result.status is Status.FOUND
    assert chosen is not None
    assert result.evaluations == 17
    with b.applied(chosen.plan):  # measured afresh, not from the meter's cache
        again = evaluate(b.model, b.eval_data)
        counts = count_params(b.model)
    assert again.metric >= 0.98
    assert again.metric == pytest.approx(chosen.metric)
    assert counts.sparsity == pytest.approx(chosen.sparsity)
    # the best: every measured point pruning more misses the floor
    assert all(not p.passes for p in result.points if p.sparsity > chosen.sparsity)
    assert any(p.sparsity > chosen.sparsity for p in result.points)
    assert result.margin == pytest.approx(chosen.metric - 0.98)
    assert result.to_dict()["stderr"] == chosen.stderr
    assert (result.margin < 1.96 * chosen.stderr) == result.within_noise  # type: ignore[operator]
    if result.within_noise:
        assert "less than 1.96 standard errors" in result.message()


def test_a_lower_is_better_metric_is_searched_the_other_way() -> None:
    b = bench("digits_autoencoder")
    assert not b.eval_data.higher_is_better
    baseline = b.baseline.evaluation.metric
    floor = 4 * baseline  # mse may grow to 4x the unpruned one
    result = plan_for_floor(b, floor, "global", objective="macs")
    chosen = result.chosen
    assert chosen is not None
    assert result.status is Status.FOUND
    assert chosen.metric <= floor
    assert result.margin == pytest.approx(floor - chosen.metric)
    assert any(p.metric > floor and not p.passes for p in result.points)
    # the objective: fewest MACs among the points that pass
    assert chosen.macs_fraction == min(p.macs_fraction for p in result.points if p.passes)
    assert "mse <= " in result.message()


def test_an_unreachable_floor_is_said_so() -> None:
    b = bench("digits_mlp")
    result = plan_for_floor(b, 0.999, "global")
    assert result.status is Status.NONE
    assert result.chosen is None
    assert result.evaluations == 11  # nothing to bracket
    assert "beyond the unpruned model's accuracy" in result.message()


def test_everything_up_to_the_cap_passing_is_said_so() -> None:
    b = bench("digits_mlp")
    result = plan_for_floor(b, 0.5, "uniform", cap=0.3)
    assert result.status is Status.CAP
    assert result.chosen is not None
    assert result.chosen.knob == 1.0
    assert "Everything up to the cap (30% per layer) meets the floor" in result.message()


def test_the_sensitivity_allocation_is_searched_on_its_own_scale() -> None:
    b = bench("digits_mlp")
    analysis = SensitivityRun(b.session, b.eval_data).run()
    result = plan_for_floor(b, 0.95, "sensitivity", sensitivity=analysis, objective="size")
    chosen = result.chosen
    assert chosen is not None
    assert chosen.metric >= 0.95
    assert chosen.size_bytes == min(p.size_bytes for p in result.points if p.passes)
    data = result.to_dict()
    assert data["method"] == "sensitivity"
    assert data["objective"] == "size"
    assert len(data["curve"]) == result.evaluations
    assert [p["knob"] for p in data["curve"]] == sorted(p["knob"] for p in data["curve"])


def test_a_stop_ends_the_search_with_what_was_measured() -> None:
    b = bench("digits_mlp")
    calls: list[tuple[int, int]] = []
    result = plan_for_floor(b, 0.9, "uniform", progress=lambda d, t: calls.append((d, t)),
                            stop=lambda: len(calls) >= 4)
    assert result.evaluations == 4
    assert calls[-1] == (4, 17)
    assert any("stopped after 4" in note for note in result.notes)


def test_any_methods_family_is_searched_without_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The search reads only `method_family`: a method added there (here, a made-up one
    pruning only fc1) is searched as it is."""
    import pruneviz.workflows.floor as floor_module
    from pruneviz.core.plan import LayerPlan
    from pruneviz.workflows.allocation import Family

    b = bench("digits_mlp")
    asked: list[float] = []

    def only_fc1(*args: object, **kwargs: object) -> Family:
        def plan(knob: float) -> Plan:
            asked.append(knob)
            return Plan({"fc1": LayerPlan("unstructured", "l1", sparsity=0.95 * knob)})
        return Family(Method.GLOBAL, plan, {}, ["made up"])

    monkeypatch.setattr(floor_module, "method_family", only_fc1)
    result = plan_for_floor(b, 0.96, "global")
    chosen = result.chosen
    assert chosen is not None
    assert set(chosen.plan.layers) == {"fc1"}
    assert chosen.metric >= 0.96
    assert asked[:11] == [i / 10 for i in range(11)]
    assert result.notes[0] == "made up"


def test_the_figure_draws_every_plan_the_floor_and_the_chosen_one() -> None:
    from pruneviz.output.floor_figures import floor_curve

    result = plan_for_floor(bench("digits_mlp"), 0.95, "uniform", objective="size")
    fig = floor_curve(result)
    chosen = result.chosen
    assert chosen is not None
    assert fig.layout.meta["x"] == [p.size_bytes / 1024 for p in result.curve]
    assert fig.layout.meta["chosen"] == chosen.size_bytes / 1024
    assert fig.layout.shapes[0].y0 == 0.95
    names = [t.name for t in fig.data]
    assert names == ["measured", "meets the floor", "misses it", "chosen"]
    met, missed = fig.data[1], fig.data[2]
    assert len(met.x) + len(missed.x) == result.evaluations
    assert all(y >= 0.95 for y in met.y)
    assert all(y < 0.95 for y in missed.y)
    assert list(fig.data[3].y) == [chosen.metric]
    assert "smaller is better" in fig.layout.xaxis.title.text


def test_a_live_subset_is_said_to_be_one() -> None:
    from pruneviz.data.sources import Source
    from pruneviz.workflows.workbench import open_workbench

    b = open_workbench(Source(model="sample:digits_mlp", eval_subset=200))
    result = plan_for_floor(b, 0.9, "uniform", scan=4, refine=2)
    assert result.samples == 200
    assert result.evaluations <= 1 + 4 + 2
    assert any("live subset of 200 of the 450" in note for note in result.notes)


def test_the_figure_zooms_on_the_floor_and_says_what_is_off_the_chart() -> None:
    from pruneviz.output.floor_figures import ZOOM, floor_curve

    result = plan_for_floor(bench("digits_mlp"), 0.95, "uniform")
    fig = floor_curve(result)
    edge = 0.95 - ZOOM * (result.baseline.metric - 0.95)
    off = sum(p.metric < edge for p in result.curve)
    assert off > 0  # the model collapses at the cap
    assert fig.layout.yaxis.range[0] == pytest.approx(edge)
    assert f"{off} far beyond the floor off the chart" in fig.layout.title.subtitle.text
    gentle = plan_for_floor(bench("digits_mlp"), 0.1, "uniform", cap=0.3)
    assert floor_curve(gentle).layout.yaxis.range is None  # nothing off: no zoom
