"""The Sensitivity page's accuracy floor through Streamlit's AppTest: the box runs the search,
draws every plan it measured with the floor and the chosen plan, records the chosen plan
as an experiment, and makes it the tab's plan on request."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures import apptest
from fixtures.apptest import array, bench_of, figure, rerun_while_running, workspace_of
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import BENCH_ID_KEY, FLOOR_RESULT_KEY, WORKERS_KEY
from pruneviz.measure.metrics import evaluate
from pruneviz.workflows.floor import FloorResult, Status

PAGE = "app_pages/sensitivity.py"
WAIT = 20.0  # seconds an analysis of a digits sample may take, at most


def analysed(model: str) -> AppTest:
    """The Sensitivity page on `model`, with its analysis run to the end."""
    at = apptest.start(model, PAGE)
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    worker = at.session_state[WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    rerun_while_running(at, worker, WAIT)
    return at


def found_of(at: AppTest) -> FloorResult:
    found = at.session_state[FLOOR_RESULT_KEY]["found"]
    assert isinstance(found, FloorResult)
    return found


def test_the_floor_box_finds_records_draws_and_applies_a_plan() -> None:
    at = analysed("sample:digits_mlp")
    box = at.number_input(key="pv_floor_value")
    assert box.label == "Keep accuracy at least (%)"
    box.set_value(95.0)
    at.selectbox(key="pv_floor_method").set_value("uniform")
    at.button(key="pv_floor_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    found = found_of(at)
    chosen = found.chosen
    assert chosen is not None
    assert found.floor.value == pytest.approx(0.95)
    assert found.method.value == "uniform"
    assert chosen.metric >= 0.95
    # what it says: success, or a warning when the margin is within noise
    said = [m.value for m in [*at.success, *at.warning]]
    assert any(f"{chosen.sparsity:.1%} sparsity" in s and "inside the floor" in s for s in said)
    # the chart: every measured plan, the floor, the chosen one
    fig = figure(at, "floor_chart")
    assert fig.layout.meta["floor"] == pytest.approx(0.95)
    xs = [p.sparsity * 100 for p in found.curve]
    np.testing.assert_allclose(fig.layout.meta["x"], xs)
    assert fig.layout.meta["chosen"] == pytest.approx(chosen.sparsity * 100)
    star = next(t for t in fig.data if t.name == "chosen")
    np.testing.assert_allclose(array(star.y), [chosen.metric])
    assert fig.layout.shapes[0].y0 == pytest.approx(0.95)
    # recorded as an experiment, measured with latency; the tab's plan is untouched
    space = workspace_of(at)
    experiment = at.session_state[FLOOR_RESULT_KEY]["experiment"]
    assert experiment is not None
    logged = space.log.get(experiment.id)
    assert logged.metric == pytest.approx(chosen.metric)
    assert logged.sparsity == pytest.approx(chosen.sparsity)
    assert logged.latency_ms is not None
    assert "accuracy >= 0.95" in logged.label
    bench = bench_of(at)
    assert bench.session.plan.is_empty
    # applied on request: the tab's plan is the chosen one, and meets the floor measured again
    at.button(key="pv_floor_apply").click().run()
    assert not at.exception, at.exception
    assert bench.session.plan.key() == chosen.plan.key()
    assert evaluate(bench.model, bench.eval_data).metric >= 0.95
    assert any("Prune page" in link.label for link in at.get("page_link"))


def test_a_lower_is_better_metric_gets_its_own_words_and_direction() -> None:
    at = analysed("sample:digits_autoencoder")
    box = at.number_input(key="pv_floor_value")
    assert box.label == "Keep mse at most (lower is better)"
    base = bench_of(at).baseline.evaluation.metric
    assert box.value == pytest.approx(float(f"{2 * base:.3g}"))
    at.selectbox(key="pv_floor_method").set_value("global")
    at.button(key="pv_floor_run").click().run()
    assert not at.exception, at.exception
    found = found_of(at)
    assert not found.floor.higher_is_better
    assert found.chosen is not None
    assert found.chosen.metric <= box.value


def test_an_unreachable_floor_says_so() -> None:
    at = analysed("sample:digits_mlp")
    at.number_input(key="pv_floor_value").set_value(99.9)
    at.selectbox(key="pv_floor_method").set_value("global")
    at.button(key="pv_floor_run").click().run()
    assert not at.exception, at.exception
    found = found_of(at)
    assert found.status is Status.NONE
    assert any("no pruning by global keeps accuracy >= 0.999" in w.value for w in at.warning)
    assert at.session_state[FLOOR_RESULT_KEY]["experiment"] is None
    assert not [b for b in at.button if b.key == "pv_floor_apply"]
    figure(at, "floor_chart")  # the curve it measured is still drawn
