"""The Trade-offs page's uniform sweep: its controls, and its progress while it is measured
in the background."""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

from pruneviz.app import keys, state
from pruneviz.app.widgets import run_and_cancel
from pruneviz.app.worker import SweepWorker, record_sweep_points, sweep_worker
from pruneviz.errors import PrunevizError
from pruneviz.i18n import N_, _
from pruneviz.workflows.eta import eta_text
from pruneviz.workflows.experiments import granularity_name
from pruneviz.workflows.jobqueue import waiting_text
from pruneviz.workflows.workbench import Workbench

SWEEP_LEVELS: tuple[float, ...] = tuple(i / 10 for i in range(1, 10))  # 10% to 90%
GRANULARITIES = ["unstructured", "filter", "channel"]
CRITERIA = ["l1", "l2", "random", "fpgm", "lsh", "taylor"]
CRITERION_NAMES = {"random": N_("random"), "fpgm": N_("fpgm")}  # the others: their ids
POLL_SECONDS = 0.5

def metric_label(name: str) -> str:
    """A metric's name as the pages show it: accuracy translated, others (mse) as named."""
    return _("accuracy") if name == "accuracy" else name


def sweep_section(bench: Workbench, *, expanded: bool) -> None:
    """The sweep's expander: granularity and criterion, Measure and Cancel, progress."""
    worker = sweep_worker(bench)
    progress = worker.snapshot()
    levels = SWEEP_LEVELS
    with st.expander(_("Add a sweep: the same sparsity on every layer, {low} to {high}").format(
            low=f"{levels[0]:.0%}", high=f"{levels[-1]:.0%}"),
            expanded=expanded or progress.running):
        cols: Sequence[DeltaGenerator] = st.columns([1, 1, 2], vertical_alignment="bottom")
        granularity = cols[0].selectbox(_("granularity"), GRANULARITIES,
                                        format_func=granularity_name, key=keys.SWEEP_GRAN_KEY)
        criterion = cols[1].selectbox(
            _("criterion"), CRITERIA, key=keys.SWEEP_CRIT_KEY,
            format_func=lambda c: _(CRITERION_NAMES[c]) if c in CRITERION_NAMES else c)
        cols[2].caption(_("{count} configurations, each pruned, evaluated and timed in the "
                          "background on a copy of the model: the other pages stay "
                          "usable.").format(count=len(levels)))
        clicked = run_and_cancel(
            _("Run sweep"), running=progress.running, run_key=keys.SWEEP_KEY,
            cancel_key=keys.SWEEP_CANCEL_KEY, cancel=worker.cancel,
            cancel_help=_("Stops after the configuration being measured; the ones measured "
                          "stay in the experiments."))
        if clicked:
            space = state.workspace()
            try:
                worker.start(levels, granularity, criterion, weights=space.weights,
                             state=space.weights_state(space.weights))
            except (PrunevizError, ValueError, RuntimeError) as exc:
                st.error(_("The sweep cannot run: {problem}").format(problem=exc))
            else:
                st.rerun()  # redraw the buttons, and poll while it runs
        st.fragment(show_sweep, run_every=POLL_SECONDS if progress.running else None)(
            worker, progress.running)


def show_sweep(worker: SweepWorker, was_running: bool) -> None:
    """The sweep's progress, polled while it runs; each configuration measured joins the
    tab's experiments at once."""
    progress = worker.snapshot()
    record_sweep_points()
    if was_running and not progress.running:
        st.rerun(scope="app")  # finished: show the new points on the charts
    if progress.error:
        st.error(_("The sweep stopped: {problem}").format(problem=progress.error))
    if not progress.total:
        return
    if progress.queued is not None:
        status = waiting_text(progress.queued, progress.jobs_running)
    elif progress.running:
        status = eta_text(progress.done, progress.total, progress.elapsed)
    elif progress.stopped:
        status = (_("stopped: the {count} measured are in the experiments") if progress.error
                  else _("cancelled: the {count} measured are in the experiments")).format(
            count=progress.done)
    else:
        status = _("done")
    st.progress(progress.done / progress.total,
                text=_("{done} of {total} configurations measured — {status}").format(
                    done=progress.done, total=progress.total, status=status))
