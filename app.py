"""pruneviz app entry: page navigation and the sidebar model picker, nothing else."""

import streamlit as st

from pruneviz.models.samples import SAMPLES
from pruneviz.ui.state import MODEL_KEY, current_model_ref

st.set_page_config(page_title="pruneviz", page_icon="✂️", layout="wide")

choices = [f"sample:{name}" for name in SAMPLES]
with st.sidebar:
    st.selectbox(
        "Model",
        choices,
        index=choices.index(current_model_ref()),
        format_func=lambda ref: SAMPLES[ref.removeprefix("sample:")].title,
        key=MODEL_KEY,
        help="The sample models are trained on scikit-learn's bundled handwritten digits.",
    )

page = st.navigation([st.Page("pages/model.py", title="Model", icon="🧠", default=True)])
page.run()
