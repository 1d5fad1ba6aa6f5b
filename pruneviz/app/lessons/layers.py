"""Lesson 3: not all layers are equal. Predict the most sensitive layer, then prune each
layer alone at a ladder of levels and rank them."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson, mark_done, predict_then_reveal
from pruneviz.i18n import N_, _
from pruneviz.output.lessons.layers import sensitivity_curves
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.layers import (
    LEVELS,
    LayerSensitivity,
    layer_params,
    layer_sensitivity,
)

KEY = "layers"


def _ask(key: str) -> str:
    params = dict(layer_params(TEACHING_SAMPLE))
    choice = st.radio(
        _("Your prediction: which layer, pruned alone, hurts the accuracy most?"),
        list(params), key=key, index=None, horizontal=True,
        format_func=lambda name: _("{layer} ({count:,} weights)").format(
            layer=name, count=params[name]))
    return str(choice) if choice is not None else ""


def _table(result: LayerSensitivity) -> str:
    top = result.levels[-1]
    rows = [_("| rank | layer | weights | lost at {top:.0%} | mean loss |").format(top=top),
            "|---:|---|---:|---:|---:|"]
    for rank, curve in enumerate(result.ranking(), start=1):
        rows.append(f"| {rank} | `{curve.layer}` | {curve.params:,} | "
                    f"{100 * curve.drop(result.baseline):.1f} | "
                    f"{100 * curve.mean_drop(result.baseline):.1f} |")
    return "\n".join(rows)


def _reveal(prediction: str, result: LayerSensitivity) -> None:
    most = result.ranking()[0]
    left, right = st.columns([1, 1])
    with left:
        if prediction == most.layer:
            st.success(_("Right: **{layer}** is the most sensitive.").format(layer=most.layer),
                       icon=":material/check:")
        else:
            st.warning(_("You picked **{guess}**; the most sensitive measured is "
                         "**{layer}**.").format(guess=prediction or "—", layer=most.layer),
                       icon=":material/close:")
        st.markdown(_table(result))
        _explain(result)
    with right:
        st.plotly_chart(sensitivity_curves(
            list(result.layers), list(result.levels),
            [list(c.accuracies) for c in result.curves], [c.params for c in result.curves]),
            key=f"pv_{KEY}_curves")
        st.caption(_("Accuracy lost in points from the unpruned {base:.1f}%, on {samples:,} "
                     "evaluation samples; each layer pruned alone (unstructured, smallest "
                     "|w| first), the others untouched.").format(
                         base=100 * result.baseline, samples=result.samples))
    mark_done(KEY)


def _explain(result: LayerSensitivity) -> None:
    """Why, from the measured numbers: the textbook reason when the first or last layer
    measured most sensitive, else what was measured."""
    most = result.ranking()[0]
    first, last = result.curves[0], result.curves[-1]
    ends = {first.layer, last.layer}
    if most.layer in ends:
        if most.layer == first.layer:
            st.markdown(_("**Why.** The first layer, `{layer}`, has only {count:,} weights, "
                          "yet everything the model sees passes through them: each weight "
                          "there carries a large share of the input, so removing {top:.0%} "
                          "of them cost {drop:.1f} points.").format(
                              layer=first.layer, count=first.params, top=result.levels[-1],
                              drop=100 * first.drop(result.baseline)))
        else:
            st.markdown(_("**Why.** The last layer, `{layer}`, has only {count:,} weights, "
                          "yet every class's score is computed from them: each weight there "
                          "decides more, so removing {top:.0%} of them cost {drop:.1f} "
                          "points.").format(layer=last.layer, count=last.params,
                                            top=result.levels[-1],
                                            drop=100 * last.drop(result.baseline)))
        biggest = max(result.curves, key=lambda c: c.params)
        if biggest.layer != most.layer:
            st.markdown(_("Compare `{big}`: {count:,} weights, {drop:.1f} points lost at the "
                          "same level. A layer with many weights has more redundancy; the same "
                          "share removed from it costs less.").format(
                              big=biggest.layer, count=biggest.params,
                              drop=100 * biggest.drop(result.baseline)))
    else:
        st.markdown(_("**What was measured.** On this model the most sensitive layer is "
                      "`{layer}` ({count:,} weights, {drop:.1f} points lost at {top:.0%}), not "
                      "the first or the last, which textbooks usually name: sensitivity "
                      "depends on the model, so it is measured, not assumed.").format(
                          layer=most.layer, count=most.params, top=result.levels[-1],
                          drop=100 * most.drop(result.baseline)))


def render() -> None:
    """One step: predict the most sensitive layer, then the analysis."""
    st.markdown(_("A **sensitivity analysis** prunes one layer at a time, at ever larger "
                  "shares ({levels}), and measures the accuracy each time.").format(
                      levels=", ".join(f"{level:.0%}" for level in LEVELS[1:])))
    predict_then_reveal(KEY, "rank", ask=_ask,
                        run=lambda: layer_sensitivity(TEACHING_SAMPLE), reveal=_reveal)


LESSON = Lesson(
    key="layers",
    title=N_("Not all layers are equal"),
    question=N_("Which layers can lose the most, and which hurt the model most when pruned?"),
    render=render,
    further_page="app_pages/sensitivity.py",
    further_label=N_("Run a full sensitivity analysis on the Sensitivity page"),
)
