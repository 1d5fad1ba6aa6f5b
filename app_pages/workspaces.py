"""Workspaces: every tab's work is saved as it happens; reopen, duplicate, rename, delete or
download a saved workspace, or add one from a file."""

import time
from functools import partial

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import WS_CONFIRM_KEY, WS_IMPORT_KEY, WS_NAME_KEY
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _

st.title(_("Workspaces"))
try:
    store = state.workspace_store()
except PrunevizError as exc:
    st.error(_("Your work is not being saved: {problem}").format(problem=exc))
    st.stop()
link = state.saved_link()
st.caption(_(
    "Everything a tab does — each model's plans, every measured configuration, sensitivity "
    "and fine-tuning results, fine-tuned weights, notes — is saved as it happens in "
    "`{folder}`. A server restart or a crash loses nothing; reopen the work here.").format(
    folder=store.root))
problem = state.save_problem()
if problem:
    st.warning(_("The last change could not be saved: {problem}").format(problem=problem))

# -- this tab ---------------------------------------------------------------------------------
st.subheader(_("This tab"))
saved = {info.id: info for info in store.saved()}
if link.id in saved:
    info = saved[link.id]
    st.markdown(_("Saved as **{name}**: {models}, {count} measured configurations.").format(
        name=info.name, models=", ".join(info.models), count=info.experiments))
else:
    st.markdown(_("Will be saved as **{name}** at the tab's first change.").format(
        name=link.name))
notes_col = st.columns([3, 1])[0]
with notes_col:
    space = state.workspace()
    notes = st.text_area(_("Notes on this model's work"), value=space.notes, height=100,
                         help=_("Kept with the saved workspace, per model."))
    if notes != space.notes:
        space.set_notes(notes)
if st.button(_("Start a new workspace"), help=_(
        "This tab's next changes go into a new saved workspace, starting from the unpruned "
        "model; the current one stays saved.")):
    try:
        state.start_new_workspace()
    except PrunevizError as exc:
        st.error(str(exc))
    else:
        st.rerun()

# -- every saved workspace --------------------------------------------------------------------
st.subheader(_("Saved workspaces"))
if not saved:
    st.info(_("Nothing is saved yet: prune something, and this tab's work appears here."))
else:
    st.dataframe([{
        _("name"): info.name + (_(" (this tab)") if info.id == link.id else ""),
        _("models"): ", ".join(info.models), _("configurations"): info.experiments,
        _("last change"): time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated)),
    } for info in saved.values()], hide_index=True, width="stretch")
    chosen = st.selectbox(_("Workspace"), list(saved), format_func=lambda i: saved[i].name)
    info = saved[chosen]
    open_col, copy_col, delete_col, file_col = st.columns(4)
    if open_col.button(_("Open in this tab"), type="primary", disabled=chosen == link.id,
                       help=_("This tab switches to that workspace's model, plan, "
                              "configurations and results; its own work stays saved.")):
        try:
            state.open_saved(chosen)
        except PrunevizError as exc:
            st.error(_("It cannot be opened: {problem}").format(problem=exc))
        else:
            st.switch_page("app_pages/prune.py")
    if copy_col.button(_("Duplicate")):
        try:
            store.duplicate(chosen, _("{name} (copy)").format(name=info.name)[:80])
        except PrunevizError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    if delete_col.button(_("Delete…"), disabled=chosen == link.id,
                         help=_("The workspace this tab works in cannot be deleted here.")):
        st.session_state[WS_CONFIRM_KEY] = chosen
    # the file is made when the button is pressed, not on every rerun of the page
    file_col.download_button(_("Download as one file"), partial(store.export_bytes, chosen),
                             file_name="".join(c if c.isalnum() or c in " ,._-" else "-"
                                               for c in info.name) + ".pvz",
                             mime="application/zip")
    if st.session_state.get(WS_CONFIRM_KEY) == chosen:
        st.warning(_("Delete **{name}** ({count} configurations) for good?").format(
            name=info.name, count=info.experiments))
        yes, no = st.columns([1, 5])
        if yes.button(_("Delete it"), type="primary"):
            store.delete(chosen)
            st.session_state.pop(WS_CONFIRM_KEY, None)
            st.rerun()
        if no.button(_("Keep it")):
            st.session_state.pop(WS_CONFIRM_KEY, None)
            st.rerun()
    with st.form("rename", border=False):
        name = st.text_input(_("New name"), value=info.name, max_chars=80,
                             key=f"{WS_NAME_KEY}:{chosen}")
        if st.form_submit_button(_("Rename")):
            try:
                store.rename(chosen, name)
                if chosen == link.id:
                    link.name = name
            except PrunevizError as exc:
                st.error(str(exc))
            else:
                st.rerun()

# -- a workspace from a file ------------------------------------------------------------------
st.subheader(_("Add a workspace from a file"))
upload = st.file_uploader(_("A .pvz file downloaded from this page"), type=["pvz", "zip"],
                          key=WS_IMPORT_KEY)
if upload is not None and st.button(_("Add it")):
    try:
        store.import_bytes(upload.getvalue(), upload.name)
    except PrunevizError as exc:
        st.error(_("It was not added: {problem}").format(problem=exc))
    else:
        st.success(_("Added {name}: choose it above to open it.").format(name=upload.name))
