"""The Prune page's reconstruction switch: refit the kept weights of the current plan
(workflows.refit), show the metric with refit next to without, and adopt the refit
weights as this tab's weight set or drop them."""

from __future__ import annotations

import streamlit as st

from pruneviz.app import keys, state
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.core.plan import Refit
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.refit import RefitRun, record_refit
from pruneviz.workflows.workbench import Workbench


def _runs() -> dict[tuple[str, str], RefitRun]:
    runs: dict[tuple[str, str], RefitRun] = st.session_state.setdefault(keys.REFIT_RUNS_KEY, {})
    return runs


def _switched() -> None:
    st.session_state[keys.REFIT_WANTED_KEY] = bool(st.session_state.get(keys.REFIT_SWITCH_KEY))


def refit_section(bench: Workbench) -> None:
    """The switch; when on, the refit of the current plan (computed with a spinner when
    the switch is turned on or the button pressed, then kept per plan and weights)."""
    if (flash := st.session_state.pop(keys.REFIT_FLASH_KEY, None)) is not None:
        st.success(flash, icon=":material/check:")
    on = st.toggle(
        _("Refit the kept weights (reconstruction)"), key=keys.REFIT_SWITCH_KEY,
        on_change=_switched,
        help=_("After pruning, refit each layer's kept weights (a damped least-squares solve "
               "per output row) so that the pruned layer reproduces the unpruned layer's "
               "outputs on calibration samples of the training data, layer by layer in model "
               "order. No training: recovery by reconstruction. The refit weights are a new "
               "weight set; the original weights stay as they are."))
    wanted = bool(st.session_state.pop(keys.REFIT_WANTED_KEY, False))
    if not on:
        return
    session = bench.session
    if session.plan.is_empty:
        st.caption(_("Prune something first: the refit recovers what a plan's pruning lost."))
        return
    weights = state.current_weights()
    where = (session.plan.key(), weights)
    runs = _runs()
    # the refit of this plan, or the one whose weights the tab now prunes
    run = runs.get(where) or next(
        (r for r in runs.values() if r.name == weights and r.plan.key() == where[0]), None)
    if run is None and not wanted:
        wanted = st.button(_("Refit this plan"), key=keys.REFIT_GO_KEY, type="primary",
                           help=_("The plan changed since the last refit."))
    if run is None and wanted:
        try:
            with st.spinner(_("Refitting the kept weights layer by layer…")):
                run = record_refit(state.workspace(), Refit())
        except PrunevizError as exc:  # said here: the rest of the page still draws
            st.error(_("The kept weights could not be refit: {error}").format(error=exc))
            return
        runs[where] = run
    if run is not None:
        _show(bench, run)


def _show(bench: Workbench, run: RefitRun) -> None:
    accuracy = shows_percent(bench.eval_data)
    metric_name = bench.eval_data.metric_name
    metric_name = _("accuracy") if metric_name == "accuracy" else metric_name
    before, after = run.twin.evaluation.metric, run.report.evaluation.metric
    cols = st.columns(3)
    cols[0].metric(_("{metric}, one-shot").format(metric=metric_name),
                   show_metric(before, accuracy))
    delta = after - before
    cols[1].metric(_("{metric}, with refit").format(metric=metric_name),
                   show_metric(after, accuracy),
                   delta=f"{delta * 100:+.2f} pt" if accuracy else f"{delta:+.4g}",
                   delta_color="normal" if bench.eval_data.higher_is_better else "inverse")
    cols[2].metric(_("refit took"), f"{run.result.seconds:.2f} s")
    settings = run.result.settings
    st.caption(_(
        "Weights **{weights}** (experiment #{id}): damping {damping}, {samples} calibration "
        "samples of {data}, seed {seed}; each layer's output error against the unpruned model "
        "on those samples:").format(
            weights=run.name, id=run.experiment.id, damping=f"{settings.damping:g}",
            samples=f"{run.result.samples:,}", data=run.result.data_name, seed=settings.seed))
    st.dataframe(
        [{_("layer"): layer.name, _("type"): layer.type,
          _("error one-shot"): "-" if layer.before is None else f"{layer.before:.4f}",
          _("error refit"): "-" if layer.after is None else f"{layer.after:.4f}",
          _("refit"): _("yes") if layer.refit else _("no: {reason}").format(
              reason=layer.reason)}
         for layer in run.result.layers], hide_index=True)
    for note in run.result.notes:
        st.warning(note)
    in_use = state.current_weights() == run.name
    buttons = st.columns([2, 1, 2], vertical_alignment="center")
    if buttons[0].button(_("Use the refit weights in this tab"), key=keys.REFIT_USE_KEY,
                         type="primary", disabled=in_use, width="stretch",
                         help=_("The Prune, Inspect, Deploy and Trade-offs pages then work "
                                "on them, with this plan applied.")):
        with user_errors(_("The refit weights could not be used")):
            state.use_weights(run.name, run.plan)
        st.session_state[keys.REFIT_FLASH_KEY] = _(
            "This tab now prunes the {weights} weights; the {before} weights are kept, bit "
            "for bit, one click away.").format(
                weights=run.name,
                before=_("original") if run.weights == ORIGINAL else run.weights)
        st.rerun()
    back = _("original") if run.weights == ORIGINAL else run.weights
    if in_use:
        if buttons[1].button(_("Back to the {weights} weights").format(weights=back),
                             key=keys.REFIT_BACK_KEY):
            with user_errors(_("The {weights} weights could not be restored").format(
                    weights=back)):
                state.use_weights(run.weights, run.plan)
            st.session_state[keys.REFIT_FLASH_KEY] = _(
                "This tab prunes the {weights} weights again, with the same plan.").format(
                    weights=back)
            st.rerun()
    else:
        buttons[1].button(_("Drop them"), key=keys.REFIT_DROP_KEY, on_click=_drop, args=(run,),
                          help=_("Keep pruning the weights this tab has (the refit's "
                                 "experiment stays in the log)."))


def _drop(run: RefitRun) -> None:
    """Forget the refit here and turn the switch off."""
    _runs().pop((run.plan.key(), run.weights), None)
    st.session_state[keys.REFIT_SWITCH_KEY] = False
