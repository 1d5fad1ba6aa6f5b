"""Prune: a slider per layer (or one global ranking), live measured metrics."""

import streamlit as st

from pruneviz.app import controls, prune_view, refit_view, state
from pruneviz.app.keys import (
    METRICS_BAR_KEY,
    PRUNE_BODY_KEY,
    PRUNE_RESET_KEY,
    SCOPE_NOTE_KEY,
    widget_key,
)
from pruneviz.app.state import seed
from pruneviz.app.widgets import HONESTY_NOTE, user_errors
from pruneviz.core.plan import Plan
from pruneviz.i18n import _
from pruneviz.workflows.experiments import ORIGINAL

st.title(_("Prune"))
with user_errors(_("The model could not be loaded")):
    bench = state.workbench()
session = bench.session
plan_now = session.plan

# seed widgets from the current plan (after a page switch or a restored experiment)
for key, value in controls.widget_values(plan_now, session.layer_names).items():
    seed(key, value)


def reset() -> None:
    """Back to the unpruned model (the plan it replaces stays in the experiments)."""
    prune_view.say_where_kept(session)
    state.restore_plan(Plan())


if state.current_weights() != ORIGINAL:
    st.caption(_(":material/model_training: This tab prunes the **{weights}** weights, whose "
                 "pruned entries are already zero: *Reset to unpruned* keeps them. The original "
                 "weights are one click away on the Fine-tune page.").format(
        weights=state.current_weights()))
metrics_box = st.container(key=METRICS_BAR_KEY)  # sticky: stays in view while editing
# (Streamlit wraps the container in a layout div of its own height: that one sticks)
st.html(f"<style>div:has(> .st-key-{METRICS_BAR_KEY}) {{position: sticky; top: 3.75rem; "
        "z-index: 990; background: #ffffff; padding-bottom: 0.25rem; "
        "border-bottom: 1px solid rgba(49, 51, 63, 0.15);} "
        f".st-key-{METRICS_BAR_KEY} [data-testid='stMetricValue'] {{font-size: 1.6rem;}}"
        "@media (max-width: 1100px) {"
        f".st-key-{PRUNE_BODY_KEY} > [data-testid='stLayoutWrapper'] > "
        "[data-testid='stHorizontalBlock'] {flex-wrap: wrap;} "
        f".st-key-{PRUNE_BODY_KEY} > [data-testid='stLayoutWrapper'] > "
        "[data-testid='stHorizontalBlock'] > [data-testid='stColumn'] "
        "{flex: 1 1 100% !important; min-width: 100% !important;} "
        f".st-key-{METRICS_BAR_KEY} [data-testid='stMetricValue'] {{font-size: 1.25rem;}}}}"
        "</style>")
st.info(_(HONESTY_NOTE))
if (kept := st.session_state.pop(SCOPE_NOTE_KEY, None)) is not None:
    st.info(kept, icon=":material/history:")
top = st.columns([2, 2, 1])
scope = controls.Scope(top[0].radio(
    _("Scope"), controls.SCOPES, key=widget_key("scope"), horizontal=True, format_func=_,
    on_change=prune_view.say_where_kept, args=(session,),
    help=_("Per layer: each layer its own amount. Global ranking: one ranking of all layers' "
           "structures, pruned to a total amount.")))
mode = controls.Mode(top[1].radio(
    _("Sliders set"), controls.MODES, key=widget_key("mode"), horizontal=True, format_func=_,
    disabled=scope is controls.Scope.GLOBAL,
    help=_("The fraction of structures removed, or an absolute importance score below which "
           "structures are removed.")))
top[2].button(_("Reset to unpruned"), on_click=reset, width="stretch", key=PRUNE_RESET_KEY)

# many layers: a compact table of them all, drawn once the plan is applied
table_box = (st.container() if scope is controls.Scope.PER_LAYER
             and prune_view.many_layers(session) else None)
# On a narrow screen (1024 px) the layer view goes below the controls: beside them it left
# the rows' selectors too narrow to read.
left, view = st.container(key=PRUNE_BODY_KEY).columns([3.3, 2], gap="large")
coupled = prune_view.coupled_now(session)
with left:
    shown = None
    if scope is controls.Scope.PER_LAYER:
        shown = prune_view.layer_rows(session, mode, coupled)
    else:
        prune_view.global_controls()
    prune_view.block_controls(session)

built = controls.plan_for_widgets(prune_view.widget_values(), session.layer_names, plan_now,
                                  session.unsupported, shown)
with user_errors(_("This plan cannot be applied")):
    session.apply(session.stamp(built.plan))
    state.measure_live()
# the hidden layers' controls hold the applied plan (Streamlit forgets undrawn widgets)
prune_view.set_values(controls.layer_values(session.plan,
                                            controls.hidden_layers(session.layer_names, shown)))

if table_box is not None:
    with table_box:
        prune_view.compact_table(session)
for message in built.warnings:
    st.warning(message)
for note in session.notes:
    st.info(note)
with view:
    prune_view.layer_view(session, coupled)
with metrics_box:
    prune_view.metrics_box(bench)
refit_view.refit_section(bench)
prune_view.layers_table(session)
