"""pruneviz app entry: the login gate, page navigation and the sidebar model picker.

Start it on your own model with
    streamlit run app.py -- --model path/to/file.py:factory --weights w.safetensors \
        --data eval.npz --train-data train.npz
(the options are those of the CLI; see `python -m pruneviz evaluate --help`). Data can also
be uploaded on the Model page.
"""

import streamlit as st

from pruneviz.app import language
from pruneviz.app.keys import MODEL_KEY, MODEL_WIDGET_KEY, REOPEN_NOTE_KEY, USER_KEY
from pruneviz.app.login import admit
from pruneviz.app.state import (
    current_model_ref,
    model_choices,
    open_saved,
    save_problem,
    saved_link,
    shown_model_title,
    started_with,
    workspace_store,
)
from pruneviz.app.widgets import localized
from pruneviz.errors import PrunevizError
from pruneviz.i18n import _

st.set_page_config(page_title="pruneviz", page_icon=":material/content_cut:", layout="wide")
language.start()  # ?lang=zh-CN / ?lang=en, then the sidebar control; ?view=classroom
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
    language.sidebar_controls()
    st.selectbox(
        _("Model"),
        choices,
        format_func=localized(shown_model_title),
        key=MODEL_WIDGET_KEY,
        on_change=choose_model,
        help=_("The model the app was started with, and the samples trained on scikit-learn's "
               "bundled handwritten digits. Upload other weights on the Model page."),
    )
    problem = started_with()[1]
    if problem:
        st.warning(problem)
    st.caption(_("Each browser tab prunes its own copy; your files are never changed."))
    if USER_KEY in st.session_state:
        st.caption(_("In the classroom as **{name}**.").format(name=st.session_state[USER_KEY]))
    # -- the tab's saved work
    link = saved_link()
    problem = save_problem()
    if problem:
        st.warning(_("Your work is not being saved: {problem}").format(problem=problem))
    elif link.id is not None:
        st.caption(_("Saved as you go in **{name}** (Workspaces page).").format(name=link.name))
    else:
        try:
            last = next(iter(workspace_store().saved()), None)
        except PrunevizError:
            last = None
        if last is not None and st.button(_("Reopen {name}").format(name=last.name),
                                          icon=":material/history:",
                                          help=_("Your last saved work: its model, plan, "
                                                 "configurations and results. Every saved "
                                                 "workspace is on the Workspaces page.")):
            try:
                open_saved(last.id)
            except PrunevizError as exc:
                st.error(_("It cannot be reopened: {reason}").format(reason=exc))
            else:
                st.rerun()
    for note in st.session_state.pop(REOPEN_NOTE_KEY, []):
        st.warning(_("Not restored: {note}").format(note=note))

page = st.navigation(
    [
        # Learn is first in the navigation; the address without a page still opens Model
        st.Page("app_pages/learn.py", title=_("Learn"), icon=":material/school:"),
        st.Page("app_pages/model.py", title=_("Model"), icon=":material/memory:", default=True),
        st.Page("app_pages/inspect.py", title=_("Inspect"), icon=":material/search:"),
        st.Page("app_pages/sensitivity.py", title=_("Sensitivity"), icon=":material/ssid_chart:"),
        st.Page("app_pages/prune.py", title=_("Prune"), icon=":material/content_cut:"),
        st.Page("app_pages/finetune.py", title=_("Fine-tune"), icon=":material/model_training:"),
        st.Page("app_pages/deploy.py", title=_("Deploy"), icon=":material/rocket_launch:"),
        st.Page("app_pages/tradeoffs.py", title=_("Trade-offs"), icon=":material/insights:"),
        st.Page("app_pages/export.py", title=_("Export"), icon=":material/download:"),
        st.Page("app_pages/workspaces.py", title=_("Workspaces"), icon=":material/folder_open:"),
    ]
)
page.run()
