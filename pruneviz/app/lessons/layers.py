"""Lesson: not all layers are equal (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="layers",
    title=N_("Not all layers are equal"),
    question=N_("Which layers can lose the most, and which hurt the model most when pruned?"),
    render=render,
    further_page="app_pages/sensitivity.py",
    further_label=N_("Run a full sensitivity analysis on the Sensitivity page"),
)
