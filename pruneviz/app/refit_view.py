"""The Prune page's reconstruction switch: refit the kept weights of the current plan
(workflows.refit), show the metric with refit next to without, and adopt the refit
weights as this tab's weight set or drop them."""

from __future__ import annotations

import streamlit as st

from pruneviz.app import keys, state
from pruneviz.app.widgets import show_metric, shows_percent, user_errors
from pruneviz.core.plan import Refit
from pruneviz.errors import PrunevizError
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
        "Refit the kept weights (reconstruction)", key=keys.REFIT_SWITCH_KEY,
        on_change=_switched,
        help="After pruning, refit each layer's kept weights (a damped least-squares solve "
        "per output row) so that the pruned layer reproduces the unpruned layer's outputs "
        "on calibration samples of the training data, layer by layer in model order. No "
        "training: recovery by reconstruction. The refit weights are a new weight set; "
        "the original weights stay as they are.")
    wanted = bool(st.session_state.pop(keys.REFIT_WANTED_KEY, False))
    if not on:
        return
    session = bench.session
    if session.plan.is_empty:
        st.caption("Prune something first: the refit recovers what a plan's pruning lost.")
        return
    weights = state.current_weights()
    where = (session.plan.key(), weights)
    runs = _runs()
    # the refit of this plan, or the one whose weights the tab now prunes
    run = runs.get(where) or next(
        (r for r in runs.values() if r.name == weights and r.plan.key() == where[0]), None)
    if run is None and not wanted:
        wanted = st.button("Refit this plan", key=keys.REFIT_GO_KEY, type="primary",
                           help="The plan changed since the last refit.")
    if run is None and wanted:
        try:
            with st.spinner("Refitting the kept weights layer by layer…"):
                run = record_refit(state.workspace(), Refit())
        except PrunevizError as exc:  # said here: the rest of the page still draws
            st.error(f"The kept weights could not be refit: {exc}")
            return
        runs[where] = run
    if run is not None:
        _show(bench, run)


def _show(bench: Workbench, run: RefitRun) -> None:
    accuracy = shows_percent(bench.eval_data)
    metric_name = bench.eval_data.metric_name
    before, after = run.twin.evaluation.metric, run.report.evaluation.metric
    cols = st.columns(3)
    cols[0].metric(f"{metric_name}, one-shot", show_metric(before, accuracy))
    delta = after - before
    cols[1].metric(f"{metric_name}, with refit", show_metric(after, accuracy),
                   delta=f"{delta * 100:+.2f} pt" if accuracy else f"{delta:+.4g}",
                   delta_color="normal" if bench.eval_data.higher_is_better else "inverse")
    cols[2].metric("refit took", f"{run.result.seconds:.2f} s")
    settings = run.result.settings
    st.caption(
        f"Weights **{run.name}** (experiment #{run.experiment.id}): damping "
        f"{settings.damping:g}, {run.result.samples:,} calibration samples of "
        f"{run.result.data_name}, seed {settings.seed}; each layer's output error against "
        "the unpruned model on those samples:")
    st.dataframe(
        [{"layer": layer.name, "type": layer.type,
          "error one-shot": "-" if layer.before is None else f"{layer.before:.4f}",
          "error refit": "-" if layer.after is None else f"{layer.after:.4f}",
          "refit": "yes" if layer.refit else f"no: {layer.reason}"}
         for layer in run.result.layers], hide_index=True)
    for note in run.result.notes:
        st.warning(note)
    in_use = state.current_weights() == run.name
    buttons = st.columns([2, 1, 2], vertical_alignment="center")
    if buttons[0].button("Use the refit weights in this tab", key=keys.REFIT_USE_KEY,
                      type="primary", disabled=in_use, width="stretch",
                      help="The Prune, Inspect, Deploy and Trade-offs pages then work on "
                      "them, with this plan applied."):
        with user_errors("The refit weights could not be used"):
            state.use_weights(run.name, run.plan)
        st.session_state[keys.REFIT_FLASH_KEY] = (
            f"This tab now prunes the {run.name} weights; the "
            f"{'original' if run.weights == ORIGINAL else run.weights} weights are kept, bit "
            "for bit, one click away.")
        st.rerun()
    back = "original" if run.weights == ORIGINAL else run.weights
    if in_use:
        if buttons[1].button(f"Back to the {back} weights", key=keys.REFIT_BACK_KEY):
            with user_errors(f"The {back} weights could not be restored"):
                state.use_weights(run.weights, run.plan)
            st.session_state[keys.REFIT_FLASH_KEY] = (
                f"This tab prunes the {back} weights again, with the same plan.")
            st.rerun()
    else:
        buttons[1].button("Drop them", key=keys.REFIT_DROP_KEY, on_click=_drop, args=(run,),
                          help="Keep pruning the weights this tab has (the refit's "
                          "experiment stays in the log).")


def _drop(run: RefitRun) -> None:
    """Forget the refit here and turn the switch off."""
    _runs().pop((run.plan.key(), run.weights), None)
    st.session_state[keys.REFIT_SWITCH_KEY] = False
