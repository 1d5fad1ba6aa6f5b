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
from pruneviz.workflows.eta import eta_text
from pruneviz.workflows.jobqueue import waiting_text
from pruneviz.workflows.workbench import Workbench

SWEEP_LEVELS: tuple[float, ...] = tuple(i / 10 for i in range(1, 10))  # 10% to 90%
GRANULARITIES = ["unstructured", "filter", "channel"]
CRITERIA = ["l1", "l2", "random", "fpgm", "lsh", "taylor"]
POLL_SECONDS = 0.5


def sweep_section(bench: Workbench, *, expanded: bool) -> None:
    """The sweep's expander: granularity and criterion, Measure and Cancel, progress."""
    worker = sweep_worker(bench)
    progress = worker.snapshot()
    levels = SWEEP_LEVELS
    with st.expander(f"Add a sweep: the same sparsity on every layer, {levels[0]:.0%} to "
                     f"{levels[-1]:.0%}", expanded=expanded or progress.running):
        cols: Sequence[DeltaGenerator] = st.columns([1, 1, 2], vertical_alignment="bottom")
        granularity = cols[0].selectbox("granularity", GRANULARITIES,
                                        key=keys.SWEEP_GRAN_KEY)
        criterion = cols[1].selectbox("criterion", CRITERIA, key=keys.SWEEP_CRIT_KEY)
        cols[2].caption(f"{len(levels)} configurations, each pruned, evaluated and timed in "
                        "the background on a copy of the model: the other pages stay usable.")
        clicked = run_and_cancel(
            "Run sweep", running=progress.running, run_key=keys.SWEEP_KEY,
            cancel_key=keys.SWEEP_CANCEL_KEY, cancel=worker.cancel,
            cancel_help="Stops after the configuration being measured; the ones measured "
            "stay in the experiments.")
        if clicked:
            space = state.workspace()
            try:
                worker.start(levels, granularity, criterion, weights=space.weights,
                             state=space.weights_state(space.weights))
            except (PrunevizError, ValueError, RuntimeError) as exc:
                st.error(f"The sweep cannot run: {exc}")
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
        st.error(f"The sweep stopped: {progress.error}")
    if not progress.total:
        return
    if progress.queued is not None:
        status = waiting_text(progress.queued, progress.jobs_running)
    elif progress.running:
        status = eta_text(progress.done, progress.total, progress.elapsed)
    elif progress.stopped:
        status = ("stopped" if progress.error else "cancelled") + \
            f": the {progress.done} measured are in the experiments"
    else:
        status = "done"
    st.progress(progress.done / progress.total,
                text=f"{progress.done} of {progress.total} configurations measured — "
                f"{status}")
