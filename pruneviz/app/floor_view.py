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
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.output.floor_figures import floor_curve
from pruneviz.workflows.allocation import Method
from pruneviz.workflows.experiments import Experiment, describe_plan
from pruneviz.workflows.floor import REFINE, SCAN, FloorResult, Objective, Status
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench

OBJECTIVES = {Objective.SPARSITY: "the most sparsity", Objective.MACS: "the fewest MACs",
              Objective.SIZE: "the smallest sparse file"}


def floor_label(bench: Workbench) -> tuple[str, float, float | None, float]:
    """The floor box's label, its input -> floor scale, its largest value, and its step."""
    data = bench.eval_data
    name = data.metric_name
    if shows_percent(data):
        return f"Keep {name} at least (%)", 0.01, 100.0, 0.1
    if data.higher_is_better:
        return f"Keep {name} at least", 1.0, None, 0.001
    return f"Keep {name} at most (lower is better)", 1.0, None, 0.0001


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
    st.subheader("Prune the most while the metric stays at a floor")
    st.caption(
        f"Each method's plans are one knob (how much it prunes). The search measures the "
        f"unpruned model and {SCAN} evenly spaced knobs up to the cap ({cap}% per layer), "
        f"then narrows the edge between the best plan that meets the floor and the next one "
        f"that misses it in {REFINE} more steps: at most {1 + SCAN + REFINE} plans, each "
        f"measured on {len(data):,} evaluation samples. The metric is not monotone in the "
        "knob, so the whole scan is measured, not just bisected. The chosen plan is "
        "recorded as an experiment, measured with latency.")
    label, scale, maximum, step = floor_label(bench)
    seed(FLOOR_VALUE_KEY, default_floor(bench))
    seed(FLOOR_METHOD_KEY, Method.SENSITIVITY)
    seed(FLOOR_OBJECTIVE_KEY, Objective.SPARSITY)
    cols = st.columns([1.4, 1.2, 1.4, 1.2], vertical_alignment="bottom")
    value = cols[0].number_input(label, min_value=0.0, max_value=maximum, step=step,
                                 format="%.2f" if accuracy else "%.5g", key=FLOOR_VALUE_KEY)
    method = cols[1].selectbox("Method", list(Method), format_func=lambda m: m.value,
                               key=FLOOR_METHOD_KEY) or Method.SENSITIVITY
    objective = cols[2].selectbox(
        "Prune for", list(Objective), format_func=lambda o: OBJECTIVES.get(o, o.value),
        key=FLOOR_OBJECTIVE_KEY) or Objective.SPARSITY
    run = cols[3].button("Find the plan", type="primary", key=FLOOR_RUN_KEY, width="stretch")
    floor = value * scale
    # A search is shown while the analysis and the inputs it was made with are current.
    key = (result.model, result.criterion, result.granularity.value, result.levels,
           result.complete, result.samples, floor, method, objective, cap)
    if run:
        with st.spinner(f"Measuring up to {1 + SCAN + REFINE} plans of {method.value} "
                        "pruning ..."), user_errors("The search failed"):
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
    return f"{value * 100:.2f} pts" if accuracy else f"{value:.4g}"


def show_found(bench: Workbench, found: FloorResult, experiment: Experiment | None,
               accuracy: bool) -> None:
    """The search's outcome: what it found, its curve, and the plan to apply."""
    name = found.metric_name
    chosen = found.chosen
    if chosen is None:
        st.warning(found.message())
    else:
        margin = found.margin or 0.0
        noise = "" if chosen.stderr is None else (
            f" (the metric's standard error: {points(chosen.stderr, accuracy)})")
        within = (f". That is less than the measurement's noise: on other data like this the "
                  f"{name} may miss the floor" if found.within_noise else "")
        cap_text = (" Every plan up to the cap meets the floor: raise the cap to prune more."
                    if found.status is Status.CAP else "")
        shown = (st.warning if found.within_noise else st.success)
        shown(f"{found.method.value}: {chosen.sparsity:.1%} sparsity, "
              f"{chosen.macs_fraction:.1%} of the MACs, {chosen.size_bytes / 1024:.1f} KiB "
              f"sparse file; measured {name} {show_metric(chosen.metric, accuracy)}, "
              f"{points(margin, accuracy)} inside the floor{noise}{within}.")
        st.caption(f"{found.evaluations} plans measured in {found.seconds:.1f} s "
                   f"(unpruned: {show_metric(found.baseline.metric, accuracy)}).{cap_text}")
    st.plotly_chart(floor_curve(found), key=FLOOR_CHART_KEY)
    for note in found.notes:
        st.info(note)
    if chosen is None:
        return
    if experiment is not None:
        st.caption(f"Recorded as experiment #{experiment.id} {experiment.label}.")
    if st.button("Make it this tab's plan", key=FLOOR_APPLY_KEY,
                 help="Apply the chosen plan, to adjust by hand on the Prune page."):
        with user_errors("The plan could not be applied"):
            state.restore_plan(chosen.plan)
        st.success(f"This tab's plan is now {describe_plan(chosen.plan)}.")
        st.page_link("app_pages/prune.py", label="Adjust it on the Prune page",
                     icon=":material/content_cut:")
