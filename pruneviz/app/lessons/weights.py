"""Lesson 1: what a weight is, and what pruning removes. One layer's weights as an image
and a histogram; predict what zeroing its smallest ones costs, then the whole model's."""

from __future__ import annotations

from dataclasses import dataclass

import streamlit as st

from pruneviz.app.lessons.frame import Lesson, compare, mark_done, predict_then_reveal
from pruneviz.i18n import N_, _
from pruneviz.output.lessons.weights import accuracy_curve, weight_histogram, weight_image
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.published import HAN_2015, HAN_2015_DROP_WITHOUT_RETRAINING
from pruneviz.workflows.lessons.weights import (
    LAYER_FRACTIONS,
    LayerZeroed,
    ModelCurve,
    layer_names,
    layer_weights,
    model_curve,
    zero_layer,
)

KEY = "weights"
ONE_POINT = 0.01  # an accuracy change below this is "about the same"


@dataclass(frozen=True)
class LayerGuess:
    """What the learner chose and predicted in step 1."""

    layer: str
    fraction: float
    accuracy: float  # percent


def _ask_layer(key: str) -> LayerGuess:
    names = layer_names(TEACHING_SAMPLE)
    left, middle, right = st.columns([1, 1, 1])
    with left:
        layer = st.selectbox(_("Layer"), names, index=len(names) // 2, key=f"{key}_layer")
        fraction = st.segmented_control(
            _("Share of this layer's weights to zero (smallest |w| first)"),
            list(LAYER_FRACTIONS), format_func=lambda f: f"{f:.0%}", key=f"{key}_fraction",
            default=LAYER_FRACTIONS[1], required=True)
        accuracy = st.slider(_("Your prediction: the model's accuracy afterwards (%)"),
                             0, 100, 50, key=key)
    weights = layer_weights(TEACHING_SAMPLE, layer)
    middle.plotly_chart(weight_histogram(weights.values, layer), key=f"{key}_hist")
    right.plotly_chart(weight_image(weights.values, layer), key=f"{key}_image")
    return LayerGuess(layer, float(fraction or LAYER_FRACTIONS[1]), float(accuracy))


def _reveal_layer(guess: LayerGuess, result: LayerZeroed) -> None:
    left, middle, right = st.columns([1, 1, 1])
    with left:
        st.markdown(_("**{layer}**: {zeroed:,} of its {total:,} weights zeroed "
                      "({fraction:.0%}).").format(layer=result.layer, zeroed=result.zeroed,
                                                  total=result.layer_weights,
                                                  fraction=result.fraction))
        st.metric(_("Accuracy afterwards"), f"{100 * result.accuracy:.1f}%",
                  delta=_("{points:+.1f} points").format(
                      points=100 * (result.accuracy - result.baseline_accuracy)))
        st.markdown(compare(guess.accuracy, 100 * result.accuracy))
        st.markdown(_("Those weights are **{share:.1%}** of the model's {params:,} "
                      "parameters.").format(share=result.share_of_model,
                                            params=result.model_params))
        drop = result.baseline_accuracy - result.accuracy
        if drop < ONE_POINT:
            st.markdown(_("Almost nothing was lost: the smallest weights add little to "
                          "what the layer computes, so zeroing them barely changes the "
                          "output."))
        elif drop < 10 * ONE_POINT:
            st.markdown(_("A little was lost: at this share, some of the zeroed weights "
                          "were still doing real work."))
        else:
            st.markdown(_("A lot was lost: at this share, the zeroed weights include ones "
                          "the layer relies on, and nothing retrained the rest to make up "
                          "for them."))
    middle.plotly_chart(weight_histogram(result.values, result.layer, result.kept,
                                         result.threshold), key=f"pv_{KEY}_layer_hist_after")
    right.plotly_chart(weight_image(result.values, result.layer, result.kept),
                       key=f"pv_{KEY}_layer_image_after")


def _ask_model(key: str) -> float:
    return float(st.slider(
        _("Your prediction: the model's accuracy with a third of all its weights zeroed (%)"),
        0, 100, 50, key=key))


def _first_drop(curve: ModelCurve) -> float | None:
    """The lowest level at which accuracy fell more than one point, or None."""
    for level, accuracy in zip(curve.levels, curve.accuracies, strict=True):
        if curve.accuracies[0] - accuracy > ONE_POINT:
            return level
    return None


def _reveal_model(prediction: float, curve: ModelCurve) -> None:
    left, right = st.columns([2, 3])
    third = curve.accuracy_at(curve.levels[min(
        range(len(curve.levels)),
        key=lambda i: abs(curve.levels[i] - HAN_2015_DROP_WITHOUT_RETRAINING))])
    with left:
        st.metric(_("Accuracy, a third zeroed"), f"{100 * third:.1f}%",
                  delta=_("{points:+.1f} points").format(
                      points=100 * (third - curve.accuracies[0])))
        st.markdown(compare(prediction, 100 * third))
        first = _first_drop(curve)
        if first is None:
            st.markdown(_("On this model accuracy stayed within one point of the unpruned "
                          "{base:.1f}% all the way to {last:.0%} of the weights zeroed.").format(
                              base=100 * curve.accuracies[0], last=curve.levels[-1]))
        else:
            st.markdown(_("On this model accuracy first fell by more than one point at "
                          "**{level:.0%}** of the weights zeroed, and was {last:.1f}% at "
                          "{top:.0%}. Most weights are small, and the smallest go first, so "
                          "the first cuts cost little; later cuts reach the weights that "
                          "matter.").format(level=first, last=100 * curve.accuracies[-1],
                                             top=curve.levels[-1]))
        st.caption(_("The orange markers are `{citation}`: {model}, another model on other "
                     "data, shown only as a reference shape. {note}").format(
                         citation=HAN_2015.citation, model=_(HAN_2015.model),
                         note=_(HAN_2015.note)))
    right.plotly_chart(accuracy_curve(curve.levels, curve.accuracies, prediction),
                       key=f"pv_{KEY}_curve")


def render() -> None:
    """Step 1: one layer; step 2: the whole model."""
    st.markdown(_("A layer's **weights** are the numbers it multiplies its inputs by. "
                  "**Pruning** sets some of them to zero, usually the smallest in size "
                  "(|w|), on the idea that they matter least."))
    chosen: dict[str, LayerGuess] = {}

    def ask_layer(key: str) -> LayerGuess:
        chosen["guess"] = _ask_layer(key)
        return chosen["guess"]

    def run_layer() -> LayerZeroed:
        guess = chosen["guess"]
        return zero_layer(TEACHING_SAMPLE, guess.layer, guess.fraction)

    first = predict_then_reveal(KEY, "layer", ask=ask_layer, run=run_layer,
                                reveal=_reveal_layer)
    if first is None:
        return
    st.markdown(_("**Step 2.** Now zero the same share of the smallest weights in *every* "
                  "layer at once, without retraining."))
    curve = predict_then_reveal(KEY, "model", ask=_ask_model,
                                run=lambda: model_curve(TEACHING_SAMPLE),
                                reveal=_reveal_model)
    if curve is not None:
        mark_done(KEY)


LESSON = Lesson(
    key="weights",
    title=N_("What a weight is, and what pruning removes"),
    question=N_("What happens to a layer, and to the model, when its smallest weights "
                "are set to zero?"),
    render=render,
    further_page="app_pages/inspect.py",
    further_label=N_("Look at every layer's weights on the Inspect page"),
)
