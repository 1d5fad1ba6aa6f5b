"""Session state for the app: one cached pristine copy per process, one workbench per tab.

The pristine sample (model weights and data) is loaded once per process with
st.cache_resource and never changed; every browser session builds its own Workbench
(a private model copy) in st.session_state, so two tabs never see each other's pruning.
"""

from __future__ import annotations

import streamlit as st

from pruneviz.models.samples import DEFAULT_SAMPLE, Sample, load_sample
from pruneviz.workbench import Workbench, build_workbench

# Session-state keys, in one place.
MODEL_KEY = "pv_model_ref"
WORKBENCH_KEY = "pv_workbench"


@st.cache_resource(show_spinner="Loading the sample model ...")
def pristine_sample(name: str) -> Sample:
    """The shipped sample, loaded once per process; read-only."""
    return load_sample(name)


def current_model_ref() -> str:
    """The model this tab works on (the default sample until the user picks another)."""
    ref = st.session_state.get(MODEL_KEY)
    return ref if isinstance(ref, str) else f"sample:{DEFAULT_SAMPLE}"


def workbench() -> Workbench:
    """This tab's workbench, built on first use and whenever the chosen model changes."""
    ref = current_model_ref()
    bench = st.session_state.get(WORKBENCH_KEY)
    if not isinstance(bench, Workbench) or bench.name != ref:
        sample = pristine_sample(ref.removeprefix("sample:"))
        bench = build_workbench(
            ref, sample.model, sample.example_input(), sample.test_data(), sample.train_data()
        )
        st.session_state[WORKBENCH_KEY] = bench
    return bench
