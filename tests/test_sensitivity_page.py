"""The Sensitivity page through Streamlit's AppTest: the analysis runs in a background
thread to the end (or until cancelled), budgets are compared and recorded, and the
sensitivity plan can be proposed to the Prune page."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
from fixtures import apptest
from fixtures.apptest import array, bench_of, figure, rerun_while_running
from fixtures.jobs import Gate, wait_until
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import (
    BENCH_ID_KEY,
    COMPARISON_KEY,
    MODEL_KEY,
    SUBSET_KEY,
    WORKERS_KEY,
    WORKSPACE_KEY,
    widget_key,
)
from pruneviz.app.worker import SensitivityWorker
from pruneviz.workflows.allocation import Budget, plan_for_budget
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS, SensitivityResult, SensitivityRun

PAGE = "app_pages/sensitivity.py"
MODEL = "sample:digits_mlp"
WAIT = 20.0  # seconds an analysis of digits_mlp may take, at most


def start() -> AppTest:
    return apptest.start(MODEL, PAGE)


def worker_of(at: AppTest) -> SensitivityWorker:
    worker = at.session_state[WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, SensitivityWorker)
    return worker




def run_until_done(at: AppTest) -> SensitivityResult:
    """Re-run the app, as the page's polling does, until the worker has stopped."""
    worker = worker_of(at)
    rerun_while_running(at, worker, WAIT)
    result = worker.snapshot().result
    assert result is not None
    return result


def analyse(at: AppTest) -> SensitivityResult:
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return run_until_done(at)






def table(at: AppTest, column: str) -> Any:
    """The one table with `column`."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def progress_text(at: AppTest) -> str:
    (bar,) = at.get("progress")
    return str(bar.proto.text)


def test_analysis_runs_in_the_background_to_the_end() -> None:
    at = start()
    assert at.info, "the page says what to do before the first run"
    result = analyse(at)
    worker = worker_of(at)
    assert result.complete
    assert [item.key for item in result.items] == ["fc1", "fc2", "fc3"]
    assert result.levels == DEFAULT_LEVELS
    assert progress_text(at).startswith("33 of 33 points")
    # The tab's own session was never borrowed: its plan is still the unpruned one.
    assert bench_of(at).session.plan.is_empty

    curves = figure(at, "sens_curves")
    assert [t.name for t in curves.data] == ["fc1", "fc2", "fc3"]
    for trace, item in zip(curves.data, result.items, strict=True):
        points = result.curve(item.key)
        assert list(trace.y) == [p.metric for p in points]
        assert list(trace.x) == pytest.approx([p.level * 100 for p in points])
    heatmap = figure(at, "sens_heatmap")
    assert list(heatmap.data[0].y) == ["fc1", "fc2", "fc3"]
    drops = [[result.drop(p) for p in result.curve(item.key)] for item in result.items]
    np.testing.assert_array_equal(array(heatmap.data[0].z), np.array(drops))

    ranking = table(at, "layer or group")
    assert len(ranking) == len(result.items)
    assert list(ranking["layer or group"]) == [r["label"] for r in result.ranking()]

    # The same settings again: every point comes from the tab's cache, nothing new.
    cached = len(worker.cache.points)
    again = analyse(at)
    assert len(worker.cache.points) == cached
    assert again.points == result.points


def test_cancel_stops_the_run_and_keeps_what_was_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    measure = SensitivityRun._measure

    def slow(self: SensitivityRun, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.1)  # digits_mlp is measured too fast to be caught running
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(SensitivityRun, "_measure", slow)
    at = start()
    at.button(key="pv_sens_run").click().run()
    worker = worker_of(at)
    assert worker.running
    assert at.button(key="pv_sens_run").disabled
    at.button(key="pv_sens_cancel").click().run()
    assert not at.exception, at.exception
    result = run_until_done(at)
    progress = worker.snapshot()
    assert not result.complete
    assert progress.done < progress.total
    assert sum(len(points) for points in result.points.values()) == progress.done
    assert "stopped" in progress_text(at)
    assert any("Cancelled" in w.value for w in at.warning)
    assert not at.button(key="pv_sens_run").disabled


def test_compare_records_four_measured_experiments() -> None:
    at = start()
    analyse(at)
    at.button(key="pv_sens_compare").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    log = list(at.session_state[WORKSPACE_KEY].log)
    labels = [e.label for e in log[1:]]
    assert len(labels) == 4
    for label, method in zip(labels, ["uniform", "global", "sensitivity", "owl"],
                             strict=True):
        assert label.startswith(f"{method} 80% sparsity"), label
    assert all(e.latency_ms is not None for e in log[1:]), "on the Trade-offs latency chart"
    assert all(e.sparsity == pytest.approx(0.8, abs=0.005) for e in log[1:])
    # Comparing does not change the plan the Prune page works on.
    assert bench_of(at).session.plan.is_empty

    shown = table(at, "met")
    assert list(shown["method"]) == ["uniform", "global", "sensitivity", "owl"]
    assert list(shown["met"]) == ["yes", "yes", "yes", "yes"]
    measured = [f"{e.metric:.2%}" for e in log[1:]]
    assert list(shown["accuracy (measured)"]) == measured
    predicted = list(shown["accuracy (predicted)"])
    assert predicted[:2] == ["-", "-"]
    assert predicted[3] == "-"
    outcome = at.session_state[COMPARISON_KEY]["rows"][2].outcome
    assert outcome.predicted_metric is not None
    assert predicted[2] == f"{outcome.predicted_metric:.2%}"
    # beside the owl row: each layer's outlier ratio, and the sparsity owl gave it
    owl = at.session_state[COMPARISON_KEY]["rows"][3].outcome
    assert owl.outlier_ratios is not None
    chart = figure(at, "sens_owl")
    assert list(chart.data[0].x) == list(owl.outlier_ratios)
    assert array(chart.data[0].y) == pytest.approx(
        [100 * r for r in owl.outlier_ratios.values()])
    assert array(chart.data[1].y) == pytest.approx(
        [100 * (owl.plan.layers[n].sparsity or 0.0) for n in owl.outlier_ratios])

    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception
    shown = list(at.dataframe[-1].value["label"])
    assert shown[1:] == labels


def test_propose_applies_the_sensitivity_allocation() -> None:
    at = start()
    result = analyse(at)
    at.button(key="pv_sens_propose").click().run()
    assert not at.exception, at.exception
    assert any("Prune page" in s.value for s in at.success)
    bench = bench_of(at)
    expected = plan_for_budget(bench, Budget("sparsity", 0.8), "sensitivity",
                               sensitivity=result, cap=0.95).plan
    assert not expected.is_empty
    assert bench.session.plan.key() == expected.key()
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, at.exception
    for name, entry in expected.layers.items():
        assert entry.sparsity is not None
        assert at.slider(key=widget_key("sp", name)).value == round(entry.sparsity * 100)
    # opening the Prune page keeps the proposed amounts exact (not rounded to the sliders')
    assert bench.session.plan.key() == expected.key()
    name = next(iter(expected.layers))
    at.slider(key=widget_key("sp", name)).set_value(10).run()
    assert not at.exception, at.exception
    moved = bench.session.plan.layers[name]
    assert moved.sparsity == 0.1  # a moved slider is its whole percent


def test_a_criterion_the_model_cannot_use_shows_an_error() -> None:
    at = start()
    at.selectbox(key="pv_sens_gran").set_value("filter").run()
    at.selectbox(key="pv_sens_crit").set_value("bn_scale").run()
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    assert any("BatchNorm" in e.value for e in at.error), [e.value for e in at.error]
    assert not worker_of(at).running
    assert worker_of(at).snapshot().result is None
    assert not at.get("plotly_chart")


# -- a fast first pass on the live subset, then the whole evaluation set -------------------------
SUBSET = 100  # of the FULL digits test samples
FULL = 450


def start_on_subset() -> AppTest:
    """The page on MODEL, its live updates measuring SUBSET samples."""
    at = AppTest.from_file(apptest.APP, default_timeout=60)
    at.session_state[MODEL_KEY] = MODEL
    at.session_state[SUBSET_KEY] = {MODEL: SUBSET}
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert len(bench_of(at).eval_data) == SUBSET
    return at


def hold(monkeypatch: pytest.MonkeyPatch) -> dict[int, Gate]:
    """A gate per pass (by its samples): each measurement waits until the test opens it."""
    gates = {SUBSET: Gate(), FULL: Gate()}
    measure = SensitivityRun._measure

    def held(self: SensitivityRun, *args: Any, **kwargs: Any) -> Any:
        gates[len(self.data)].wait()
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(SensitivityRun, "_measure", held)
    return gates


def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def test_a_first_pass_on_the_subset_is_refined_on_all_samples(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gates = hold(monkeypatch)
    at = start_on_subset()
    assert f"{SUBSET} held-out samples for a fast first pass" in captions(at)
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    worker = worker_of(at)
    assert progress_text(at) == f"first pass on {SUBSET} samples: 0 of 33 points — estimating…"

    gates[SUBSET].open()
    wait_until(lambda: worker.snapshot().refining, "the refinement starts")
    at.run()
    assert not at.exception, at.exception
    assert progress_text(at) == f"refining on all {FULL} samples: 0 of 33 points — estimating…"
    first = worker.snapshot().result
    assert first is not None
    assert first.complete
    assert first.samples == SUBSET
    assert f"first pass, measured on {SUBSET} of the {FULL} samples" in captions(at)
    assert any("being refined" in i.value for i in at.info)
    curves = figure(at, "sens_curves")  # the first pass's curves, shown while refining
    assert list(curves.data[0].y) == [p.metric for p in first.curve("fc1")]
    assert at.button(key="pv_sens_compare")  # a budget can be spent on them already

    gates[FULL].open()
    refined = run_until_done(at)
    assert refined.complete
    assert refined.samples == FULL
    assert progress_text(at) == f"refined on all {FULL} samples: 33 of 33 points — done"
    assert f"measured on all {FULL} evaluation samples" in captions(at)
    assert not any("refine" in i.value for i in at.info)
    curves = figure(at, "sens_curves")
    assert list(curves.data[0].y) == [p.metric for p in refined.curve("fc1")]
    assert refined.points != first.points
    direct = SensitivityRun(bench_of(at).session, bench_of(at).full_data).run()
    assert refined.points == direct.points


def test_cancel_while_refining_keeps_the_first_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    gates = hold(monkeypatch)
    gates[SUBSET].open()
    at = start_on_subset()
    at.button(key="pv_sens_run").click().run()
    worker = worker_of(at)
    wait_until(lambda: gates[FULL].waiting == 1, "the refinement waits to measure")
    assert worker.snapshot().refining
    at.run()
    at.button(key="pv_sens_cancel").click().run()
    assert not at.exception, at.exception
    gates[FULL].open()
    result = run_until_done(at)
    assert result.complete
    assert result.samples == SUBSET
    assert progress_text(at) == f"refining on all {FULL} samples: 0 of 33 points — stopped"
    assert any(f"refinement on all {FULL} samples was stopped" in i.value for i in at.info)
    assert not any("Cancelled" in w.value for w in at.warning)  # the first pass is complete
    assert at.button(key="pv_sens_compare")
