"""Lesson: budgets (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="budgets",
    title=N_("Budgets"),
    question=N_("To meet a size target, should every layer lose the same share?"),
    render=render,
    further_page="app_pages/sensitivity.py",
    further_label=N_("Fit your own budget on the Sensitivity page"),
)
