"""Make every page run inside app.py's st.navigation.

Because the pages live in a folder called `pages/`, Streamlit starts in its legacy
"pages directory" mode: when the first request of a server process is a page URL (say
/prune) — and in AppTest, on every run — it runs pages/prune.py on its own, without
app.py: no sidebar model picker, no wide layout. `run_through_app` notices that, switches
the process to the modern mode and runs app.py in the same script run (so no widget
event is lost to a rerun); app.py's st.navigation then runs this page inside its frame.
"""

from __future__ import annotations

import runpy
from pathlib import Path

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

APP = Path(__file__).resolve().parents[2] / "app.py"


def run_through_app() -> None:
    """If Streamlit ran this page without app.py, run it through app.py instead."""
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        runpy.run_path(str(APP), run_name="__main__")
        st.stop()
