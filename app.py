"""pruneviz app entry: the login gate, page navigation and the sidebar model picker.

Start it on your own model with
    streamlit run app.py -- --model path/to/file.py:factory --weights w.safetensors \
        --data eval.npz --train-data train.npz
(the options are those of the CLI; see `python -m pruneviz evaluate --help`). Data can also
be uploaded on the Model page.
"""

import streamlit as st

from pruneviz.app.keys import MODEL_KEY, MODEL_WIDGET_KEY, REOPEN_NOTE_KEY, USER_KEY
from pruneviz.app.login import admit
from pruneviz.app.state import (
    current_model_ref,
    model_choices,
    model_title,
    open_saved,
    save_problem,
    saved_link,
    started_with,
    workspace_store,
)
from pruneviz.errors import PrunevizError

st.set_page_config(page_title="pruneviz", page_icon=":material/content_cut:", layout="wide")
admit()  # classroom mode: nothing below runs before the session gives the access code

choices = model_choices()
if MODEL_KEY not in st.session_state:
    # A link may name the model: ?model=sample:digits_resnet
    wanted = st.query_params.get("model")
    st.session_state[MODEL_KEY] = wanted if wanted in choices else current_model_ref()
# The choice lives in MODEL_KEY; the widget's own state is re-seeded from it on every run,
# because Streamlit drops the state of widgets it did not see in a run.
st.session_state[MODEL_WIDGET_KEY] = st.session_state[MODEL_KEY]


def choose_model() -> None:
    st.session_state[MODEL_KEY] = st.session_state[MODEL_WIDGET_KEY]


with st.sidebar:
    st.selectbox(
        "Model",
        choices,
        format_func=model_title,
        key=MODEL_WIDGET_KEY,
        on_change=choose_model,
        help="The model the app was started with, and the samples trained on scikit-learn's "
        "bundled handwritten digits. Upload other weights on the Model page.",
    )
    problem = started_with()[1]
    if problem:
        st.warning(problem)
    st.caption("Each browser tab prunes its own copy; your files are never changed.")
    if USER_KEY in st.session_state:
        st.caption(f"In the classroom as **{st.session_state[USER_KEY]}**.")
    # -- the tab's saved work
    link = saved_link()
    problem = save_problem()
    if problem:
        st.warning(f"Your work is not being saved: {problem}")
    elif link.id is not None:
        st.caption(f"Saved as you go in **{link.name}** (Workspaces page).")
    else:
        try:
            last = next(iter(workspace_store().saved()), None)
        except PrunevizError:
            last = None
        if last is not None and st.button(f"Reopen {last.name}", icon=":material/history:",
                                          help="Your last saved work: its model, plan, "
                                          "configurations and results. Every saved "
                                          "workspace is on the Workspaces page."):
            try:
                open_saved(last.id)
            except PrunevizError as exc:
                st.error(f"It cannot be reopened: {exc}")
            else:
                st.rerun()
    for note in st.session_state.pop(REOPEN_NOTE_KEY, []):
        st.warning(f"Not restored: {note}")

page = st.navigation(
    [
        st.Page("app_pages/model.py", title="Model", icon=":material/memory:", default=True),
        st.Page("app_pages/inspect.py", title="Inspect", icon=":material/search:"),
        st.Page("app_pages/sensitivity.py", title="Sensitivity", icon=":material/ssid_chart:"),
        st.Page("app_pages/prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page("app_pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("app_pages/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
        st.Page("app_pages/tradeoffs.py", title="Trade-offs", icon=":material/insights:"),
        st.Page("app_pages/export.py", title="Export", icon=":material/download:"),
        st.Page("app_pages/workspaces.py", title="Workspaces", icon=":material/folder_open:"),
    ]
)
page.run()
