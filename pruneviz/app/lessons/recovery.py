"""Lesson: collapse and recovery (not built yet)."""

from __future__ import annotations

import streamlit as st

from pruneviz.app.lessons.frame import Lesson
from pruneviz.i18n import N_, _


def render() -> None:
    """The lesson's steps."""
    st.info(_("This lesson is being written."))


LESSON = Lesson(
    key="recovery",
    title=N_("Collapse and recovery"),
    question=N_("After 90% of the weights are removed at once, can retraining bring "
                "the accuracy back?"),
    render=render,
    further_page="app_pages/finetune.py",
    further_label=N_("Try other recipes on the Fine-tune page"),
)
