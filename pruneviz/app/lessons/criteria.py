"""Lesson 4: criteria disagree — one conv layer's filters pruned at 50% by magnitude,
random and Taylor scores; which filters each removes and what each costs."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.keys import lesson_widget_key
from pruneviz.app.lessons.frame import (
    CHART_CONFIG,
    Lesson,
    compare,
    done_lessons,
    mark_done,
    predict_then_reveal,
    revealed,
)
from pruneviz.i18n import N_, _
from pruneviz.output.lessons.criteria import criteria_grid
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.criteria import (
    CRITERIA,
    CriteriaResult,
    compare_criteria,
    conv_layers,
    filter_count,
)

KEY = "criteria"
SPARSITY = 0.5
NAMES = {"l1": N_("magnitude (l1)"), "random": N_("random"), "taylor": N_("Taylor")}
KEEPS = {
    "l1": N_("**Magnitude** keeps the filters with the biggest weights: it assumes a big "
             "weight matters, without looking at any data."),
    "taylor": N_("**Taylor** keeps the filters whose removal would change the loss the "
                 "most, estimated from activations and gradients on calibration data."),
    "random": N_("**Random** keeps an arbitrary half: the baseline any criterion must beat."),
}


@st.cache_data(show_spinner=False)
def _layers(model_ref: str) -> list[str]:
    return conv_layers(model_ref)


@st.cache_data(show_spinner=False)
def _filters(model_ref: str, layer: str) -> int:
    return filter_count(model_ref, layer)


def _name(criterion: str) -> str:
    return _(NAMES[criterion])


def render() -> None:
    """The lesson's two steps."""
    layers = _layers(TEACHING_SAMPLE)
    layer_key = lesson_widget_key(KEY, "layer")
    first = predict_then_reveal(
        KEY, "overlap",
        ask=lambda key: _ask_overlap(key, layers, layer_key),
        run=lambda: compare_criteria(TEACHING_SAMPLE, st.session_state[layer_key], SPARSITY),
        reveal=_reveal_overlap)
    if first is None:
        return
    st.markdown(_("**Step 2.** Which criterion keeps the most accuracy with half of "
                  "**{layer}**'s filters gone?").format(layer=first.layer))
    predict_then_reveal(
        KEY, "accuracy",
        ask=lambda key: st.segmented_control(
            _("Your prediction"), list(CRITERIA), format_func=_name, key=key,
            default="taylor", required=True),
        run=lambda: first,
        reveal=_reveal_accuracy,
        button=_("Lock in my prediction and reveal"))
    if revealed(KEY, "accuracy") is not None and KEY not in done_lessons():
        mark_done(KEY)


def _ask_overlap(key: str, layers: list[str], layer_key: str) -> int:
    st.markdown(_("**Step 1.** Pick a conv layer. Each criterion will remove half of its "
                  "filters: magnitude (l1), random, and Taylor (which looks at data)."))
    cols = st.columns([1, 2])
    layer = cols[0].selectbox(_("Layer"), layers, key=layer_key)
    count = _filters(TEACHING_SAMPLE, layer)
    half = int(count * SPARSITY)
    return int(cols[1].slider(  # one slider per layer: their ranges differ
        _("Of the {half} filters magnitude removes, how many will Taylor also remove?").format(
            half=half), 0, half, value=half // 2, key=f"{key}_{layer}"))


def _reveal_overlap(prediction: int, result: CriteriaResult) -> None:
    shared = result.overlap("l1", "taylor")
    chance = len(result.run("l1").removed) ** 2 / result.filters  # expected if unrelated
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(criteria_grid([_name(c) for c in CRITERIA],
                                      [result.run(c).scores for c in CRITERIA],
                                      [result.run(c).removed for c in CRITERIA], result.layer),
                        key=lesson_widget_key(KEY, "grid"), config=CHART_CONFIG)
    with cols[1]:
        st.metric(_("Removed by both magnitude and Taylor"),
                  _("{shared} of {half}").format(shared=shared.shared,
                                                  half=len(result.run("l1").removed)))
        st.markdown(compare(prediction, shared.shared, unit=""))
        rows = [_("- {a} and {b}: {shared} shared, Jaccard {jaccard:.2f}").format(
            a=_name(o.first), b=_name(o.second), shared=o.shared, jaccard=o.jaccard)
            for o in result.overlaps]
        st.markdown("\n".join(rows))
        st.markdown(_("Two criteria picking at random would share about {chance:.0f} "
                      "filters. They disagree: each ranks the filters by a different idea "
                      "of importance.").format(chance=float(chance)))


def _reveal_accuracy(prediction: str, result: CriteriaResult) -> None:
    best = max(result.runs, key=lambda r: r.accuracy)
    chance = result.run("random").accuracy
    cols = st.columns(len(CRITERIA))
    for col, criterion in zip(cols, CRITERIA, strict=True):
        run = result.run(criterion)
        col.metric(_name(criterion), f"{100 * run.accuracy:.1f}%",
                   delta=_("{delta:+.1f} vs random").format(
                       delta=100 * (run.accuracy - chance)) if criterion != "random" else None)
    verdict = (_("You predicted {choice}: right, it kept the most.") if prediction == best.criterion
               else _("You predicted {choice}; {best} kept the most."))
    st.markdown(verdict.format(choice=_name(prediction), best=_name(best.criterion)) + " "
                + _("Unpruned: {baseline:.1f}%.").format(baseline=100 * result.baseline))
    for criterion in ("l1", "taylor"):
        gap = 100 * (result.run(criterion).accuracy - chance)
        said = (_("Here it beat random by {gap:.1f} points.") if gap > 0 else
                _("Here it did not beat random ({gap:+.1f} points)."))
        st.markdown(_(KEEPS[criterion]) + " " + said.format(gap=gap))
    st.markdown(_(KEEPS["random"]))


LESSON = Lesson(
    key="criteria",
    title=N_("Criteria disagree"),
    question=N_("Do magnitude, random and Taylor scores pick the same structures to remove?"),
    render=render,
    further_page="app_pages/inspect.py",
    further_label=N_("Compare criteria on any layer on the Inspect page"),
)
