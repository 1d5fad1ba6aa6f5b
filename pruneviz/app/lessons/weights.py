"""Lesson: what a weight is, and what pruning removes (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="weights",
    title=N_("What a weight is, and what pruning removes"),
    question=N_("What happens to a layer, and to the model, when its smallest weights "
                "are set to zero?"),
    render=render,
    further_page="app_pages/inspect.py",
    further_label=N_("Look at every layer's weights on the Inspect page"),
)
