"""Lessons 1-3 (weights, masking, layers): their measurements are the library's own, and
the Learn page walks each of them, in English and in Chinese, showing those numbers."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import LESSON_KEY, LESSON_STATE_KEY, LESSONS_DONE_KEY, MODEL_KEY
from pruneviz.app.lessons import LESSONS
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.data.samples import SAMPLES
from pruneviz.i18n import CHINESE, MISSING, use_language
from pruneviz.measure.forms import measure_forms
from pruneviz.measure.metrics import evaluate
from pruneviz.measure.storage import sparse_size
from pruneviz.output.lessons.weights import MAX_CELLS
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.layers import layer_sensitivity
from pruneviz.workflows.lessons.masking import masking_vs_removing, sparse_file
from pruneviz.workflows.lessons.weights import layer_names, model_curve, zero_layer
from pruneviz.workflows.workbench import Workbench, open_workbench
from tests.fixtures.apptest import APP, figure
from tests.fixtures.i18n import english_left


@pytest.fixture(scope="module")
def bench() -> Workbench:
    return open_workbench(TEACHING_SAMPLE)


def _accuracy(bench: Workbench, plan: Plan) -> float:
    with bench.applied(bench.session.stamp(plan)):
        return evaluate(bench.model, bench.full_data).metric


# -- (a) the measurements are the library's ------------------------------------------------
@pytest.mark.slow
def test_zeroing_one_layer_is_evaluate_of_that_plan(bench: Workbench) -> None:
    layer = layer_names(TEACHING_SAMPLE)[0]
    result = zero_layer(TEACHING_SAMPLE, layer, 0.8)
    plan = Plan().with_layer(layer, LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.8))
    assert result.accuracy == _accuracy(bench, plan)
    assert result.baseline_accuracy == evaluate(bench.pristine, bench.full_data).metric
    with bench.applied(bench.session.stamp(plan)):
        weight = bench.session.layer_by_name[layer].weight
        zeros = int((dict(bench.model.named_parameters())[weight] == 0).sum())
    assert result.zeroed == zeros == round(0.8 * result.layer_weights)
    dropped, kept = np.abs(result.values[~result.kept]), np.abs(result.values[result.kept])
    assert dropped.max() == result.threshold <= kept.min()
    assert result.share_of_model == zeros / sum(p.numel() for p in bench.pristine.parameters())
    again = zero_layer(TEACHING_SAMPLE, layer, 0.8)
    assert again.accuracy == result.accuracy
    assert (again.kept == result.kept).all()


@pytest.mark.slow
def test_the_model_curve_is_evaluate_of_uniform_plans(bench: Workbench) -> None:
    levels = (0.0, 1 / 3, 0.9)
    curve = model_curve(TEACHING_SAMPLE, levels)
    for level, accuracy, removed in zip(levels, curve.accuracies, curve.removed, strict=True):
        plan, _ = bench.session.uniform_plan(level, Granularity.UNSTRUCTURED, "l1")
        assert accuracy == _accuracy(bench, plan)
        assert removed == pytest.approx(level, abs=0.01)
    assert curve.accuracies[0] > curve.accuracies[-1]
    assert model_curve(TEACHING_SAMPLE, levels).accuracies == curve.accuracies


@pytest.mark.slow
def test_masked_and_slimmed_forms_are_the_library_forms(bench: Workbench) -> None:
    result = masking_vs_removing(TEACHING_SAMPLE, 0.5, runs=6)
    session = bench.session
    plan, _ = session.uniform_plan(0.5, Granularity.FILTER, "l1")
    with bench.applied(plan):
        forms = measure_forms(session, bench.full_data.x[:64], latency=False)
        masked_accuracy = evaluate(bench.model, bench.full_data).metric
        state = bench.model.state_dict()
        assert sparse_file(TEACHING_SAMPLE).sparse_bytes == sparse_size(state)
    assert result.masked.file_bytes == forms.masked.file_bytes == result.unpruned.file_bytes
    assert result.masked.params == result.unpruned.params
    assert result.slimmed.params == forms.slimmed.params_total < result.masked.params
    assert result.slimmed.macs == forms.slimmed.macs_dense < result.masked.macs
    assert result.slimmed.file_bytes == forms.slimmed.file_bytes < result.masked.file_bytes
    assert result.masked.accuracy == masked_accuracy == result.slimmed.accuracy
    assert result.unpruned.accuracy == evaluate(bench.pristine, bench.full_data).metric
    assert result.masked.nonzero == result.slimmed.nonzero
    assert result.max_abs_diff <= 1e-4
    for form in (result.masked, result.slimmed):
        assert form.speedup is not None
        assert form.speedup.pairs == 6
    assert result.latency.runs == 6


@pytest.mark.slow
def test_layer_sensitivity_is_each_layer_alone(bench: Workbench) -> None:
    levels = (0.0, 0.5, 0.9)
    result = layer_sensitivity(TEACHING_SAMPLE, levels)
    assert result.layers == tuple(bench.session.layer_names)
    for curve in result.curves:
        plan = Plan().with_layer(curve.layer, LayerPlan(Granularity.UNSTRUCTURED, "l1",
                                                        sparsity=0.9))
        assert curve.accuracies[-1] == _accuracy(bench, plan)
        assert curve.params == bench.session.layer_by_name[curve.layer].params
    drops = [c.mean_drop(result.baseline) for c in result.ranking()]
    assert drops == sorted(drops, reverse=True)
    assert layer_sensitivity(TEACHING_SAMPLE, levels) == result


# -- (b) the page walks each lesson ---------------------------------------------------------
def _open(lesson: str, lang: str) -> AppTest:
    """The Learn page on `lesson`, opened by its link (?lesson=N&lang=...). (The lesson
    picker is not used: AppTest formats its options outside the tab, in English.)"""
    MISSING.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.session_state[MODEL_KEY] = TEACHING_SAMPLE
    at.query_params["lang"] = lang
    at.query_params["lesson"] = str([x.key for x in LESSONS].index(lesson) + 1)
    at.run()
    at.switch_page("app_pages/learn.py").run()
    _check(at, lang)
    assert at.session_state[LESSON_KEY] == lesson
    return at


def _check(at: AppTest, lang: str) -> None:
    """No exception; in Chinese, no English left and no message missing."""
    assert not at.exception, at.exception
    if lang == CHINESE:
        # the model's name and layers; the sidebar's model picker lists every sample
        names = [*layer_names(TEACHING_SAMPLE), TEACHING_SAMPLE,
                 *(spec.title for spec in SAMPLES.values())]
        assert english_left(at, names) == {}
        assert {m for code, m in MISSING if code == CHINESE} == set()


def _press(at: AppTest, key: str, lang: str) -> None:
    at.button(key=key).click().run()
    _check(at, lang)


def _texts(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown)


def _result(at: AppTest, lesson: str, step: str) -> object:
    return at.session_state[LESSON_STATE_KEY][lesson][step].result


def _reset(at: AppTest, lesson: str, run_key: str, lang: str) -> None:
    assert lesson in at.session_state[LESSONS_DONE_KEY]
    _press(at, f"pv_lesson_reset_{lesson}", lang)
    assert not at.session_state[LESSON_STATE_KEY].get(lesson)
    assert lesson not in at.session_state[LESSONS_DONE_KEY]
    assert [b for b in at.button if b.key == run_key]


LANGS = ["en", CHINESE]


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_lesson_weights_walks_and_shows_the_measurements(lang: str) -> None:
    # AppTest formats a choice's options (format_func) outside the tab, so in the test's
    # language: the tab's, or it would not find the Chinese option it sends.
    with use_language(lang):
        _walk_weights(lang)


def _walk_weights(lang: str) -> None:
    at = _open("weights", lang)
    layer = layer_names(TEACHING_SAMPLE)[0]
    at.selectbox(key="pv_lesson_weights_layer_predict_layer").set_value(layer)
    at.segmented_control(key="pv_lesson_weights_layer_predict_fraction").set_value(0.95)
    at.slider(key="pv_lesson_weights_layer_predict").set_value(40)
    at.run()
    _press(at, "pv_lesson_weights_layer_run", lang)
    expected = zero_layer(TEACHING_SAMPLE, layer, 0.95)
    assert [m.value for m in at.metric] == [f"{100 * expected.accuracy:.1f}%"]
    assert f"{expected.zeroed:,}" in _texts(at)
    assert f"{expected.share_of_model:.1%}" in _texts(at)
    if expected.layer_weights <= MAX_CELLS:  # the whole matrix is drawn
        assert figure(at, "pv_weights_layer_image_after").layout.meta["zeroed"] == \
            expected.zeroed
    at.slider(key="pv_lesson_weights_model_predict").set_value(70)
    _press(at, "pv_lesson_weights_model_run", lang)
    curve = model_curve(TEACHING_SAMPLE)
    assert at.metric[1].value == f"{100 * curve.accuracy_at(1 / 3):.1f}%"
    assert figure(at, "pv_weights_curve").layout.meta["accuracies"] == list(curve.accuracies)
    _reset(at, "weights", "pv_lesson_weights_layer_run", lang)


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_lesson_masking_walks_and_shows_the_measurements(lang: str) -> None:
    # AppTest formats a choice's options (format_func) outside the tab, so in the test's
    # language: the tab's, or it would not find the Chinese option it sends.
    with use_language(lang):
        _walk_masking(lang)


def _walk_masking(lang: str) -> None:
    at = _open("masking", lang)
    at.radio(key="pv_lesson_masking_forms_predict").set_value("neither").run()
    _press(at, "pv_lesson_masking_forms_run", lang)
    shown = _result(at, "masking", "forms")
    expected = masking_vs_removing(TEACHING_SAMPLE, runs=6)
    text = _texts(at)
    for form in ("unpruned", "masked", "slimmed"):
        ours, theirs = getattr(shown, form), getattr(expected, form)
        assert (ours.file_bytes, ours.params, ours.macs, ours.accuracy) == (
            theirs.file_bytes, theirs.params, theirs.macs, theirs.accuracy)
        for value in (f"{theirs.file_bytes / 1024:,.1f}", f"{theirs.params:,}",
                      f"{theirs.macs:,}", f"{ours.latency_ms:.2f}"):
            assert value in text
    assert shown.masked.speedup is not None
    assert f"{shown.masked.speedup.ratio:.2f}x" in text
    at.slider(key="pv_lesson_masking_sparse_predict").set_value(30)
    _press(at, "pv_lesson_masking_sparse_run", lang)
    sparse = sparse_file(TEACHING_SAMPLE)
    assert at.metric[0].value == f"{sparse.sparse_bytes / 1024:,.1f} KiB"
    _reset(at, "masking", "pv_lesson_masking_forms_run", lang)


@pytest.mark.slow
@pytest.mark.parametrize("lang", LANGS)
def test_lesson_layers_walks_and_shows_the_measurements(lang: str) -> None:
    # AppTest formats a choice's options (format_func) outside the tab, so in the test's
    # language: the tab's, or it would not find the Chinese option it sends.
    with use_language(lang):
        _walk_layers(lang)


def _walk_layers(lang: str) -> None:
    at = _open("layers", lang)
    first = layer_names(TEACHING_SAMPLE)[0]
    at.radio(key="pv_lesson_layers_rank_predict").set_value(first).run()
    _press(at, "pv_lesson_layers_rank_run", lang)
    expected = layer_sensitivity(TEACHING_SAMPLE)
    text = _texts(at)
    for rank, curve in enumerate(expected.ranking(), start=1):
        assert (f"| {rank} | `{curve.layer}` | {curve.params:,} | "
                f"{100 * curve.drop(expected.baseline):.1f} |") in text
    meta = figure(at, "pv_layers_curves").layout.meta
    assert meta["accuracies"] == [list(c.accuracies) for c in expected.curves]
    assert meta["levels"] == list(expected.levels)
    _reset(at, "layers", "pv_lesson_layers_rank_run", lang)
