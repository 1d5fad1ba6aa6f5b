"""The tab's language (English or 简体中文) and its classroom view.

The language comes from `?lang=zh-CN` / `?lang=en` on the first run of a tab, then from the
sidebar control; it is kept in the tab's session state and written back to the address, so a
reload or a shared link keeps it. Text itself is looked up in pruneviz.i18n's catalogues.
"""

from __future__ import annotations

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx

from pruneviz.app.keys import CLASSROOM_VIEW_KEY, LANGUAGE_KEY, LANGUAGE_WIDGET_KEY
from pruneviz.i18n import ENGLISH, LANGUAGES, _, normalise, set_language_provider


def _tab_language() -> str | None:
    """The language of the browser tab this thread is running a page for, if any."""
    if get_script_run_ctx(suppress_warning=True) is None:
        return None  # a background worker: English
    value = st.session_state.get(LANGUAGE_KEY)
    return value if isinstance(value, str) else None


set_language_provider(_tab_language)


def start() -> None:
    """Settle the tab's language and view from the address on its first run."""
    if LANGUAGE_KEY not in st.session_state:
        st.session_state[LANGUAGE_KEY] = normalise(st.query_params.get("lang")) or ENGLISH
    if CLASSROOM_VIEW_KEY not in st.session_state:
        st.session_state[CLASSROOM_VIEW_KEY] = st.query_params.get("view") == "classroom"
    # Streamlit drops the state of widgets it did not draw: re-seed the picker each run
    st.session_state[LANGUAGE_WIDGET_KEY] = st.session_state[LANGUAGE_KEY]
    if st.session_state[CLASSROOM_VIEW_KEY]:
        st.html(CLASSROOM_CSS)


def _choose() -> None:
    code = st.session_state[LANGUAGE_WIDGET_KEY]
    st.session_state[LANGUAGE_KEY] = code
    st.query_params["lang"] = code


def _toggle_view() -> None:
    if st.session_state[CLASSROOM_VIEW_KEY]:
        st.query_params["view"] = "classroom"
    else:
        st.query_params.pop("view", None)


def sidebar_controls() -> None:
    """The language picker and the classroom-view switch (call inside the sidebar)."""
    st.selectbox("Language · 语言", list(LANGUAGES), format_func=LANGUAGES.__getitem__,
                 key=LANGUAGE_WIDGET_KEY, on_change=_choose)
    st.toggle(_("Classroom view"), key=CLASSROOM_VIEW_KEY, on_change=_toggle_view,
              help=_("Larger text for a projector; the lessons fit a 1280x720 screen."))


# Larger text for a projector, with less empty space so a lesson's figures fit 1280x720.
CLASSROOM_CSS = """<style>
html { font-size: 18px; }
[data-testid='stMainBlockContainer'] { padding-top: 2.2rem; padding-bottom: 1rem; }
[data-testid='stMarkdownContainer'] p, [data-testid='stMarkdownContainer'] li { font-size: 1.1rem; }
[data-testid='stMetricValue'] { font-size: 2.1rem; }
h1 { font-size: 2.0rem !important; padding-top: 0 !important; }
</style>"""
