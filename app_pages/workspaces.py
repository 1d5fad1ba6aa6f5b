"""Workspaces: every tab's work is saved as it happens; reopen, duplicate, rename, delete or
download a saved workspace, or add one from a file."""

import time
from functools import partial

import streamlit as st

from pruneviz.app import state
from pruneviz.app.keys import WS_CONFIRM_KEY, WS_IMPORT_KEY, WS_NAME_KEY
from pruneviz.errors import PrunevizError

st.title("Workspaces")
try:
    store = state.workspace_store()
except PrunevizError as exc:
    st.error(f"Your work is not being saved: {exc}")
    st.stop()
link = state.saved_link()
st.caption(
    f"Everything a tab does — each model's plans, every measured configuration, sensitivity "
    f"and fine-tuning results, fine-tuned weights, notes — is saved as it happens in "
    f"`{store.root}`. A server restart or a crash loses nothing; reopen the work here.")
problem = state.save_problem()
if problem:
    st.warning(f"The last change could not be saved: {problem}")

# -- this tab ---------------------------------------------------------------------------------
st.subheader("This tab")
saved = {info.id: info for info in store.saved()}
if link.id in saved:
    info = saved[link.id]
    st.markdown(f"Saved as **{info.name}**: {', '.join(info.models)}, "
                f"{info.experiments} measured configurations.")
else:
    st.markdown(f"Will be saved as **{link.name}** at the tab's first change.")
notes_col, _ = st.columns([3, 1])
with notes_col:
    space = state.workspace()
    notes = st.text_area("Notes on this model's work", value=space.notes, height=100,
                         help="Kept with the saved workspace, per model.")
    if notes != space.notes:
        space.set_notes(notes)
if st.button("Start a new workspace", help="This tab's next changes go into a new saved "
             "workspace, starting from the unpruned model; the current one stays saved."):
    try:
        state.start_new_workspace()
    except PrunevizError as exc:
        st.error(str(exc))
    else:
        st.rerun()

# -- every saved workspace --------------------------------------------------------------------
st.subheader("Saved workspaces")
if not saved:
    st.info("Nothing is saved yet: prune something, and this tab's work appears here.")
else:
    st.dataframe([{
        "name": info.name + (" (this tab)" if info.id == link.id else ""),
        "models": ", ".join(info.models), "configurations": info.experiments,
        "last change": time.strftime("%Y-%m-%d %H:%M", time.localtime(info.updated)),
    } for info in saved.values()], hide_index=True, width="stretch")
    chosen = st.selectbox("Workspace", list(saved), format_func=lambda i: saved[i].name)
    info = saved[chosen]
    open_col, copy_col, delete_col, file_col = st.columns(4)
    if open_col.button("Open in this tab", type="primary", disabled=chosen == link.id,
                       help="This tab switches to that workspace's model, plan, "
                       "configurations and results; its own work stays saved."):
        try:
            state.open_saved(chosen)
        except PrunevizError as exc:
            st.error(f"It cannot be opened: {exc}")
        else:
            st.switch_page("app_pages/prune.py")
    if copy_col.button("Duplicate"):
        try:
            store.duplicate(chosen, f"{info.name} (copy)"[:80])
        except PrunevizError as exc:
            st.error(str(exc))
        else:
            st.rerun()
    if delete_col.button("Delete…", disabled=chosen == link.id,
                         help="The workspace this tab works in cannot be deleted here."):
        st.session_state[WS_CONFIRM_KEY] = chosen
    # the file is made when the button is pressed, not on every rerun of the page
    file_col.download_button("Download as one file", partial(store.export_bytes, chosen),
                             file_name="".join(c if c.isalnum() or c in " ,._-" else "-"
                                               for c in info.name) + ".pvz",
                             mime="application/zip")
    if st.session_state.get(WS_CONFIRM_KEY) == chosen:
        st.warning(f"Delete **{info.name}** ({info.experiments} configurations) for good?")
        yes, no = st.columns([1, 5])
        if yes.button("Delete it", type="primary"):
            store.delete(chosen)
            st.session_state.pop(WS_CONFIRM_KEY, None)
            st.rerun()
        if no.button("Keep it"):
            st.session_state.pop(WS_CONFIRM_KEY, None)
            st.rerun()
    with st.form("rename", border=False):
        name = st.text_input("New name", value=info.name, max_chars=80,
                             key=f"{WS_NAME_KEY}:{chosen}")
        if st.form_submit_button("Rename"):
            try:
                store.rename(chosen, name)
                if chosen == link.id:
                    link.name = name
            except PrunevizError as exc:
                st.error(str(exc))
            else:
                st.rerun()

# -- a workspace from a file ------------------------------------------------------------------
st.subheader("Add a workspace from a file")
upload = st.file_uploader("A .pvz file downloaded from this page", type=["pvz", "zip"],
                          key=WS_IMPORT_KEY)
if upload is not None and st.button("Add it"):
    try:
        store.import_bytes(upload.getvalue(), upload.name)
    except PrunevizError as exc:
        st.error(f"It was not added: {exc}")
    else:
        st.success(f"Added {upload.name}: choose it above to open it.")
