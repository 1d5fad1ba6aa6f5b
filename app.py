"""pruneviz app entry: page navigation and the sidebar model picker, nothing else."""

import streamlit as st

from pruneviz.models.samples import SAMPLES
from pruneviz.ui.state import MODEL_KEY, MODEL_WIDGET_KEY, current_model_ref

st.set_page_config(page_title="pruneviz", page_icon=":material/content_cut:", layout="wide")

choices = [f"sample:{name}" for name in SAMPLES]
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
        format_func=lambda ref: SAMPLES[ref.removeprefix("sample:")].title,
        key=MODEL_WIDGET_KEY,
        on_change=choose_model,
        help="Sample models trained on scikit-learn's bundled handwritten digits.",
    )
    st.caption("Each browser tab prunes its own copy; the shipped weights are never changed.")

page = st.navigation(
    [
        st.Page("pages/model.py", title="Model", icon=":material/memory:", default=True),
        st.Page("pages/inspect.py", title="Inspect", icon=":material/search:"),
        st.Page("pages/sensitivity.py", title="Sensitivity", icon=":material/ssid_chart:"),
        st.Page("pages/prune.py", title="Prune", icon=":material/content_cut:"),
        st.Page("pages/finetune.py", title="Fine-tune", icon=":material/model_training:"),
        st.Page("pages/deploy.py", title="Deploy", icon=":material/rocket_launch:"),
        st.Page("pages/tradeoffs.py", title="Trade-offs", icon=":material/insights:"),
    ]
)
page.run()
