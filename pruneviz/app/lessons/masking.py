"""Lesson: masking versus removing (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="masking",
    title=N_("Masking versus removing"),
    question=N_("If half of a model's weights are zero, is its file half the size "
                "and is it twice as fast?"),
    render=render,
    further_page="app_pages/deploy.py",
    further_label=N_("Compare masked and slimmed models on the Deploy page"),
)
