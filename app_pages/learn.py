"""Learn: guided lessons (placeholder until the lessons land)."""

import streamlit as st

from pruneviz.i18n import _

st.title(_("Learn"))
