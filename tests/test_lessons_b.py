"""Lessons 4-6 (criteria, recovery, budgets): their measurements against the library's own,
and the Learn page walked through each lesson in English and in Chinese."""

from __future__ import annotations

import re
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from pruneviz import i18n
from pruneviz.app.keys import (
    LESSON_KEY,
    LESSON_STATE_KEY,
    LESSONS_DONE_KEY,
    MODEL_KEY,
    lesson_widget_key,
)
from pruneviz.app.lessons.frame import Revealed
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.i18n import use_language
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.workflows.allocation import Budget, BudgetKind
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons import budgets as budget_lesson
from pruneviz.workflows.lessons import criteria as criteria_lesson
from pruneviz.workflows.lessons import recovery as recovery_lesson
from pruneviz.workflows.lessons.copies import lesson_bench
from tests.fixtures.apptest import APP
from tests.fixtures.i18n import english_left

CHINESE = "zh-CN"


# -- the measurements ----------------------------------------------------------------------
@pytest.mark.slow
def test_criteria_measure_what_the_library_measures() -> None:
    layer = criteria_lesson.conv_layers(TEACHING_SAMPLE)[0]
    result = criteria_lesson.compare_criteria(TEACHING_SAMPLE, layer, 0.5)
    bench = lesson_bench(TEACHING_SAMPLE)
    session = bench.session
    assert result.baseline == evaluate(session.model, bench.eval_data).metric
    for run in result.runs:
        session.apply(session.stamp(Plan({layer: LayerPlan(Granularity.FILTER, run.criterion,
                                                           sparsity=0.5)})))
        assert run.accuracy == evaluate(session.model, bench.eval_data).metric
        assert len(run.removed) == session.result(layer).structures_pruned == result.filters // 2
        weight = session.model.get_submodule(layer).weight.detach()  # type: ignore[operator]
        zero = [i for i in range(weight.shape[0]) if not weight[i].any()]
        assert tuple(zero) == run.removed
    l1, taylor = set(result.run("l1").removed), set(result.run("taylor").removed)
    shared = result.overlap("l1", "taylor")
    assert shared.shared == len(l1 & taylor)
    assert shared.jaccard == len(l1 & taylor) / len(l1 | taylor)
    assert criteria_lesson.compare_criteria(TEACHING_SAMPLE, layer, 0.5) == result


@pytest.mark.slow
def test_collapse_and_recovery_measure_what_the_library_measures() -> None:
    result = recovery_lesson.collapse(TEACHING_SAMPLE)
    bench = lesson_bench(TEACHING_SAMPLE)
    session = bench.session
    assert result.baseline == evaluate(session.model, bench.eval_data).metric
    for g in ("unstructured", "filter"):
        session.apply(session.uniform_plan(0.9, g, "l1")[0])
        assert result.accuracy(g) == evaluate(session.model, bench.eval_data).metric
        assert result.removed(g) == count_params(session.model).sparsity
    assert result.granularity == "unstructured"
    assert result.accuracy(result.granularity) < result.baseline - 0.2  # it collapses
    oneshot = recovery_lesson.retrain_oneshot(TEACHING_SAMPLE, result.granularity)
    assert oneshot.before == result.accuracy(result.granularity)
    assert oneshot.after > oneshot.before  # it comes back
    assert len(oneshot.epochs) == len(oneshot.validation) >= 1
    assert oneshot.weights_removed == pytest.approx(result.removed(result.granularity))
    assert recovery_lesson.retrain_oneshot(TEACHING_SAMPLE, result.granularity) == oneshot
    gradual = recovery_lesson.retrain_gradual(TEACHING_SAMPLE, result.granularity)
    assert gradual.before == result.baseline
    assert gradual.sparsities[0] < gradual.sparsities[-1]  # the sparsity rose while training
    assert gradual.steps == oneshot.steps  # the same budget


@pytest.mark.slow
def test_budgets_measure_what_the_library_measures() -> None:
    result = budget_lesson.compare_budgets(TEACHING_SAMPLE, "macs", 0.5)
    bench = lesson_bench(TEACHING_SAMPLE)
    session = bench.session
    for plan in (result.uniform, result.guided):
        assert plan.met
        assert plan.macs_kept <= 0.5 + 1e-9
        entries = {n: LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=s)
                   for n, s in plan.layers if s > 0}
        session.apply(session.stamp(Plan(entries)))
        assert plan.accuracy == pytest.approx(evaluate(session.model, bench.eval_data).metric,
                                              abs=1 / len(bench.eval_data))
    uniform = [s for _n, s in result.uniform.layers]
    assert max(uniform) - min(uniform) < 0.02  # the same share everywhere
    assert budget_lesson.budget_for("weights", 0.3) == Budget(BudgetKind.SPARSITY, 0.7)
    baseline, curves = budget_lesson.layer_sensitivity(TEACHING_SAMPLE)
    assert baseline == result.baseline
    assert curves == result.curves


# -- the page ------------------------------------------------------------------------------
def _names() -> list[str]:
    # model and layer names, criterion ids, and the names of methods and papers
    return ["digits_cnn", "digits_teach", "Digits", "CNN", "autoencoder", "l1", "AGP",
            "Jaccard", "Taylor", "Network", "Slimming",
            *budget_lesson.layer_names(TEACHING_SAMPLE)]


def _check(at: AppTest, lang: str) -> None:
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    if lang == CHINESE:
        assert english_left(at, _names()) == {}
        assert sorted(m for lg, m in i18n.MISSING if lg == CHINESE) == []


def _text(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [m.value for m in at.metric]
                     + [c.value for c in at.caption])


def _press(at: AppTest, lesson: str, step: str) -> None:
    at.button(key=lesson_widget_key(lesson, f"{step}_run")).click().run()


def _state(at: AppTest, lesson: str, step: str) -> object:
    done = at.session_state["pv_lessons"][lesson][step]
    return done.result


def _open(lesson: str, lang: str) -> AppTest:
    """The Learn page (the app's first) opened on `lesson` by its ?lesson= link."""
    i18n.MISSING.clear()
    at = AppTest.from_file(APP, default_timeout=300)
    at.session_state[MODEL_KEY] = TEACHING_SAMPLE
    at.query_params["lang"] = lang
    at.query_params["lesson"] = str(NUMBERS[lesson])
    at.run()
    at.switch_page("app_pages/learn.py").run()
    assert at.session_state[LESSON_KEY] == lesson
    _check(at, lang)
    return at


def _step(at: AppTest, lesson: str, step: str, lang: str) -> object:
    """Press the step's button; the result it kept."""
    at.button(key=lesson_widget_key(lesson, f"{step}_run")).click().run()
    _check(at, lang)
    done = revealed_in(at, lesson, step)
    return done.result


def revealed_in(at: AppTest, lesson: str, step: str) -> Revealed[Any, Any]:
    done: Revealed[Any, Any] = at.session_state[LESSON_STATE_KEY][lesson][step]
    return done


def _shown(at: AppTest, value: float) -> bool:
    """A percentage (a 0-1 fraction) is on the page, as the lesson prints it."""
    return f"{100 * value:.1f}" in _text(at)


def _choose(at: AppTest, key: str, value: str, lang: str) -> None:
    """Pick an option of a segmented control. AppTest finds the option by the control's
    format_func, called here in the test: in the tab's language, so it finds it."""
    with use_language(lang):
        at.segmented_control(key=key).set_value(value).run()
    assert at.segmented_control(key=key).value == value


def _reset(at: AppTest, lesson: str) -> None:
    at.button(key=f"pv_lesson_reset_{lesson}").click().run()
    assert not at.session_state[LESSON_STATE_KEY].get(lesson)
    assert lesson not in at.session_state[LESSONS_DONE_KEY]
    assert at.button(key=lesson_widget_key(lesson, f"{FIRST[lesson]}_run"))


NUMBERS = {"criteria": 4, "recovery": 5, "budgets": 6}
FIRST = {"criteria": "overlap", "recovery": "collapse", "budgets": "robust"}


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", CHINESE])
def test_criteria_lesson(lang: str) -> None:
    at = _open("criteria", lang)
    layer = str(at.selectbox(key=lesson_widget_key("criteria", "layer")).value)
    at.slider(key=lesson_widget_key("criteria", f"overlap_predict_{layer}")).set_value(3).run()
    result = _step(at, "criteria", "overlap", lang)
    assert result == criteria_lesson.compare_criteria(TEACHING_SAMPLE, layer, 0.5)
    assert isinstance(result, criteria_lesson.CriteriaResult)
    assert revealed_in(at, "criteria", "overlap").prediction == 3
    shared = result.overlap("l1", "taylor")
    expected = sorted([shared.shared, len(result.run("l1").removed)])
    assert expected in [sorted(int(n) for n in re.findall(r"\d+", m.value)) for m in at.metric]
    _choose(at, lesson_widget_key("criteria", "accuracy_predict"), "random", lang)
    _step(at, "criteria", "accuracy", lang)
    for run in result.runs:
        assert _shown(at, run.accuracy)
    assert "criteria" in at.session_state[LESSONS_DONE_KEY]
    _reset(at, "criteria")


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", CHINESE])
def test_recovery_lesson(lang: str) -> None:
    at = _open("recovery", lang)
    at.slider(key=lesson_widget_key("recovery", "collapse_predict")).set_value(40).run()
    pruned = _step(at, "recovery", "collapse", lang)
    assert pruned == recovery_lesson.collapse(TEACHING_SAMPLE)
    assert isinstance(pruned, recovery_lesson.Collapse)
    assert _shown(at, pruned.accuracy("unstructured"))
    assert _shown(at, pruned.accuracy("filter"))
    at.slider(key=lesson_widget_key("recovery", "retrain_predict")).set_value(90).run()
    oneshot = _step(at, "recovery", "retrain", lang)
    assert oneshot == recovery_lesson.retrain_oneshot(TEACHING_SAMPLE, pruned.granularity)
    assert isinstance(oneshot, recovery_lesson.Retrained)
    assert _shown(at, oneshot.after)
    _choose(at, lesson_widget_key("recovery", "gradual_predict"), "oneshot", lang)
    gradual = _step(at, "recovery", "gradual", lang)
    assert gradual == recovery_lesson.retrain_gradual(TEACHING_SAMPLE, pruned.granularity)
    assert isinstance(gradual, recovery_lesson.Retrained)
    assert _shown(at, gradual.after)
    assert "recovery" in at.session_state[LESSONS_DONE_KEY]
    _reset(at, "recovery")


@pytest.mark.slow
@pytest.mark.parametrize("lang", ["en", CHINESE])
def test_budgets_lesson(lang: str) -> None:
    at = _open("budgets", lang)
    layers = budget_lesson.layer_names(TEACHING_SAMPLE)
    _choose(at, lesson_widget_key("budgets", "robust_predict"), layers[-1], lang)
    robust = _step(at, "budgets", "robust", lang)
    assert isinstance(robust, tuple)
    baseline, curves = robust
    assert (baseline, curves) == budget_lesson.layer_sensitivity(TEACHING_SAMPLE)
    assert _shown(at, baseline)
    _choose(at, lesson_widget_key("budgets", "kind"), "weights", lang)
    at.select_slider(key=lesson_widget_key("budgets", "kept")).set_value(30).run()
    _choose(at, lesson_widget_key("budgets", "budget_predict"), "sensitivity", lang)
    result = _step(at, "budgets", "budget", lang)
    assert result == budget_lesson.compare_budgets(TEACHING_SAMPLE, "weights", 0.3)
    assert isinstance(result, budget_lesson.BudgetResult)
    assert _shown(at, result.uniform.accuracy)
    assert _shown(at, result.guided.accuracy)
    assert f"{result.guided.weights_kept:.1%}" in _text(at)
    assert "budgets" in at.session_state[LESSONS_DONE_KEY]
    _reset(at, "budgets")


# -- the charts ----------------------------------------------------------------------------
def test_the_charts_draw_what_they_are_given() -> None:
    from pruneviz.output.lessons.budgets import plan_bars, sensitivity_lines
    from pruneviz.output.lessons.criteria import criteria_grid
    from pruneviz.output.lessons.recovery import recovery_chart, training_curves

    grid = criteria_grid(["l1", "random"], [[3.0, 1.0, 2.0, 0.5], [0.1, 0.2, 0.3, 0.4]],
                         [[1, 3], [0, 1]], "conv1")
    z = grid.data[0].z
    assert [i for i, v in enumerate(z[0]) if v != v] == [1, 3]  # removed: no colour
    assert z[0][0] == 1.0  # the highest score, the darkest
    chart = recovery_chart(0.99, 0.2, 0.91, 0.82)
    assert list(chart.data[0].y) == pytest.approx([99.0, 20.0, 91.0])
    assert list(chart.data[1].y) == pytest.approx([99.0, 82.0])
    assert [round(v, 2) for v in chart.data[2].y] == [93.77, 32.54, 93.78]  # Network Slimming
    assert len(chart.data) == 4
    curves = training_curves([("one-shot", [1.0, 2.0], [0.5, 0.9])])
    assert list(curves.data[0].y) == pytest.approx([50.0, 90.0])
    bars = plan_bars(["a", "b"], [0.5, 0.5], [0.2, 0.8])
    assert list(bars.data[1].y) == pytest.approx([20.0, 80.0])
    lines = sensitivity_lines([("a", [0.0, 0.5], [0.99, 0.9])])
    assert list(lines.data[0].x) == pytest.approx([0.0, 50.0])
