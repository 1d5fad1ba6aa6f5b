"""Lesson: criteria disagree (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="criteria",
    title=N_("Criteria disagree"),
    question=N_("Do magnitude, random and Taylor scores pick the same structures to remove?"),
    render=render,
    further_page="app_pages/inspect.py",
    further_label=N_("Compare criteria on any layer on the Inspect page"),
)
