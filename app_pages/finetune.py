"""Fine-tune: retrain after pruning, so that the kept weights make up for the removed ones —
one-shot, iterative, on a polynomial schedule, or after a sparsity-inducing regulariser —
in the background with a live curve; each result is measured for real next to the same
plan without retraining."""

import streamlit as st

from pruneviz.app import data_view, finetune_view, state
from pruneviz.app.finetune_view import RECIPES, recipe_name
from pruneviz.app.keys import FT_CANCEL_KEY, FT_RECIPE_KEY, FT_RUN_KEY
from pruneviz.app.widgets import run_and_cancel, user_errors
from pruneviz.app.worker import finetune_worker, record_finished_run
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _

POLL_SECONDS = 0.5

st.title(_("Fine-tune"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
if bench.train_data is None:
    data_view.no_training_data(state.model_title(bench.name))  # says what to do; stops
with user_errors(_("Fine-tuning cannot start")):
    worker = finetune_worker(bench)
record_finished_run(bench)  # a run that ended while another page was shown
finetune_view.intro(bench, worker)

# -- the recipe -----------------------------------------------------------------------------
progress = worker.snapshot()
finetune_view.seed_controls(bench)
kind = st.radio(_("Recipe"), list(RECIPES), format_func=recipe_name, horizontal=True,
                key=FT_RECIPE_KEY,
                help=_("One-shot: prune once (this tab's plan), then retrain with the pruned "
                       "weights held at zero. Iterative: prune a bit, retrain, prune more (Han "
                       "et al. 2015). Polynomial: raise the sparsity smoothly while training "
                       "(Zhu & Gupta's AGP). Regularize: first push weights towards zero with a "
                       "penalty, then prune them and retrain."))
controls, chart = st.columns([1, 1.15], gap="large")
with controls:
    draft = finetune_view.recipe_controls(bench, worker, kind)
with chart:
    finetune_view.schedule_section(draft, kind)
finetune_view.save_controls()

run_clicked = run_and_cancel(_("Train"), running=progress.running, run_key=FT_RUN_KEY,
                             cancel_key=FT_CANCEL_KEY, cancel=worker.cancel,
                             cancel_help=_("Stops after the current step and keeps the best "
                                           "weights so far."))
if run_clicked and draft.job is not None:
    try:
        worker.start(draft.job)
    except (PrunevizError, ValueError, RuntimeError) as exc:
        st.error(_("The run cannot start: {problem}").format(problem=exc))
    else:
        st.rerun()  # redraw the buttons, and poll while it runs

# -- the run and its result -----------------------------------------------------------------
st.fragment(finetune_view.show_run, run_every=POLL_SECONDS if progress.running else None)(
    worker, bench.eval_data.metric_name, progress.running)
outcome = progress.outcome if not progress.running else None
if outcome is not None:
    finetune_view.show_result(bench, outcome)
    if outcome.job.kind == "regularize":
        finetune_view.show_regularisation(bench.session, outcome)
finetune_view.han_comparison(bench, outcome)
