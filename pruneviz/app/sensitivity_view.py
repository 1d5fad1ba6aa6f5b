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
from pruneviz.app.sweep_view import metric_label
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.app.worker import Progress, SensitivityWorker
from pruneviz.i18n import N_, _
from pruneviz.output.figures import outlier_ratio_bars
from pruneviz.output.run_figures import sensitivity_curves, sensitivity_heatmap
from pruneviz.workflows.allocation import (
    Budget,
    BudgetKind,
    Method,
    format_quantity,
    method_name,
    plan_for_budget,
)
from pruneviz.workflows.eta import eta_text
from pruneviz.workflows.experiments import describe_plan, granularity_name
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


BUDGETS = {  # texts marked N_: translated where shown
    BudgetKind.SPARSITY: BudgetInput(N_("overall sparsity"),
                                     N_("at least (% of parameters zero)"),
                                     0.01, 100.0, 1.0, "%.1f", N_("sparsity")),
    BudgetKind.MACS: BudgetInput(N_("weight MACs"), N_("at most (% of the unpruned MACs)"),
                                 0.01, 100.0, 1.0, "%.1f", N_("MACs (of unpruned)")),
    BudgetKind.SIZE: BudgetInput(N_("sparse file size"), N_("at most (KiB)"), 1024.0, None,
                                 0.1, "%.1f", N_("sparse file")),
    BudgetKind.LATENCY: BudgetInput(N_("latency"), N_("at most (ms, deployable form to ship)"),
                                    1.0, None, 0.01, "%.2f", N_("latency of the form to ship")),
}
UNIT_NAMES = {"weight": N_("weight"), "filter": N_("filter"), "channel": N_("channel"),
              "head": N_("head"), "hidden unit": N_("hidden unit")}


def show_drop(value: float, accuracy: bool) -> str:
    """A metric drop: in points for accuracies."""
    return _("{value} pts").format(value=f"{value * 100:.2f}") if accuracy else f"{value:+.5f}"


def finished(progress: Progress) -> bool:
    """The pass the progress is of ended with every point known."""
    return not progress.running and progress.done == progress.total and not progress.error


def pass_text(progress: Progress) -> str:
    """Which pass the progress is of, when there are two: "first pass on 2,000 samples: ",
    "refining on all 10,000 samples: ", or "refined on ..." once that is done (nothing
    when the data is not a subset)."""
    if progress.full_samples is None:
        return ""
    count = f"{progress.samples:,}"
    if progress.refining:
        if finished(progress):
            return _("refined on all {count} samples: ").format(count=count)
        return _("refining on all {count} samples: ").format(count=count)
    return _("first pass on {count} samples: ").format(count=count)


def progress_text(progress: Progress) -> str:
    """The progress bar's text: the pass, points done of total, and the time left (or how
    the pass ended); while the analysis waits for a free worker, its place in the queue."""
    if progress.queued is not None:
        return waiting_text(progress.queued, progress.jobs_running)
    if progress.running:
        state_text = eta_text(progress.done, progress.total, progress.elapsed)
    else:
        state_text = _("done") if finished(progress) else _("stopped")
    return pass_text(progress) + _("{done} of {total} points — {status}").format(
        done=progress.done, total=progress.total, status=state_text)


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
        st.error(_("The analysis stopped: {problem}").format(problem=progress.error))
    if progress.total:
        st.progress(progress.done / progress.total, text=progress_text(progress))
    result = progress.result
    if result is None:
        if not progress.running and not progress.error:
            st.info(_("Choose a granularity, a criterion and the levels, then press **Run**."))
        return
    took = "" if progress.running and not progress.refining else _(
        "; took {seconds} s (points this tab measured before are reused)").format(
        seconds=f"{result.seconds:.1f}")
    full = progress.full_samples
    samples = f"{result.samples:,}"
    if full is None or result.samples == full:
        measured_on = _("measured on all {count} evaluation samples").format(count=samples)
    else:
        measured_on = _("first pass, measured on {count} of the {full} samples").format(
            count=samples, full=f"{full:,}")
    st.caption(_(
        "{granularity}, {criterion}: {items} layers or groups x {levels} levels, "
        "{measured_on}; unpruned {metric_name} {metric}{took}.").format(
        granularity=granularity_name(result.granularity.value), criterion=result.criterion,
        items=len(result.items), levels=len(result.levels), measured_on=measured_on,
        metric_name=metric_label(metric_name), metric=show_metric(result.baseline.metric, accuracy),
        took=took))
    if full is not None and result.complete and result.samples != full:
        if progress.running:
            st.info(_("These curves are the first pass's, on {count} samples: they are being "
                      "refined on all {full} and will be replaced when that is done.").format(
                count=samples, full=f"{full:,}"), icon=":material/hourglass_top:")
        else:
            st.info(_("The refinement on all {full} samples was stopped: these curves are "
                      "the first pass's, on {count} samples. Run again to refine them (the "
                      "first pass is reused).").format(count=samples, full=f"{full:,}"))
    if not result.complete and not progress.running:
        st.warning(_("Cancelled after {done} of {total} points: this result is incomplete. "
                     "Layers without a curve are missing from the ranking and left unpruned "
                     "by the allocation below.").format(done=progress.done,
                                                        total=progress.total))
    curves_tab, heatmap_tab = st.tabs([_("Curves"), _("Heatmap")])
    curves_tab.plotly_chart(sensitivity_curves(result), key=SENS_CURVES_KEY)
    heatmap_tab.plotly_chart(sensitivity_heatmap(result), key=SENS_HEATMAP_KEY)

    tolerance = result.default_tolerance()
    within = _("1 pt") if accuracy else (
        f"{'-' if result.higher_is_better else '+'}{tolerance:.5g}")
    st.subheader(_("Most to least robust"))
    layer_or_group = _("layer or group")
    st.dataframe(
        [
            {
                _("rank"): rank,
                layer_or_group: row["label"],
                _("unit"): _(UNIT_NAMES.get(row["unit"], row["unit"])),
                _("safe up to (drop ≤ {within})").format(within=within):
                    f"{row['safe_sparsity']:.0%}",
                _("mean drop"): show_drop(row["mean_drop"], accuracy),
                _("worst {metric_name}").format(metric_name=metric_label(metric_name)):
                    show_metric(row["worst_metric"], accuracy),
                _("layers changed"): ", ".join(row["layers"]),
            }
            for rank, row in enumerate(result.ranking(tolerance), start=1)
        ],
        hide_index=True,
        column_config={layer_or_group: st.column_config.TextColumn(width="medium")},
    )


def spend_budget(bench: Workbench, result: SensitivityResult) -> None:
    """A budget, four ways: uniform, global, sensitivity-guided and outlier-weighted (OWL)
    plans fitted to it, compared, and the sensitivity plan proposed as this tab's plan."""
    st.subheader(_("Spend a budget where it costs least"))
    st.caption(_(
        "Four plans are fitted to the budget by measuring the model: **uniform** (the same "
        "amount on every layer), **global** (one ranking of all layers' structures), "
        "**sensitivity** (each layer pruned up to the same marginal cost on its curve above) "
        "and **owl** (layers with more outlier weights, by their wanda scores |W|·‖X‖ on "
        "calibration data, pruned less; Yin et al. 2023). "
        "The sensitivity plan's *predicted* metric adds up the curves' drops, as if the layers "
        "did not interact; the measured one is the real model's. Each plan is recorded as an "
        "experiment, measured with latency."
    ))
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
    kind = cols[0].selectbox(_("Budget"), list(BUDGETS),
                             format_func=lambda k: _(BUDGETS[k].choice), key=SENS_KIND_KEY)
    spec = BUDGETS[kind]
    value = cols[1].number_input(_(spec.label), min_value=0.0, max_value=spec.maximum,
                                 step=spec.step, format=spec.format,
                                 key=sens_value_key(kind.value))
    cap = cols[2].slider(_("No layer above (%)"), 1, 100, key=SENS_CAP_KEY,
                         help=_("A cap for every method, so that none empties a layer."))
    with user_errors(_("This budget is not valid")):
        budget = Budget(kind, value * spec.scale)
    compare = cols[3].button(_("Compare at this budget"), type="primary",
                             key=SENS_COMPARE_KEY, width="stretch")
    propose = cols[4].button(_("Propose"), key=SENS_PROPOSE_KEY, width="stretch",
                             help=_("Make the sensitivity plan at this budget this tab's plan, "
                                    "to adjust by hand on the Prune page."))
    # A comparison is shown while the analysis and the budget it was made for are current.
    key = (result.model, result.criterion, result.granularity.value, result.levels,
           result.complete, result.samples, budget, cap)

    if compare:
        with st.spinner(_("Fitting each method's plan to the budget, then measuring each "
                          "with latency ...")), user_errors(_("The comparison failed")):
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
    metric = metric_label(metric_name)
    st.dataframe(
        [
            {
                _("method"): method_name(c.outcome.method),
                _("{quantity} (measured)").format(quantity=_(spec.measured)):
                    format_quantity(kind, c.outcome.measured),
                _("met"): _("yes") if c.outcome.met else _("no"),
                _("{metric_name} (measured)").format(metric_name=metric):
                    show_metric(c.outcome.report.evaluation.metric, accuracy),
                _("{metric_name} (predicted)").format(metric_name=metric): "-"
                if c.outcome.predicted_metric is None
                else show_metric(c.outcome.predicted_metric, accuracy),
                _("non-zero params"): f"{c.outcome.report.params_nonzero:,}",
                _("experiment"): f"#{c.experiment.id} {c.experiment.label}",
            }
            for c in current
        ],
        hide_index=True,
    )
    for c in current:
        for note in c.outcome.notes:
            st.warning(f"{method_name(c.outcome.method)}: {note}")
    owl = next((c.outcome for c in current if c.outcome.outlier_ratios), None)
    if owl is not None and owl.outlier_ratios is not None:
        names = list(owl.outlier_ratios)
        levels = [(owl.plan.layers[n].sparsity or 0.0) if n in owl.plan.layers else 0.0
                  for n in names]
        st.plotly_chart(outlier_ratio_bars(names, [owl.outlier_ratios[n] for n in names],
                                           levels), key=SENS_OWL_KEY)
    st.page_link("app_pages/tradeoffs.py", icon=":material/insights:",
                 label=_("All of them are in this tab's experiments: compare them on "
                         "Trade-offs"))


def propose_plan(bench: Workbench, result: SensitivityResult, budget: Budget, cap: int,
                 current: list[Compared] | None) -> None:
    """Make the sensitivity plan at `budget` this tab's plan (the one just compared, if any)."""
    metric_name = bench.eval_data.metric_name
    accuracy = shows_percent(bench.eval_data)
    with st.spinner(_("Fitting the sensitivity plan to the budget ...")), \
            user_errors(_("The sensitivity plan could not be applied")):
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
    predicted_text = "" if predicted is None else _(", predicted {metric}").format(
        metric=show_metric(predicted, accuracy))
    st.success(_(
        "This tab's plan is now the sensitivity allocation ({plan}): measured {metric_name} "
        "{metric}{predicted}. Go to the Prune page to adjust it by hand: its sliders show "
        "whole percents, and the proposed amounts stay exact until you move one.").format(
        plan=describe_plan(outcome.plan), metric_name=metric_label(metric_name),
        metric=show_metric(outcome.report.evaluation.metric, accuracy),
        predicted=predicted_text))
    st.page_link("app_pages/prune.py", label=_("Adjust it on the Prune page"),
                 icon=":material/content_cut:")
