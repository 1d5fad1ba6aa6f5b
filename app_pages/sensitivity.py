"""Sensitivity: each layer (or coupled group) pruned alone at a ladder of amounts, measured
in the background; then a budget spent where those curves say it costs least, compared
with uniform and global pruning."""

import streamlit as st

from pruneviz.app import sensitivity_view, state
from pruneviz.app.keys import (
    SENS_CANCEL_KEY,
    SENS_CRIT_KEY,
    SENS_GRAN_KEY,
    SENS_LEVELS_KEY,
    SENS_RUN_KEY,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import criterion_select, run_and_cancel, user_errors
from pruneviz.app.worker import sensitivity_worker
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _
from pruneviz.workflows.experiments import granularity_name
from pruneviz.workflows.sensitivity import DEFAULT_LEVELS

GRANULARITIES = ["unstructured", "filter", "channel"]
LEVEL_CHOICES = sorted({*range(0, 101, 5), 98, 99, *(round(v * 100) for v in DEFAULT_LEVELS)})
POLL_SECONDS = 0.5

st.title(_("Sensitivity"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
worker = sensitivity_worker(bench)

measured_on = _("{count} held-out samples").format(
    count=f"{len(bench.eval_data):,}") if bench.eval_full is None else _(
    "the live subset of {count} held-out samples for a fast first pass, then on all {full}, "
    "whose curves replace the first ones").format(count=f"{len(bench.eval_data):,}",
                                                  full=f"{len(bench.eval_full):,}")
st.caption(_(
    "Each layer — for filters and channels, each group of coupled layers — is pruned "
    "**alone** at every level while the rest stays intact, and the model is measured on "
    "{measured_on}. Flat curves can take hard pruning; steep ones should be spared. The "
    "analysis runs in the background: other pages stay usable.").format(measured_on=measured_on)
)

# -- the analysis -------------------------------------------------------------------------
progress = worker.snapshot()
state.sensitivity_result()  # a finished analysis is kept in the tab's saved workspace
last = progress.settings  # the controls start at the last run's settings
seed(SENS_GRAN_KEY, last.granularity if last else GRANULARITIES[0])
seed(SENS_LEVELS_KEY, [v for v in LEVEL_CHOICES
                        if v / 100 in (last.levels if last else DEFAULT_LEVELS)])
cols = st.columns([1, 1, 5])
granularity = cols[0].selectbox(_("Granularity"), GRANULARITIES, key=SENS_GRAN_KEY,
                                format_func=granularity_name,
                                help=_("unstructured: single weights; filter: output channels "
                                       "(neurons); channel: input channels (features)."))
criterion = criterion_select(cols[1], granularity, SENS_CRIT_KEY,
                             last.criterion if last else None)
levels = cols[2].multiselect(_("Sparsity levels"), LEVEL_CHOICES, key=SENS_LEVELS_KEY,
                             format_func=lambda v: f"{v}%")
run_clicked = run_and_cancel(_("Run"), running=progress.running, run_key=SENS_RUN_KEY,
                             cancel_key=SENS_CANCEL_KEY, cancel=worker.cancel,
                             cancel_help=_("Stops after the point being measured; what is "
                                           "measured is kept (while refining: the first "
                                           "pass's curves)."))
if run_clicked:
    try:
        worker.start(criterion, granularity, [v / 100 for v in levels])
    except (PrunevizError, ValueError, RuntimeError) as exc:
        st.error(_("The analysis cannot run: {problem}").format(problem=exc))
    else:
        st.rerun()  # redraw the buttons, and poll while it runs


st.fragment(sensitivity_view.show_analysis,
            run_every=POLL_SECONDS if progress.running else None)(
    worker, bench, progress.running, progress.refining)

# -- a budget, three ways: with the first pass's curves while they are refined ---------------
result = progress.result
if result is None or (progress.running and not progress.refining):
    st.stop()
sensitivity_view.spend_budget(bench, result)
