"""The Sensitivity page's sections: the analysis (progress, curves, ranking) and a budget
spent four ways."""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

from pruneviz.app import floor_view, state
from pruneviz.app.keys import (
    COMPARISON_KEY,
    SENS_CAP_KEY,
    SENS_COMPARE_KEY,
    SENS_CURVES_KEY,
    SENS_HEATMAP_KEY,
    SENS_KIND_KEY,
    SENS_OWL_KEY,
    SENS_PROPOSE_KEY,
    sens_value_key,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.app.worker import Progress, SensitivityWorker
from pruneviz.output.figures import outlier_ratio_bars
from pruneviz.output.run_figures import sensitivity_curves, sensitivity_heatmap
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    format_quantity,
    plan_for_budget,
)
from pruneviz.workflows.eta import eta_text
from pruneviz.workflows.experiments import describe_plan
from pruneviz.workflows.jobqueue import waiting_text
from pruneviz.workflows.sensitivity import SensitivityResult
from pruneviz.workflows.workbench import Workbench
from pruneviz.workflows.workspace import Compared


class BudgetInput(NamedTuple):
    choice: str  # in the budget picker
    label: str  # of the value input
    scale: float  # value input -> Budget value
    maximum: float | None
    step: float
    format: str
    measured: str  # table column


BUDGETS = {
    BudgetKind.SPARSITY: BudgetInput("overall sparsity", "at least (% of parameters zero)",
                                     0.01, 100.0, 1.0, "%.1f", "sparsity"),
    BudgetKind.MACS: BudgetInput("weight MACs", "at most (% of the unpruned MACs)",
                                 0.01, 100.0, 1.0, "%.1f", "MACs (of unpruned)"),
    BudgetKind.SIZE: BudgetInput("sparse file size", "at most (KiB)", 1024.0, None, 0.1,
                                 "%.1f", "sparse file"),
    BudgetKind.LATENCY: BudgetInput("latency", "at most (ms, deployable form to ship)", 1.0,
                                    None, 0.01, "%.2f", "latency of the form to ship"),
}


def show_drop(value: float, accuracy: bool) -> str:
    """A metric drop: in points for accuracies."""
    return f"{value * 100:.2f} pts" if accuracy else f"{value:+.5f}"


def finished(progress: Progress) -> bool:
    """The pass the progress is of ended with every point known."""
    return not progress.running and progress.done == progress.total and not progress.error


def pass_text(progress: Progress) -> str:
    """Which pass the progress is of, when there are two: "first pass on 2,000 samples: ",
    "refining on all 10,000 samples: ", or "refined on ..." once that is done (nothing
    when the data is not a subset)."""
    if progress.full_samples is None:
        return ""
    if progress.refining:
        verb = "refined" if finished(progress) else "refining"
        return f"{verb} on all {progress.samples:,} samples: "
    return f"first pass on {progress.samples:,} samples: "


def progress_text(progress: Progress) -> str:
    """The progress bar's text: the pass, points done of total, and the time left (or how
    the pass ended); while the analysis waits for a free worker, its place in the queue."""
    if progress.queued is not None:
        return waiting_text(progress.queued, progress.jobs_running)
    if progress.running:
        state_text = eta_text(progress.done, progress.total, progress.elapsed)
    else:
        state_text = "done" if finished(progress) else "stopped"
    return f"{pass_text(progress)}{progress.done} of {progress.total} points — {state_text}"


def show_analysis(worker: SensitivityWorker, bench: Workbench, was_running: bool,
                  was_refining: bool) -> None:
    """Progress, curves, heatmap and ranking; polled while the analysis runs."""
    metric_name = bench.eval_data.metric_name
    accuracy = shows_percent(bench.eval_data)
    progress = worker.snapshot()
    if was_running and (not progress.running or progress.refining != was_refining):
        # finished, or the first pass is: show the whole page (buttons, budget section)
        st.rerun(scope="app")
    if progress.error:
        st.error(f"The analysis stopped: {progress.error}")
    if progress.total:
        st.progress(progress.done / progress.total, text=progress_text(progress))
    result = progress.result
    if result is None:
        if not progress.running and not progress.error:
            st.info("Choose a granularity, a criterion and the levels, then press **Run**.")
        return
    took = "" if progress.running and not progress.refining else (
        f"; took {result.seconds:.1f} s (points this tab measured before are reused)")
    full = progress.full_samples
    if full is None or result.samples == full:
        measured_on = f"measured on all {result.samples:,} evaluation samples"
    else:
        measured_on = f"first pass, measured on {result.samples:,} of the {full:,} samples"
    st.caption(
        f"{result.granularity.value}, {result.criterion}: {len(result.items)} layers or "
        f"groups x {len(result.levels)} levels, {measured_on}; unpruned {metric_name} "
        f"{show_metric(result.baseline.metric, accuracy)}{took}.")
    if full is not None and result.complete and result.samples != full:
        if progress.running:
            st.info(f"These curves are the first pass's, on {result.samples:,} samples: "
                    f"they are being refined on all {full:,} and will be replaced when that "
                    "is done.", icon=":material/hourglass_top:")
        else:
            st.info(f"The refinement on all {full:,} samples was stopped: these curves are "
                    f"the first pass's, on {result.samples:,} samples. Run again to refine "
                    "them (the first pass is reused).")
    if not result.complete and not progress.running:
        st.warning(f"Cancelled after {progress.done} of {progress.total} points: this result "
                   "is incomplete. Layers without a curve are missing from the ranking and "
                   "left unpruned by the allocation below.")
    curves_tab, heatmap_tab = st.tabs(["Curves", "Heatmap"])
    curves_tab.plotly_chart(sensitivity_curves(result), key=SENS_CURVES_KEY)
    heatmap_tab.plotly_chart(sensitivity_heatmap(result), key=SENS_HEATMAP_KEY)

    tolerance = result.default_tolerance()
    within = "1 pt" if accuracy else f"{'-' if result.higher_is_better else '+'}{tolerance:.5g}"
    st.subheader("Most to least robust")
    st.dataframe(
        [
            {
                "rank": rank,
                "layer or group": row["label"],
                "unit": row["unit"],
                f"safe up to (drop ≤ {within})": f"{row['safe_sparsity']:.0%}",
                "mean drop": show_drop(row["mean_drop"], accuracy),
                f"worst {metric_name}": show_metric(row["worst_metric"], accuracy),
                "layers changed": ", ".join(row["layers"]),
            }
            for rank, row in enumerate(result.ranking(tolerance), start=1)
        ],
        hide_index=True,
        column_config={"layer or group": st.column_config.TextColumn(width="medium")},
    )


def spend_budget(bench: Workbench, result: SensitivityResult) -> None:
    """A budget, four ways: uniform, global, sensitivity-guided and outlier-weighted (OWL)
    plans fitted to it, compared, and the sensitivity plan proposed as this tab's plan."""
    st.subheader("Spend a budget where it costs least")
    st.caption(
        "Four plans are fitted to the budget by measuring the model: **uniform** (the same "
        "amount on every layer), **global** (one ranking of all layers' structures), "
        "**sensitivity** (each layer pruned up to the same marginal cost on its curve above) "
        "and **owl** (layers with more outlier weights, by their wanda scores |W|·‖X‖ on "
        "calibration data, pruned less; Yin et al. 2023). "
        "The sensitivity plan's *predicted* metric adds up the curves' drops, as if the layers "
        "did not interact; the measured one is the real model's. Each plan is recorded as an "
        "experiment, measured with latency."
    )
    stored = st.session_state.get(COMPARISON_KEY)
    if stored is not None:  # the controls start at the last comparison's budget
        seed(SENS_KIND_KEY, stored["kind"])
        seed(sens_value_key(stored["kind"].value), stored["value"])
        seed(SENS_CAP_KEY, stored["cap"])
    measured = state.workspace().baseline().latency
    baseline_latency = measured.median_ms if measured else 1.0
    seed(SENS_KIND_KEY, BudgetKind.SPARSITY)
    seed(sens_value_key("sparsity"), 80.0)
    seed(sens_value_key("macs"), 50.0)
    seed(sens_value_key("size_bytes"), round(bench.baseline.sizes.sparse / 1024 / 2, 1))
    seed(sens_value_key("latency_ms"), round(0.9 * baseline_latency, 2))
    seed(SENS_CAP_KEY, 95)
    cols = st.columns([1.3, 1.3, 1.5, 1.2, 1], vertical_alignment="bottom")
    kind = cols[0].selectbox("Budget", list(BUDGETS), format_func=lambda k: BUDGETS[k].choice,
                             key=SENS_KIND_KEY)
    spec = BUDGETS[kind]
    value = cols[1].number_input(spec.label, min_value=0.0, max_value=spec.maximum,
                                 step=spec.step, format=spec.format,
                                 key=sens_value_key(kind.value))
    cap = cols[2].slider("No layer above (%)", 1, 100, key=SENS_CAP_KEY,
                         help="A cap for every method, so that none empties a layer.")
    with user_errors("This budget is not valid"):
        budget = Budget(kind, value * spec.scale)
    compare = cols[3].button("Compare at this budget", type="primary", key=SENS_COMPARE_KEY,
                             width="stretch")
    propose = cols[4].button("Propose", key=SENS_PROPOSE_KEY, width="stretch",
                             help="Make the sensitivity plan at this budget this tab's plan, to "
                             "adjust by hand on the Prune page.")
    # A comparison is shown while the analysis and the budget it was made for are current.
    key = (result.model, result.criterion, result.granularity.value, result.levels,
           result.complete, result.samples, budget, cap)

    if compare:
        with st.spinner("Fitting each method's plan to the budget, then measuring each with "
                        "latency ..."), user_errors("The comparison failed"):
            compared = state.record_budget_comparison(result, budget, cap / 100)
        stored = {"key": key, "kind": kind, "value": value, "cap": cap, "rows": compared}
        st.session_state[COMPARISON_KEY] = stored
    current = stored["rows"] if stored is not None and stored["key"] == key else None

    if current is not None:
        comparison_table(bench, kind, current)
    if propose:
        propose_plan(bench, result, budget, cap, current)
    floor_view.keep_floor(bench, result, cap)


def comparison_table(bench: Workbench, kind: BudgetKind, current: list[Compared]) -> None:
    """Each method's plan at one budget, measured, any notes on them, and OWL's outlier
    ratios beside the sparsities it gave each layer."""
    metric_name = bench.eval_data.metric_name
    accuracy = shows_percent(bench.eval_data)
    spec = BUDGETS[kind]
    st.dataframe(
        [
            {
                "method": c.outcome.method.value,
                f"{spec.measured} (measured)": format_quantity(kind, c.outcome.measured),
                "met": "yes" if c.outcome.met else "no",
                f"{metric_name} (measured)":
                    show_metric(c.outcome.report.evaluation.metric, accuracy),
                f"{metric_name} (predicted)": "-"
                if c.outcome.predicted_metric is None
                else show_metric(c.outcome.predicted_metric, accuracy),
                "non-zero params": f"{c.outcome.report.params_nonzero:,}",
                "experiment": f"#{c.experiment.id} {c.experiment.label}",
            }
            for c in current
        ],
        hide_index=True,
    )
    for c in current:
        for note in c.outcome.notes:
            st.warning(f"{c.outcome.method.value}: {note}")
    owl = next((c.outcome for c in current if c.outcome.outlier_ratios), None)
    if owl is not None and owl.outlier_ratios is not None:
        names = list(owl.outlier_ratios)
        levels = [(owl.plan.layers[n].sparsity or 0.0) if n in owl.plan.layers else 0.0
                  for n in names]
        st.plotly_chart(outlier_ratio_bars(names, [owl.outlier_ratios[n] for n in names],
                                           levels), key=SENS_OWL_KEY)
    st.page_link("app_pages/tradeoffs.py", icon=":material/insights:",
                 label="All of them are in this tab's experiments: compare them on Trade-offs")


def propose_plan(bench: Workbench, result: SensitivityResult, budget: Budget, cap: int,
                 current: list[Compared] | None) -> None:
    """Make the sensitivity plan at `budget` this tab's plan (the one just compared, if any)."""
    metric_name = bench.eval_data.metric_name
    accuracy = shows_percent(bench.eval_data)
    with st.spinner("Fitting the sensitivity plan to the budget ..."), \
            user_errors("The sensitivity plan could not be applied"):
        if current is not None:
            outcome = next(c.outcome for c in current
                           if c.outcome.method is Method.SENSITIVITY)
        else:
            outcome = plan_for_budget(bench, budget, Method.SENSITIVITY,
                                      granularity=result.granularity,
                                      criterion=result.criterion, sensitivity=result,
                                      cap=cap / 100)
        state.restore_plan(outcome.plan)
    predicted = outcome.predicted_metric
    st.success(
        f"This tab's plan is now the sensitivity allocation ({describe_plan(outcome.plan)}): "
        f"measured {metric_name} {show_metric(outcome.report.evaluation.metric, accuracy)}"
        + (f", predicted {show_metric(predicted, accuracy)}" if predicted is not None else "")
        + ". Go to the Prune page to adjust it by hand: its sliders show whole percents, and "
        "the proposed amounts stay exact until you move one."
    )
    st.page_link("app_pages/prune.py", label="Adjust it on the Prune page",
                 icon=":material/content_cut:")
