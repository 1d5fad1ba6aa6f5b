"""The Sensitivity page's accuracy floor: "keep accuracy at least … %" (or the metric's own
words for lower-is-better tasks) finds, by measuring, the plan that prunes the most while
the metric stays there; draws every plan the search measured, records the chosen one as
an experiment and offers it to the Prune page."""

from __future__ import annotations

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import (
    FLOOR_APPLY_KEY,
    FLOOR_CHART_KEY,
    FLOOR_METHOD_KEY,
    FLOOR_OBJECTIVE_KEY,
    FLOOR_RESULT_KEY,
    FLOOR_RUN_KEY,
    FLOOR_VALUE_KEY,
)
from pruneviz.app.state import seed
from pruneviz.app.sweep_view import metric_label
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.i18n import N_, _
from pruneviz.output.floor_figures import floor_curve
from pruneviz.workflows.allocation import Method, method_name
from pruneviz.workflows.experiments import Experiment, describe_plan
from pruneviz.workflows.floor import REFINE, SCAN, FloorResult, Objective, Status
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench

OBJECTIVES = {Objective.SPARSITY: N_("the most sparsity"), Objective.MACS: N_("the fewest MACs"),
              Objective.SIZE: N_("the smallest sparse file")}


def floor_label(bench: Workbench) -> tuple[str, float, float | None, float]:
    """The floor box's label, its input -> floor scale, its largest value, and its step."""
    data = bench.eval_data
    name = metric_label(data.metric_name)
    if shows_percent(data):
        return _("Keep {metric_name} at least (%)").format(metric_name=name), 0.01, 100.0, 0.1
    if data.higher_is_better:
        return _("Keep {metric_name} at least").format(metric_name=name), 1.0, None, 0.001
    return (_("Keep {metric_name} at most (lower is better)").format(metric_name=name), 1.0,
            None, 0.0001)


def default_floor(bench: Workbench) -> float:
    """The box's first value: 1 point below the unpruned accuracy, twice the unpruned
    lower-is-better metric (an MSE), or the unpruned metric itself."""
    base = bench.baseline.evaluation.metric
    if shows_percent(bench.eval_data):
        return round(max(0.0, base * 100 - 1.0), 1)
    if not bench.eval_data.higher_is_better:
        return float(f"{2 * base:.3g}")
    return float(f"{base:.4g}")


def keep_floor(bench: Workbench, result: SensitivityResult, cap: int) -> None:
    """The floor box, its search, and the last search's curve and chosen plan."""
    data = bench.eval_data
    accuracy = shows_percent(data)
    st.subheader(_("Prune the most while the metric stays at a floor"))
    st.caption(_(
        "Each method's plans are one knob (how much it prunes). The search measures the "
        "unpruned model and {scan} evenly spaced knobs up to the cap ({cap}% per layer), "
        "then narrows the edge between the best plan that meets the floor and the next one "
        "that misses it in {refine} more steps: at most {most} plans, each "
        "measured on {count} evaluation samples. The metric is not monotone in the "
        "knob, so the whole scan is measured, not just bisected. The chosen plan is "
        "recorded as an experiment, measured with latency.").format(
        scan=SCAN, cap=cap, refine=REFINE, most=1 + SCAN + REFINE, count=f"{len(data):,}"))
    label, scale, maximum, step = floor_label(bench)
    seed(FLOOR_VALUE_KEY, default_floor(bench))
    seed(FLOOR_METHOD_KEY, Method.SENSITIVITY)
    seed(FLOOR_OBJECTIVE_KEY, Objective.SPARSITY)
    cols = st.columns([1.4, 1.2, 1.4, 1.2], vertical_alignment="bottom")
    value = cols[0].number_input(label, min_value=0.0, max_value=maximum, step=step,
                                 format="%.2f" if accuracy else "%.5g", key=FLOOR_VALUE_KEY)
    method = cols[1].selectbox(_("Method"), list(Method), format_func=method_name,
                               key=FLOOR_METHOD_KEY) or Method.SENSITIVITY
    objective = cols[2].selectbox(
        _("Prune for"), list(Objective), format_func=lambda o: _(OBJECTIVES[Objective(o)]),
        key=FLOOR_OBJECTIVE_KEY) or Objective.SPARSITY
    run = cols[3].button(_("Find the plan"), type="primary", key=FLOOR_RUN_KEY,
                         width="stretch")
    floor = value * scale
    # A search is shown while the analysis and the inputs it was made with are current.
    key = (result.model, result.criterion, result.granularity.value, result.levels,
           result.complete, result.samples, floor, method, objective, cap)
    if run:
        with st.spinner(_("Measuring up to {most} plans of {method} pruning ...").format(
                most=1 + SCAN + REFINE, method=method_name(method))), \
                user_errors(_("The search failed")):
            found, experiment = state.workspace().record_floor(result, floor, method,
                                                               objective, cap / 100)
        st.session_state[FLOOR_RESULT_KEY] = {"key": key, "found": found,
                                              "experiment": experiment}
    stored = st.session_state.get(FLOOR_RESULT_KEY)
    if stored is None or stored["key"] != key:
        return
    show_found(bench, stored["found"], stored["experiment"], accuracy)


def points(value: float, accuracy: bool) -> str:
    """A metric difference: in points for accuracies."""
    return _("{value} pts").format(value=f"{value * 100:.2f}") if accuracy else f"{value:.4g}"


def show_found(bench: Workbench, found: FloorResult, experiment: Experiment | None,
               accuracy: bool) -> None:
    """The search's outcome: what it found, its curve, and the plan to apply."""
    name = metric_label(found.metric_name)
    chosen = found.chosen
    if chosen is None:
        st.warning(found.message())
    else:
        margin = found.margin or 0.0
        noise = "" if chosen.stderr is None else _(
            " (the metric's standard error: {error})").format(
            error=points(chosen.stderr, accuracy))
        within = (_(". That is less than the measurement's noise: on other data like this the "
                    "{metric_name} may miss the floor").format(metric_name=name)
                  if found.within_noise else "")
        cap_text = (_(" Every plan up to the cap meets the floor: raise the cap to prune more.")
                    if found.status is Status.CAP else "")
        shown = (st.warning if found.within_noise else st.success)
        shown(_("{method}: {sparsity} sparsity, {macs} of the MACs, {size} KiB sparse file; "
                "measured {metric_name} {metric}, {margin} inside the floor{noise}"
                "{within}.").format(
            method=method_name(found.method), sparsity=f"{chosen.sparsity:.1%}",
            macs=f"{chosen.macs_fraction:.1%}", size=f"{chosen.size_bytes / 1024:.1f}",
            metric_name=name, metric=show_metric(chosen.metric, accuracy),
            margin=points(margin, accuracy), noise=noise, within=within))
        st.caption(_("{count} plans measured in {seconds} s (unpruned: {metric}).").format(
            count=found.evaluations, seconds=f"{found.seconds:.1f}",
            metric=show_metric(found.baseline.metric, accuracy)) + cap_text)
    st.plotly_chart(floor_curve(found), key=FLOOR_CHART_KEY)
    for note in found.notes:
        st.info(note)
    if chosen is None:
        return
    if experiment is not None:
        st.caption(_("Recorded as experiment #{id} {label}.").format(id=experiment.id,
                                                                    label=experiment.label))
    if st.button(_("Make it this tab's plan"), key=FLOOR_APPLY_KEY,
                 help=_("Apply the chosen plan, to adjust by hand on the Prune page.")):
        with user_errors(_("The plan could not be applied")):
            state.restore_plan(chosen.plan)
        st.success(_("This tab's plan is now {plan}.").format(plan=describe_plan(chosen.plan)))
        st.page_link("app_pages/prune.py", label=_("Adjust it on the Prune page"),
                     icon=":material/content_cut:")
