"""Lesson 6: budgets — which layers can lose the most, then the uniform plan against the
sensitivity-guided one at the same MACs or weights budget."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.keys import lesson_widget_key
from pruneviz.app.lessons.frame import (
    CHART_CONFIG,
    Lesson,
    done_lessons,
    mark_done,
    predict_then_reveal,
    revealed,
)
from pruneviz.i18n import N_, _
from pruneviz.output.lessons.budgets import plan_bars, sensitivity_lines
from pruneviz.workflows.lessons import TEACHING_SAMPLE
from pruneviz.workflows.lessons.budgets import (
    KINDS,
    BudgetResult,
    Curve,
    compare_budgets,
    layer_names,
    layer_sensitivity,
    most_robust,
)

KEY = "budgets"
KEPT = [30, 50, 70]  # % of the MACs or weights kept
KIND_NAMES = {"macs": N_("MACs"), "weights": N_("weights (size)")}
CHOICES = {"uniform": N_("uniform"), "sensitivity": N_("sensitivity-guided"),
           "same": N_("about the same")}
SAME = 1.0  # points


@st.cache_data(show_spinner=False)
def _layer_names(model_ref: str) -> list[str]:
    return layer_names(model_ref)


def render() -> None:
    """The lesson's two steps."""
    layers = _layer_names(TEACHING_SAMPLE)
    st.markdown(_("**Step 1.** Prune one layer alone, more and more, and watch the "
                  "accuracy. Which layer can lose the largest share of its weights with "
                  "almost no loss?"))
    curves = predict_then_reveal(
        KEY, "robust",
        ask=lambda key: st.segmented_control(_("Your prediction"), layers, key=key,
                                             default=layers[0], required=True),
        run=lambda: layer_sensitivity(TEACHING_SAMPLE),
        reveal=_reveal_robust)
    if curves is None:
        return
    st.markdown(_("**Step 2.** Pick a budget. Then predict: at that budget, which plan keeps "
                  "more accuracy — every layer pruned the same share (uniform), or the "
                  "sensitivity-guided plan?"))
    kind_key = lesson_widget_key(KEY, "kind")
    kept_key = lesson_widget_key(KEY, "kept")
    predict_then_reveal(
        KEY, "budget",
        ask=lambda key: _ask_budget(key, kind_key, kept_key),
        run=lambda: compare_budgets(TEACHING_SAMPLE, st.session_state[kind_key],
                                    st.session_state[kept_key] / 100),
        reveal=_reveal_budget)
    if revealed(KEY, "budget") is not None and KEY not in done_lessons():
        mark_done(KEY)


def _reveal_robust(prediction: str, result: tuple[float, tuple[Curve, ...]]) -> None:
    baseline, curves = result
    best = most_robust(curves, baseline)
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(sensitivity_lines([(c.layer, c.levels, c.accuracy) for c in curves]),
                        key=lesson_widget_key(KEY, "curves"), config=CHART_CONFIG)
    with cols[1]:
        verdict = (_("You picked {choice}: right, it is the most robust.")
                   if prediction == best else
                   _("You picked {choice}; the most robust is {best}."))
        st.markdown(verdict.format(choice=prediction, best=best))
        rows = [_("- {layer}: {accuracy:.1f}% with {level:.0%} of it removed").format(
            layer=c.layer, accuracy=100 * c.accuracy[-1], level=c.levels[-1]) for c in curves]
        st.markdown(_("Unpruned: {baseline:.1f}%.").format(baseline=100 * baseline) + "\n"
                    + "\n".join(rows))
        st.markdown(_("Layers differ: some hold many redundant weights, others few. A "
                      "sensitivity analysis measures that, one layer at a time."))


def _ask_budget(key: str, kind_key: str, kept_key: str) -> str:
    cols = st.columns(2)
    cols[0].segmented_control(_("Budget on"), list(KINDS), key=kind_key, default=KINDS[0],
                              format_func=lambda k: _(KIND_NAMES[k]), required=True)
    cols[1].select_slider(_("Keep at most (% of the unpruned model)"), KEPT, value=50,
                          key=kept_key, format_func=lambda v: f"{v}%")
    choice: str = st.segmented_control(_("Your prediction"), list(CHOICES), key=key,
                                       format_func=lambda c: _(CHOICES[c]),
                                       default="uniform", required=True)
    return choice


def _reveal_budget(prediction: str, result: BudgetResult) -> None:
    uniform, guided = result.uniform, result.guided
    gap = 100 * (guided.accuracy - uniform.accuracy)
    measured = "same" if abs(gap) < SAME else ("sensitivity" if gap > 0 else "uniform")
    layers = [n for n, _s in uniform.layers]
    cols = st.columns([3, 2])
    with cols[0]:
        st.plotly_chart(plan_bars(layers, [uniform.sparsity(n) for n in layers],
                                  [guided.sparsity(n) for n in layers]),
                        key=lesson_widget_key(KEY, "bars"), config=CHART_CONFIG)
    with cols[1]:
        inner = st.columns(2)
        reached = "macs_kept" if result.kind == "macs" else "weights_kept"
        for col, plan, name in ((inner[0], uniform, CHOICES["uniform"]),
                                (inner[1], guided, CHOICES["sensitivity"])):
            col.metric(_(name), f"{100 * plan.accuracy:.1f}%",
                       help=_("Accuracy on the evaluation set, measured with the plan "
                              "applied."))
            col.caption(_("{what} kept: {value:.1%} (budget {budget:.0%})").format(
                what=_(KIND_NAMES[result.kind]), value=getattr(plan, reached),
                budget=result.kept))
        verdict = (_("Your prediction, {choice}, matches the measurement.")
                   if prediction == measured else
                   _("You predicted {choice}; measured: {measured}."))
        st.markdown(verdict.format(choice=_(CHOICES[prediction]),
                                   measured=_(CHOICES[measured])) + " "
                    + _("Unpruned: {baseline:.1f}%.").format(baseline=100 * result.baseline))
        spared = min(layers, key=guided.sparsity)
        hardest = max(layers, key=guided.sparsity)
        st.markdown(_("The sensitivity-guided plan spends the budget where it is cheap: it "
                      "prunes {hardest} most ({high:.0%}) and spares {spared} ({low:.0%}), "
                      "following each layer's measured curve. Uniform cuts every layer the "
                      "same, the fragile ones too. Difference: {gap:+.1f} points.").format(
                          hardest=hardest, high=guided.sparsity(hardest), spared=spared,
                          low=guided.sparsity(spared), gap=gap))
        if not (uniform.met and guided.met):
            st.warning(_("A plan could not meet the budget with every layer at most 95% "
                         "pruned; its numbers are what it reached."))


LESSON = Lesson(
    key="budgets",
    title=N_("Budgets"),
    question=N_("To meet a size target, should every layer lose the same share?"),
    render=render,
    further_page="app_pages/sensitivity.py",
    further_label=N_("Fit your own budget on the Sensitivity page"),
)
