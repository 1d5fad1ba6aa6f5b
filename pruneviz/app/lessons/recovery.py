"""Lesson 5: collapse and recovery — 90% of the weights removed at once, retrained with
the masks held, then the same training budget on a gradual schedule."""

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
from pruneviz.output.lessons.recovery import recovery_chart, training_curves
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.published import NETWORK_SLIMMING
from pruneviz.workflows.lessons.recovery import (
    RECIPE,
    SPARSITY,
    Collapse,
    Retrained,
    collapse,
    retrain_gradual,
    retrain_oneshot,
)

KEY = "recovery"
SAME = 1.0  # points: closer than this, the two recipes ended about the same
GRANULARITY_NAMES = {"unstructured": N_("single weights (unstructured)"),
                     "filter": N_("whole filters")}
CHOICES = {"oneshot": N_("one-shot + fine-tune"), "gradual": N_("gradual (AGP)"),
           "same": N_("about the same")}


def _slider(key: str, label: str, value: int) -> int:
    return int(st.slider(label, 0, 100, value=value, step=1, format="%d%%", key=key))


def render() -> None:
    """The lesson's three steps."""
    st.markdown(_("**Step 1.** Every layer loses {share:.0%} of its weights at once, the "
                  "smallest first (uniform magnitude pruning), with no retraining.").format(
                      share=SPARSITY))
    pruned = predict_then_reveal(
        KEY, "collapse",
        ask=lambda key: _slider(key, _("Your prediction: accuracy after pruning"), 70),
        run=lambda: collapse(TEACHING_SAMPLE, SPARSITY),
        reveal=_reveal_collapse)
    if pruned is None:
        return
    st.markdown(_("**Step 2.** Now retrain the pruned model for {epochs} epochs (batch "
                  "{batch}), the removed weights held at zero by their masks.").format(
                      epochs=RECIPE.epochs, batch=RECIPE.batch_size))
    oneshot = predict_then_reveal(
        KEY, "retrain",
        ask=lambda key: _slider(key, _("Your prediction: accuracy after retraining"), 50),
        run=lambda: retrain_oneshot(TEACHING_SAMPLE, pruned.granularity, SPARSITY),
        reveal=lambda p, r: _reveal_retrain(p, r, pruned))
    if oneshot is None:
        return
    st.markdown(_("**Step 3.** Same training budget ({epochs} epochs), but the sparsity "
                  "rises gradually on an AGP schedule, from 0 to {share:.0%} by the halfway "
                  "point. Which ends higher?").format(epochs=RECIPE.epochs, share=SPARSITY))
    predict_then_reveal(
        KEY, "gradual",
        ask=lambda key: st.segmented_control(
            _("Your prediction"), list(CHOICES), format_func=lambda c: _(CHOICES[c]),
            key=key, default="gradual", required=True),
        run=lambda: retrain_gradual(TEACHING_SAMPLE, pruned.granularity, SPARSITY),
        reveal=lambda p, r: _reveal_gradual(p, r, pruned, oneshot))
    if revealed(KEY, "gradual") is not None and KEY not in done_lessons():
        mark_done(KEY)


def _reveal_collapse(prediction: int, result: Collapse) -> None:
    chosen = result.accuracy(result.granularity)
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(recovery_chart(result.baseline, chosen, None),
                        key=lesson_widget_key(KEY, "chart1"), config=CHART_CONFIG)
    with cols[1]:
        st.metric(_("Accuracy after pruning"), f"{100 * chosen:.1f}%",
                  delta=_("{delta:+.1f} points").format(
                      delta=100 * (chosen - result.baseline)))
        st.markdown(compare(prediction, 100 * chosen))
        other = next(g for g, _a in result.pruned if g != result.granularity)
        st.markdown(_("Measured both ways: removing {share:.0%} of {chosen_name} gives "
                      "**{chosen:.1f}%**; of {other_name}, {other:.1f}%. The lesson goes on "
                      "with single weights: the question is about weights.").format(
                          share=result.sparsity, chosen_name=_(GRANULARITY_NAMES[
                              result.granularity]), chosen=100 * chosen,
                          other_name=_(GRANULARITY_NAMES[other]),
                          other=100 * result.accuracy(other)))
        st.markdown(_("The kept weights were trained to work with the ones now gone: each "
                      "layer's output shrinks and shifts, and the errors compound layer "
                      "after layer."))


def _reveal_retrain(prediction: int, result: Retrained, pruned: Collapse) -> None:
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(recovery_chart(pruned.baseline, result.before, result.after),
                        key=lesson_widget_key(KEY, "chart2"), config=CHART_CONFIG)
    with cols[1]:
        st.metric(_("Accuracy after retraining"), f"{100 * result.after:.1f}%",
                  delta=_("{delta:+.1f} points").format(delta=100 * (result.after
                                                                      - result.before)))
        st.markdown(compare(prediction, 100 * result.after))
        lost = pruned.baseline - result.before
        back = (result.after - result.before) / lost if lost > 0 else 1.0
        st.markdown(_("Retraining won back {back:.0%} of the {lost:.1f} points pruning "
                      "lost, with {removed:.1%} of the weights still zero: the kept weights "
                      "learned to do the work of the removed ones.").format(
                          back=back, lost=100 * lost, removed=result.weights_removed))
        slim = NETWORK_SLIMMING.points
        st.caption(_("Network Slimming (Liu et al. 2017) saw the same shape on another "
                     "model, other data: {a:.2f}% → {b:.2f}% → {c:.2f}%.").format(
                         a=100 * slim[0].accuracy, b=100 * slim[1].accuracy,
                         c=100 * slim[2].accuracy))


def _reveal_gradual(prediction: str, result: Retrained, pruned: Collapse,
                    oneshot: Retrained) -> None:
    gap = 100 * (result.after - oneshot.after)
    measured = "same" if abs(gap) < SAME else ("gradual" if gap > 0 else "oneshot")
    cols = st.columns([3, 2])
    with cols[0]:
        tabs = st.tabs([_("Accuracy"), _("Training curves")])
        with tabs[0]:
            st.plotly_chart(recovery_chart(pruned.baseline, oneshot.before, oneshot.after,
                                           result.after),
                            key=lesson_widget_key(KEY, "chart3"), config=CHART_CONFIG)
        with tabs[1]:
            st.plotly_chart(training_curves([
                (_(CHOICES["oneshot"]), oneshot.epochs, oneshot.validation),
                (_(CHOICES["gradual"]), result.epochs, result.validation)]),
                key=lesson_widget_key(KEY, "curves"), config=CHART_CONFIG)
    with cols[1]:
        st.metric(_("Gradual (AGP)"), f"{100 * result.after:.1f}%",
                  delta=_("{delta:+.1f} points vs one-shot").format(delta=gap))
        verdict = (_("Your prediction, {choice}, matches the measurement.")
                   if prediction == measured else
                   _("You predicted {choice}; measured: {measured}."))
        st.markdown(verdict.format(choice=_(CHOICES[prediction]),
                                   measured=_(CHOICES[measured])))
        if measured == "gradual":
            st.markdown(_("Pruning a little at a time let the network adapt between cuts: "
                          "it never collapsed, and ended {gap:.1f} points higher.").format(
                              gap=gap))
        else:
            st.markdown(_("Here gradual did not beat one-shot ({gap:+.1f} points): with only "
                          "{steps} training steps, the schedule spends half of them reaching "
                          "{share:.0%} and leaves the rest to recover, while one-shot "
                          "retrains at the final sparsity from the first step.").format(
                              gap=gap, steps=result.steps, share=result.sparsity))
            st.markdown(_("Gradual pruning usually pays off with a longer budget and "
                          "at high sparsities on large models: the network adapts between "
                          "small cuts instead of recovering from one big collapse."))


LESSON = Lesson(
    key="recovery",
    title=N_("Collapse and recovery"),
    question=N_("After 90% of the weights are removed at once, can retraining bring "
                "the accuracy back?"),
    render=render,
    further_page="app_pages/finetune.py",
    further_label=N_("Try other recipes on the Fine-tune page"),
)
