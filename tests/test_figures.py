"""Figures: the numbers drawn are the numbers given, shapes sit where the threshold is."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest

from pruneviz.core.granularity import Granularity
from pruneviz.output import figures as F
from pruneviz.output import run_figures as R
from pruneviz.output import tradeoff_figures as T
from pruneviz.workflows.experiments import Experiment
from pruneviz.workflows.finetune import Record
from pruneviz.workflows.schedules import Schedule
from pruneviz.workflows.sensitivity import Item, Point, SensitivityResult, SensitivityRun
from pruneviz.workflows.workbench import Workbench, open_workbench


def _trace(fig: go.Figure, name: str) -> Any:
    matches = [t for t in fig.data if t.name == name]
    assert len(matches) == 1, [t.name for t in fig.data]
    return matches[0]


def _shapes(fig: go.Figure, kind: str) -> list[Any]:
    return [s for s in fig.layout.shapes if s.type == kind]


@pytest.fixture
def weights() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.05, size=(32, 16, 3, 3)).astype(np.float32)


# -- weight histogram ---------------------------------------------------------------------------
def test_histogram_counts_every_weight_once_and_pruned_ones_in_red(weights: np.ndarray) -> None:
    t = float(np.quantile(np.abs(weights), 0.6))
    kept = np.abs(weights) >= t
    fig = F.weight_histogram(weights, kept, layer="conv2", threshold=t)
    kept_bars, pruned_bars = _trace(fig, "kept"), _trace(fig, "pruned")
    assert kept_bars.marker.color == F.KEPT
    assert pruned_bars.marker.color == F.PRUNED
    assert int(np.sum(kept_bars.y)) + int(np.sum(pruned_bars.y)) == weights.size
    assert int(np.sum(pruned_bars.y)) == int((~kept).sum())
    assert int(np.sum(kept_bars.y)) == int(kept.sum())
    assert fig.layout.meta["pruned"] == int((~kept).sum())
    assert fig.layout.barmode == "stack"
    # Both traces share one set of bins, each bar exactly one bin wide, bins touching.
    np.testing.assert_array_equal(kept_bars.x, pruned_bars.x)
    np.testing.assert_array_equal(kept_bars.width, pruned_bars.width)
    edges = np.histogram_bin_edges(weights.astype(np.float64), bins=80)
    np.testing.assert_allclose(kept_bars.width, np.diff(edges))
    np.testing.assert_allclose(np.asarray(kept_bars.x) - np.asarray(kept_bars.width) / 2,
                               edges[:-1])
    # Magnitude pruning: no pruned weight in a bin entirely outside [-t, t].
    left = edges[:-1]
    right = edges[1:]
    outside = (left >= t) | (right <= -t)
    assert not np.any(np.asarray(pruned_bars.y)[outside])


def test_histogram_threshold_lines_and_band_sit_at_plus_minus_t(weights: np.ndarray) -> None:
    t = 0.0371
    fig = F.weight_histogram(weights, np.abs(weights) >= t, layer="conv2", threshold=t)
    lines = _shapes(fig, "line")
    assert sorted(s.x0 for s in lines) == [-t, t]
    assert all(s.x0 == s.x1 and s.line.dash == "dash" for s in lines)
    (band,) = _shapes(fig, "rect")
    assert (band.x0, band.x1) == (-t, t)
    assert band.opacity == pytest.approx(0.15)
    assert fig.layout.meta["threshold"] == t
    assert any("|w| <" in a.text for a in fig.layout.annotations)


def test_histogram_without_threshold_has_no_shapes_and_log_axis(weights: np.ndarray) -> None:
    kept = np.ones(weights.shape, dtype=bool)
    fig = F.weight_histogram(weights, kept, layer="fc", log_y=True, bins=10)
    assert fig.layout.shapes == ()
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.meta["threshold"] is None
    assert len(fig.data[0].x) == 10
    assert int(np.sum(_trace(fig, "pruned").y)) == 0


def test_histogram_refuses_a_mask_that_does_not_match(weights: np.ndarray) -> None:
    with pytest.raises(ValueError, match="kept has"):
        F.weight_histogram(weights, np.ones(5, dtype=bool), layer="x")
    with pytest.raises(TypeError, match="boolean"):
        F.weight_histogram(weights, np.ones(weights.shape), layer="x")
    with pytest.raises(ValueError, match=">= 0"):
        F.weight_histogram(weights, weights > 0, layer="x", threshold=-1.0)


# -- score bars ---------------------------------------------------------------------------------
def test_score_bars_colour_the_lowest_pruned_and_shade_up_to_the_boundary() -> None:
    scores = np.sort(np.random.default_rng(1).random(40))
    fig = F.score_bars(scores, 15, layer="conv1", criterion="l1", unit="filter",
                       threshold=float(scores[15]))
    pruned, kept = _trace(fig, "pruned"), _trace(fig, "kept")
    assert isinstance(pruned, go.Bar)
    assert isinstance(kept, go.Bar)
    assert pruned.marker.color == F.PRUNED
    assert kept.marker.color == F.KEPT
    np.testing.assert_array_equal(pruned.y, scores[:15])
    np.testing.assert_array_equal(kept.y, scores[15:])
    np.testing.assert_array_equal(pruned.x, np.arange(15))
    (band,) = _shapes(fig, "rect")
    assert (band.x0, band.x1) == (-0.5, 14.5)
    (line,) = _shapes(fig, "line")
    assert line.y0 == line.y1 == scores[15]
    assert fig.layout.meta == {"threshold": float(scores[15]), "pruned": 15, "count": 40}
    assert fig.layout.title.text == "conv1: l1 score per filter"


def test_score_bars_with_nothing_pruned_have_no_band() -> None:
    fig = F.score_bars(np.arange(5.0), 0, layer="fc", criterion="l2", unit="channel")
    assert _shapes(fig, "rect") == []
    assert len(_trace(fig, "pruned").y) == 0


def test_score_bars_for_many_structures_draw_downsampled_lines() -> None:
    n, k = 18_432, 11_000
    scores = np.sort(np.random.default_rng(2).normal(size=n) ** 2)
    fig = F.score_bars(scores, k, layer="conv2", criterion="l1", unit="weight")
    pruned, kept = _trace(fig, "pruned"), _trace(fig, "kept")
    assert all(isinstance(t, go.Scattergl) for t in fig.data)
    assert pruned.fill == kept.fill == "tozeroy"
    px, kx = np.asarray(pruned.x), np.asarray(kept.x)
    assert px[0] == 0
    assert px[-1] == k - 1
    assert kx[0] == k
    assert kx[-1] == n - 1
    np.testing.assert_array_equal(pruned.y, scores[px])
    np.testing.assert_array_equal(kept.y, scores[kx])
    assert len(px) + len(kx) <= F.LINE_POINTS + 2
    (band,) = _shapes(fig, "rect")
    assert band.x1 == k - 0.5
    assert fig.layout.meta == {"threshold": None, "pruned": k, "count": n}


@pytest.mark.parametrize("figure", [
    lambda w: F.weight_histogram(w, np.abs(w) >= 0.03, layer="conv2", threshold=0.03),
    lambda w: F.weight_histogram(w, np.abs(w) >= 0.0, layer="fc", log_y=True, bins=7),
    lambda w: F.score_bars(np.sort(np.abs(w[:, 0, 0, 0])), 5, layer="c", criterion="l1",
                           unit="filter", threshold=0.01),
    lambda w: F.score_bars(np.sort(np.abs(w.ravel())), 800, layer="c", criterion="l2",
                           unit="weight"),  # more than MAX_BARS: filled lines
], ids=["histogram", "histogram-log", "bars", "lines"])
def test_the_slider_figures_built_unchecked_pass_plotlys_check(
        weights: np.ndarray, figure: Callable[[np.ndarray], go.Figure]) -> None:
    built = figure(weights)
    checked = go.Figure(built.to_dict())  # raises on any property plotly does not know
    assert checked.to_dict() == built.to_dict()
    with pytest.raises(ValueError, match="colour"):  # the check bites on a typo
        go.Figure({**built.to_dict(), "layout": {"colour": "red"}})


def test_score_bars_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="ascending"):
        F.score_bars(np.array([2.0, 1.0]), 1, layer="a", criterion="l1", unit="filter")
    with pytest.raises(ValueError, match="pruned must be"):
        F.score_bars(np.arange(3.0), 4, layer="a", criterion="l1", unit="filter")
    with pytest.raises(ValueError, match="unknown unit"):
        F.score_bars(np.arange(3.0), 1, layer="a", criterion="l1", unit="neuron")


# -- layer overview -----------------------------------------------------------------------------
def test_layer_overview_keeps_layer_order_and_stacks_kept_and_zeroed() -> None:
    names = ["fc2", "conv1", "b.conv"]
    params = [1000, 432, 0]
    nonzero = [250, 432, 0]
    fig = F.layer_overview(names, params, nonzero, [0.1, 0.6, 0.3])
    assert fig.layout.xaxis.type == "category"
    assert list(fig.layout.xaxis.categoryarray) == names
    kept, zeroed = _trace(fig, "kept (non-zero)"), _trace(fig, "zeroed")
    assert list(kept.x) == names
    assert list(zeroed.x) == names
    assert list(kept.y) == nonzero
    assert list(zeroed.y) == [750, 0, 0]
    assert fig.layout.barmode == "stack"
    np.testing.assert_allclose(np.asarray(kept.customdata)[:, 0], [75.0, 0.0, 0.0])
    np.testing.assert_allclose(np.asarray(kept.customdata)[:, 1], [10.0, 60.0, 30.0])


def test_layer_overview_refuses_inconsistent_counts() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        F.layer_overview(["a"], [1, 2], [1], [1.0])
    with pytest.raises(ValueError, match=r"\[0, params\]"):
        F.layer_overview(["a"], [1], [2], [1.0])
    with pytest.raises(ValueError, match="unique"):
        F.layer_overview(["a", "a"], [1, 1], [1, 1], [0.5, 0.5])


# -- kernel grid --------------------------------------------------------------------------------
def _tile(fig: go.Figure, i: int) -> np.ndarray:
    meta = fig.layout.meta
    px, gap, cols = meta["pixel"], meta["gap"], meta["columns"]
    z = np.asarray(fig.data[0].z)
    th = tw = 3 * px
    r, c = divmod(i, cols)
    y0, x0 = gap + r * (th + gap), gap + c * (tw + gap)
    return z[y0:y0 + th, x0:x0 + tw]


def test_kernel_grid_tiles_kernels_and_dims_the_pruned_ones() -> None:
    kernels = np.random.default_rng(3).normal(size=(10, 3, 3))
    pruned = np.zeros(10, dtype=bool)
    pruned[[2, 7]] = True
    plain = F.kernel_grid(kernels, np.zeros(10, dtype=bool), layer="conv1", columns=4)
    fig = F.kernel_grid(kernels, pruned, layer="conv1", columns=4)
    meta = fig.layout.meta
    px, gap = meta["pixel"], meta["gap"]
    assert (meta["rows"], meta["columns"]) == (3, 4)
    assert np.asarray(fig.data[0].z).shape == (gap + 3 * (3 * px + gap),
                                               gap + 4 * (3 * px + gap), 3)
    assert meta["pruned"] == [2, 7]
    assert "2 of 10 filters pruned" in fig.layout.title.text
    for i in range(10):
        same = np.array_equal(_tile(fig, i), _tile(plain, i))
        assert same != bool(pruned[i]), i
    # Dimmed tiles are nearer the dim grey than the same kernel undimmed.
    for i in (2, 7):
        assert np.abs(_tile(fig, i).astype(int) - 221).mean() < np.abs(
            _tile(plain, i).astype(int) - 221).mean()
    # Crisp: every kernel pixel is a constant px x px block.
    tile = _tile(fig, 0)
    np.testing.assert_array_equal(tile, tile[::px, ::px].repeat(px, 0).repeat(px, 1))


def test_kernel_grid_colours_sign_symmetrically() -> None:
    kernels = np.stack([np.full((3, 3), 2.0), np.full((3, 3), -2.0), np.zeros((3, 3))])
    kernels[2, 0, 0] = 1.0  # half the largest magnitude
    fig = F.kernel_grid(kernels, np.zeros(3, dtype=bool), layer="c")
    assert tuple(_tile(fig, 0)[0, 0]) == (178, 24, 43)  # full red
    assert tuple(_tile(fig, 1)[0, 0]) == (33, 102, 172)  # full blue
    assert tuple(_tile(fig, 2)[-1, -1]) == (255, 255, 255)  # zero is white
    half = _tile(fig, 2)[0, 0].astype(int)
    np.testing.assert_allclose(half, (np.array([178, 24, 43]) + 255) / 2, atol=1)


def test_kernel_grid_takes_1d_kernels_and_refuses_a_wrong_mask() -> None:
    fig = F.kernel_grid(np.ones((5, 7)), np.ones(5, dtype=bool), layer="conv1d")
    assert fig.layout.meta["pruned"] == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="5 kernels"):
        F.kernel_grid(np.ones((5, 3, 3)), np.ones(4, dtype=bool), layer="c")


# -- criteria disagreement ----------------------------------------------------------------------
MASKS = {
    "l1": np.array([True, True, False, False, False]),
    "l2": np.array([True, False, True, False, False]),
    "fpgm": np.array([True, False, False, False, False]),
}


def test_disagreement_count_on_a_hand_example() -> None:
    assert F.disagreement_count(MASKS) == 2  # structures 1 and 2
    assert F.disagreement_count({"l1": MASKS["l1"]}) == 0
    assert F.disagreement_count({"a": MASKS["l1"], "b": MASKS["l1"]}) == 0


def test_criteria_disagreement_draws_one_row_per_criterion() -> None:
    fig = F.criteria_disagreement(MASKS, layer="conv2", unit="filter")
    (heat,) = fig.data
    np.testing.assert_array_equal(np.asarray(heat.z), np.stack(list(MASKS.values())).astype(int))
    assert list(heat.y) == ["l1", "l2", "fpgm"]
    assert fig.layout.yaxis.type == "category"
    assert fig.layout.meta["disagreements"] == 2
    assert fig.layout.title.text == "conv2: which filters each criterion prunes"
    assert fig.layout.xaxis.title.text == "filter index"


def test_criteria_disagreement_refuses_masks_of_different_lengths() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        F.disagreement_count({"a": np.ones(3, dtype=bool), "b": np.ones(4, dtype=bool)})
    with pytest.raises(ValueError, match="no criteria"):
        F.criteria_disagreement({}, layer="a", unit="filter")


# -- trade-off scatter --------------------------------------------------------------------------
def _experiment(id: int, x: int, metric: float, latency: float | None = 1.0) -> Experiment:
    return Experiment(
        id=id, label=f"plan {id}", plan_json="{}", plan_key=str(id), metric_name="accuracy",
        metric=metric, loss=0.1, params_total=1000, params_nonzero=x, sparsity=1 - x / 1000,
        macs_dense=100, macs_effective=x // 10, size_dense_bytes=4000, size_sparse_bytes=x * 6,
        size_gzip_bytes=x * 4, latency_ms=latency,
    )


POINTS = [
    _experiment(0, 1000, 0.95),  # baseline, on the front (best metric)
    _experiment(1, 500, 0.94),  # front
    _experiment(2, 600, 0.90),  # dominated by 1
    _experiment(3, 200, 0.80),  # front
    _experiment(4, 500, 0.94),  # duplicate of 1: only the first is kept
    _experiment(5, 1000, 0.93),  # dominated by the baseline
    _experiment(6, 100, 0.50, latency=None),  # front; no latency: absent from latency plots
]


def test_tradeoff_scatter_marks_exactly_the_pareto_front() -> None:
    fig = T.tradeoff_scatter(POINTS, x_field="params_nonzero", x_title="non-zero parameters",
                             metric_name="accuracy", higher_is_better=True, baseline=POINTS[0])
    assert fig.layout.meta["pareto_ids"] == [6, 3, 1, 0]
    front = _trace(fig, "Pareto front")
    assert [row[0] for row in front.customdata] == [6, 3, 1, 0]
    assert list(front.x) == [100, 200, 500, 1000]
    assert front.line.shape == "hv"
    assert len(_trace(fig, "pruning").x) == len(POINTS)
    base = _trace(fig, "baseline (unpruned)")
    assert (list(base.x), list(base.y)) == ([1000.0], [0.95])
    assert base.marker.symbol == "star"
    assert fig.layout.xaxis.type == "linear"
    assert fig.layout.title.text == "accuracy vs non-zero parameters"


def test_tradeoff_scatter_lower_is_better_and_unmeasured_points() -> None:
    fig = T.tradeoff_scatter(POINTS, x_field="latency_ms", x_title="latency (ms)",
                             metric_name="mse", higher_is_better=False, baseline=None,
                             selected_id=2)
    # All latencies are 1.0 except id 6 (unmeasured): lowest metric wins.
    assert fig.layout.meta["pareto_ids"] == [3]
    assert len(_trace(fig, "pruning").x) == len(POINTS) - 1
    assert "baseline (unpruned)" not in [t.name for t in fig.data]
    assert [row[0] for row in _trace(fig, "selected").customdata] == [2]
    assert "without latency_ms" in fig.layout.title.subtitle.text


def test_tradeoff_scatter_refuses_a_field_that_is_not_a_cost() -> None:
    with pytest.raises(ValueError, match="not a cost"):
        T.tradeoff_scatter(POINTS, x_field="sparsity", x_title="s", metric_name="accuracy",
                           higher_is_better=True, baseline=None)


# -- sensitivity --------------------------------------------------------------------------------
LEVELS = (0.0, 0.3, 0.6, 0.9)


@functools.cache
def _mlp() -> Workbench:
    return open_workbench("sample:digits_mlp")


@functools.cache
def _sensitivity(granularity: str = "unstructured", stop_after: int | None = None
                 ) -> SensitivityResult:
    """A real analysis of digits_mlp (l1), or one cancelled after `stop_after` points."""
    bench = _mlp()
    run = SensitivityRun(bench.session, bench.eval_data, criterion="l1",
                         granularity=granularity, levels=LEVELS)
    cancel = threading.Event()
    for _ in run.points(cancel):
        if run.done == stop_after:
            cancel.set()
    return run.result()


def test_sensitivity_curves_draw_every_measured_point() -> None:
    result = _sensitivity()
    assert result.complete
    fig = R.sensitivity_curves(result)
    assert [t.name for t in fig.data] == ["fc1", "fc2", "fc3"]
    for item in result.items:
        trace, points = _trace(fig, item.label), result.curve(item.key)
        assert len(points) == len(LEVELS)
        np.testing.assert_allclose(trace.x, [100 * level for level in LEVELS])
        assert list(trace.y) == [p.metric for p in points]
        assert [row[0] for row in trace.customdata] == [p.loss for p in points]
        assert [row[1] for row in trace.customdata] == [p.structures_pruned for p in points]
        assert "loss" in trace.hovertemplate
    # 90% of fc3 (the output layer) costs accuracy: the curves are not flat.
    assert _trace(fig, "fc3").y[-1] < result.baseline.metric - 0.05
    (line,) = _shapes(fig, "line")
    assert line.y0 == line.y1 == result.baseline.metric
    assert line.line.dash == "dash"
    assert fig.layout.meta["baseline"] == result.baseline.metric
    assert fig.layout.meta["complete"] is True
    assert not fig.layout.title.subtitle.text


def test_sensitivity_heatmap_colours_each_cell_by_its_drop() -> None:
    result = _sensitivity()
    fig = R.sensitivity_heatmap(result)
    heat, missing = fig.data
    assert np.isnan(np.asarray(missing.z, dtype=float)).all()  # nothing greyed out
    assert list(heat.y) == ["fc1", "fc2", "fc3"]  # model order, top to bottom
    assert fig.layout.yaxis.autorange == "reversed"
    assert list(heat.x) == ["0%", "30%", "60%", "90%"]
    z = np.asarray(heat.z)
    assert z.shape == (3, len(LEVELS))
    for i, item in enumerate(result.items):
        for j, point in enumerate(result.curve(item.key)):
            assert z[i, j] == result.drop(point)
            assert heat.customdata[i][j][0] == point.metric
            assert heat.customdata[i][j][1] == point.loss
    assert np.all(z[:, 0] == 0.0)  # the unpruned column
    assert z[2, -1] > 0.05
    assert heat.zmid == 0.0


def test_sensitivity_figures_of_a_stopped_run_show_what_was_measured() -> None:
    result = _sensitivity(stop_after=6)  # fc1's 4 points and fc2's first 2
    assert not result.complete
    curves = R.sensitivity_curves(result)
    assert [t.name for t in curves.data] == ["fc1", "fc2"]
    assert len(_trace(curves, "fc2").y) == 2
    assert "incomplete: 2 of 3" in curves.layout.title.subtitle.text
    heat, missing = R.sensitivity_heatmap(result).data
    z = np.asarray(heat.z, dtype=float)
    np.testing.assert_array_equal(np.isnan(z), np.asarray(missing.z) == 1.0)
    assert np.isfinite(z).sum() == 6
    assert np.isfinite(z[0]).all()
    assert np.isfinite(z[1, :2]).all()
    assert np.isnan(z[1, 2:]).all()
    assert np.isnan(z[2]).all()


def test_sensitivity_figures_label_coupled_groups() -> None:
    result = _sensitivity("filter")
    labels = [item.label for item in result.items]
    assert labels == ["fc1 (+1 coupled)", "fc2 (+1 coupled)"]
    assert [t.name for t in R.sensitivity_curves(result).data] == labels
    assert list(R.sensitivity_heatmap(result).data[0].y) == labels


def test_sensitivity_heatmap_of_a_lower_is_better_metric() -> None:
    def point(item: str | None, level: float, mse: float) -> Point:
        return Point(item, level, mse, mse, 100, 1000, 400, 0)

    item = Item("dec", ("dec",), Granularity.UNSTRUCTURED, "weight")
    result = SensitivityResult(
        "m", "l2", Granularity.UNSTRUCTURED, (0.0, 0.5), "mse", False, point(None, 0.0, 0.01),
        [item], {"dec": [point("dec", 0.0, 0.01), point("dec", 0.5, 0.04)]}, True, 0.1)
    z = np.asarray(R.sensitivity_heatmap(result).data[0].z)
    np.testing.assert_allclose(z, [[0.0, 0.03]])  # a higher MSE is a positive drop
    curves = R.sensitivity_curves(result)
    assert list(curves.data[0].y) == [0.01, 0.04]
    assert curves.layout.yaxis.title.text == "mse (lower is better)"


# -- fine-tuning --------------------------------------------------------------------------------
def test_schedule_chart_draws_the_schedule_step_by_step() -> None:
    schedule = Schedule("poly", 0.9, initial=0.5, begin_step=10, end_step=60, frequency=7)
    curve, events = schedule.curve(80), schedule.events(80)
    fig = R.schedule_chart(curve, events=events)
    line = _trace(fig, "target sparsity")
    assert list(line.y) == curve
    assert list(line.x) == list(range(80))
    assert line.line.shape == "hv"
    marks = _trace(fig, "pruning event")
    assert list(zip(marks.x, marks.y, strict=True)) == events
    assert fig.layout.meta["events"] == [list(e) for e in events]
    assert fig.layout.shapes == ()
    assert "80 steps" in fig.layout.title.subtitle.text


def test_schedule_chart_shades_the_regularisation_steps() -> None:
    schedule = Schedule("oneshot", 0.7, begin_step=30)
    fig = R.schedule_chart(schedule.curve(50), events=schedule.events(50), regularize_until=30)
    (band,) = _shapes(fig, "rect")
    assert (band.x0, band.x1) == (0, 30)
    assert any(a.text == "regularisation" for a in fig.layout.annotations)
    assert list(_trace(fig, "target sparsity").y) == [0.0] * 30 + [0.7] * 20


def test_schedule_chart_refuses_what_is_not_a_schedule() -> None:
    with pytest.raises(ValueError, match="empty"):
        R.schedule_chart([])
    with pytest.raises(ValueError, match="fractions"):
        R.schedule_chart([0.5, 50.0])


def test_training_curves_draw_each_record_in_its_panel() -> None:
    records = [
        Record(0, 0.0, float("nan"), None, 0.0),
        Record(0, 0.0, float("nan"), None, 0.45, "pruned to 50%"),
        Record(10, 0.5, 0.8, None, 0.45),
        Record(20, 1.0, 0.6, 0.91, 0.45),
        Record(20, 1.0, float("nan"), None, 0.81, "pruned to 90%"),
        Record(30, 1.5, 0.7, None, 0.81),
        Record(40, 2.0, 0.5, 0.88, 0.81),
        Record(60, 3.0, 0.4, 0.87, 0.81, "stopped early: no better for 1 evaluations"),
    ]
    fig = R.training_curves(records, total_steps=80, metric_name="accuracy",
                            planned=[0.5] * 20 + [0.9] * 60, best_step=40)
    loss = _trace(fig, "training loss")
    assert (list(loss.x), list(loss.y)) == ([10, 20, 30, 40, 60], [0.8, 0.6, 0.7, 0.5, 0.4])
    metric = _trace(fig, "validation accuracy")
    assert (list(metric.x), list(metric.y)) == ([20, 40, 60], [0.91, 0.88, 0.87])
    assert (metric.xaxis, metric.yaxis) == ("x2", "y2")
    sparsity = _trace(fig, "sparsity (all parameters)")
    assert list(sparsity.y) == [r.sparsity for r in records]
    assert sparsity.yaxis == "y3"
    assert list(_trace(fig, "planned sparsity").y) == [0.5] * 20 + [0.9] * 60
    best = _trace(fig, "weights kept (best)")
    assert (list(best.x), list(best.y)) == ([40], [0.88])
    assert fig.layout.meta["pruned_at"] == [0, 20]
    dotted = [s.x0 for s in _shapes(fig, "line") if s.line.dash == "dot"]
    assert dotted == [0, 20]
    assert [s.x0 for s in _shapes(fig, "line") if s.line.dash == "dash"] == [60]  # the stop
    assert fig.layout.xaxis3.range == (-0.8, 81.6)  # every step, with room at the ends
    assert fig.layout.yaxis3.tickformat == ".0%"
    fig.to_json()


def test_training_curves_of_a_long_run_leave_out_what_would_clutter() -> None:
    records = [Record(s, s / 10, 0.5, 0.9 if s % 10 == 0 else None, min(0.9, s / 1000),
                      "pruned to x" if s % 20 == 0 else None) for s in range(0, 1000, 5)]
    fig = R.training_curves(records, total_steps=1000, metric_name="accuracy")
    assert len(fig.layout.meta["pruned_at"]) == 50
    assert not [s for s in _shapes(fig, "line") if s.line.dash == "dot"]  # too many lines
    metric = _trace(fig, "validation accuracy")
    assert metric.mode == "lines"
    assert len(metric.x) == 100


def test_training_curves_of_a_run_just_started() -> None:
    fig = R.training_curves([], total_steps=100, metric_name="mse")
    assert list(_trace(fig, "training loss").x) == []
    assert "weights kept (best)" not in [t.name for t in fig.data]


def test_tradeoff_scatter_joins_fine_tuned_points_to_their_twins() -> None:
    twin = _experiment(1, 200, 0.40)
    tuned = replace(_experiment(2, 200, 0.93), plan_key=twin.plan_key, weights="fine-tuned #1")
    alone = replace(_experiment(3, 100, 0.90), weights="fine-tuned #2")  # no twin measured
    fig = T.tradeoff_scatter([POINTS[0], twin, tuned, alone], x_field="params_nonzero",
                             x_title="params", metric_name="accuracy", higher_is_better=True,
                             baseline=POINTS[0])
    assert [row[0] for row in _trace(fig, "pruning").customdata] == [0, 1]
    diamonds = _trace(fig, "fine-tuned weights")
    assert [row[0] for row in diamonds.customdata] == [2, 3]
    assert diamonds.marker.symbol == "diamond"
    joined = _trace(fig, "pruned → fine-tuned")
    assert list(joined.x) == [200.0, 200.0, None]
    assert list(joined.y) == [0.40, 0.93, None]
    assert fig.layout.meta["pareto_ids"] == [3, 2, 0]  # fine-tuned points can be on the front


def test_tradeoff_scatter_marks_each_technique_and_fronts_over_all_of_them() -> None:
    int8 = replace(_experiment(7, 300, 0.945), technique="int8")
    both = replace(_experiment(8, 150, 0.93), technique="prune+int8")
    svd = replace(_experiment(9, 700, 0.60), technique="svd r=50%")
    pruned_svd = replace(_experiment(10, 400, 0.70), technique="prune+svd r=25%",
                         weights="fine-tuned #1")
    fig = T.tradeoff_scatter([*POINTS, int8, both, svd, pruned_svd], x_field="params_nonzero",
                             x_title="params", metric_name="accuracy", higher_is_better=True,
                             baseline=POINTS[0])
    names = [t.name for t in fig.data]
    assert names == ["pruning", "Pareto front", "int8 (unpruned)", "pruning + int8",
                     "low-rank SVD (unpruned)", "pruning + low-rank SVD",
                     "baseline (unpruned)"]
    symbols = {t.name: t.marker.symbol for t in fig.data if t.mode == "markers"}
    assert set(symbols["pruning"]) == {"circle"}  # every point final (whole set measured)
    symbols["pruning"] = "circle"
    assert symbols["int8 (unpruned)"] == "square"
    assert symbols["pruning + int8"] == "star-square"
    assert symbols["low-rank SVD (unpruned)"] == "triangle-up"
    assert symbols["pruning + low-rank SVD"] == "star-triangle-up"
    assert len(set(symbols.values())) == len(symbols)  # every technique its own marker
    assert [row[0] for row in _trace(fig, "pruning").customdata] == [p.id for p in POINTS]
    assert [row[0] for row in _trace(fig, "pruning + low-rank SVD").customdata] == [10]
    # a fine-tuned point of another technique is drawn as its technique, not a diamond
    assert "fine-tuned weights" not in names
    # one front over every technique: int8 beats pruned ones at their cost
    assert fig.layout.meta["pareto_ids"] == [6, 8, 7, 0]
    assert fig.layout.meta["techniques"]["8"] == "prune+int8"
    hover = _trace(fig, "pruning + int8")
    assert "technique: %{customdata[2]}" in hover.hovertemplate
    assert list(hover.customdata[0]) == [8, "plan 8", "prune+int8", "original",
                                         "whole evaluation set"]
    fig.to_json()


def test_tradeoff_scatter_draws_a_live_subsets_metric_open_until_the_whole_set_is_in() -> None:
    live = replace(POINTS[1], final=False, eval_samples=100)
    fig = T.tradeoff_scatter([POINTS[0], live, POINTS[2]], x_field="params_nonzero",
                             x_title="params", metric_name="accuracy", higher_is_better=True,
                             baseline=POINTS[0])
    pruning = _trace(fig, "pruning")
    assert list(pruning.marker.symbol) == ["circle", "circle-open", "circle"]
    assert pruning.customdata[1][4] == "live subset of 100 (whole set not measured yet)"


def test_every_technique_family_has_a_style() -> None:
    from pruneviz.workflows.experiments import TECHNIQUES

    assert tuple(T.TECHNIQUE_STYLES) == TECHNIQUES
    assert len({style[1] for style in T.TECHNIQUE_STYLES.values()}) == len(TECHNIQUES)


# -- common look --------------------------------------------------------------------------------
BUILDERS: dict[str, Callable[[], go.Figure]] = {
    "histogram": lambda: F.weight_histogram(np.arange(-5.0, 5.0), np.arange(10) > 3, layer="l",
                                            threshold=1.0),
    "scores": lambda: F.score_bars(np.arange(10.0), 3, layer="l", criterion="l1",
                                   unit="filter"),
    "scores_big": lambda: F.score_bars(np.arange(5000.0), 3, layer="l", criterion="l1",
                                       unit="weight"),
    "overview": lambda: F.layer_overview(["a", "b"], [10, 20], [5, 20], [0.5, 0.5]),
    "kernels": lambda: F.kernel_grid(np.ones((4, 3, 3)), np.ones(4, dtype=bool), layer="l"),
    "disagreement": lambda: F.criteria_disagreement(MASKS, layer="l", unit="filter"),
    "outlier_ratios": lambda: F.outlier_ratio_bars(["a", "b"], [0.01, 0.0], [0.6, 0.8]),
    "tradeoff": lambda: T.tradeoff_scatter(POINTS, x_field="params_nonzero", x_title="params",
                                           metric_name="accuracy", higher_is_better=True,
                                           baseline=POINTS[0]),
    "sensitivity_curves": lambda: R.sensitivity_curves(_sensitivity()),
    "sensitivity_heatmap": lambda: R.sensitivity_heatmap(_sensitivity()),
    "schedule": lambda: R.schedule_chart(Schedule("agp", 0.8, end_step=50, frequency=10)
                                         .curve(60)),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_figure_has_titles_and_the_shared_look(name: str) -> None:
    fig = BUILDERS[name]()
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text
    assert 300 <= fig.layout.height <= 400
    assert fig.layout.template.layout.plot_bgcolor == "white"  # plotly_white
    fig.to_json()  # serialisable, as the app will send it


def test_best_form_scatter_colours_points_by_their_form() -> None:
    from pruneviz.output.tradeoff_figures import best_form_scatter

    fig = best_form_scatter(["a", "b", "c"], [1.0, 2.0, 0.5], [0.9, 0.95, 0.8],
                            ["masked", "slimmed", "slimmed"], metric_name="accuracy")
    by_name = {trace.name: trace for trace in fig.data}
    assert set(by_name) == {"masked (no form measurably faster)",
                            "slimmed (measurably faster)"}
    assert list(by_name["slimmed (measurably faster)"].x) == [2.0, 0.5]
    assert fig.layout.title.text
    assert fig.layout.xaxis.title.text
    assert fig.layout.yaxis.title.text
    with pytest.raises(ValueError, match="same length"):
        best_form_scatter(["a"], [1.0, 2.0], [0.9], ["masked"], metric_name="accuracy")
