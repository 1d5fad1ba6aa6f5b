"""What every lesson is made of: the lesson record, predict-then-reveal steps, progress,
reset, and the way out to a free-form page.

A step asks the learner to predict (a slider or a choice), then runs the real measurement
once, keeps it with the prediction in the tab's session state, and draws the two side by
side. Reset forgets a lesson's steps and widgets; nothing else in the tab is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import streamlit as st

from pruneviz.app.keys import (
    LESSON_STATE_KEY,
    LESSONS_DONE_KEY,
    MODEL_KEY,
    lesson_widget_key,
)
from pruneviz.app.widgets import user_errors
from pruneviz.i18n import _

P = TypeVar("P")
R = TypeVar("R")

# the lessons' charts: no plotly mode bar (its buttons would cover their short titles)
CHART_CONFIG = {"displayModeBar": False}


@dataclass(frozen=True)
class Lesson:
    """One lesson: its key (also `?lesson=`), title and opening question (N_-marked English,
    shown through _()), what draws its steps, and the page to go further on."""

    key: str
    title: str
    question: str
    render: Callable[[], None]
    further_page: str  # e.g. "app_pages/prune.py"
    further_label: str  # N_-marked


@dataclass(frozen=True)
class Revealed(Generic[P, R]):
    """A step that has run: the learner's prediction, the measured result, and how long
    the measurement took (seconds, wall clock)."""

    prediction: P
    result: R
    seconds: float


def _steps(lesson: str) -> dict[str, Revealed[Any, Any]]:
    every = st.session_state.setdefault(LESSON_STATE_KEY, {})
    steps: dict[str, Revealed[Any, Any]] = every.setdefault(lesson, {})
    return steps


def revealed(lesson: str, step: str) -> Revealed[Any, Any] | None:
    """The step's prediction and result, once it has run."""
    return _steps(lesson).get(step)


def predict_then_reveal(
    lesson: str,
    step: str,
    *,
    ask: Callable[[str], P],
    run: Callable[[], R],
    reveal: Callable[[P, R], None],
    button: str | None = None,
) -> R | None:
    """One predict-then-reveal step.

    ask(key): draws the prediction widget with that key and returns its value.
    run(): the real measurement (on the lesson's sample), run once when the learner presses
        the button; its result is kept until the lesson is reset.
    reveal(prediction, result): draws the result beside the prediction.
    Returns the result once revealed, else None (so a next step can wait for it)."""
    done = revealed(lesson, step)
    if done is not None:
        reveal(done.prediction, done.result)
        st.caption(_("Measured on the real model in {seconds:.1f} s.").format(
            seconds=done.seconds))
        return done.result  # type: ignore[no-any-return]
    prediction = ask(lesson_widget_key(lesson, f"{step}_predict"))
    if prediction is None:  # a choice not made yet: predict first, then measure
        st.caption(_("Make your prediction first."))
    if st.button(button or _("Lock in my prediction and measure"), type="primary",
                 key=lesson_widget_key(lesson, f"{step}_run"), icon=":material/play_arrow:",
                 disabled=prediction is None):
        with st.spinner(_("Measuring on the real model…")), user_errors(_("The lesson's "
                                                                         "measurement failed")):
            start = time.perf_counter()
            result = run()
            seconds = time.perf_counter() - start
        _steps(lesson)[step] = Revealed(prediction, result, seconds)
        st.rerun()
    return None


def reset(lesson: str) -> None:
    """Forget a lesson's predictions, results and widgets (its progress mark too)."""
    st.session_state.setdefault(LESSON_STATE_KEY, {}).pop(lesson, None)
    st.session_state.setdefault(LESSONS_DONE_KEY, set()).discard(lesson)
    prefix = lesson_widget_key(lesson, "")
    for key in [k for k in st.session_state if isinstance(k, str) and k.startswith(prefix)]:
        del st.session_state[key]


def mark_done(lesson: str) -> None:
    """The lesson's last step has been revealed. The first time, the page runs again, so
    that its progress (drawn above the lesson) counts it."""
    done = st.session_state.setdefault(LESSONS_DONE_KEY, set())
    if lesson not in done:
        done.add(lesson)
        st.rerun()


def done_lessons() -> set[str]:
    """The lessons finished in this tab."""
    done: set[str] = st.session_state.setdefault(LESSONS_DONE_KEY, set())
    return done


def go_further(lesson: Lesson, model_ref: str) -> None:
    """A button to the lesson's free-form page, on the lesson's model."""
    if st.button(_(lesson.further_label), icon=":material/arrow_forward:",
                 key=lesson_widget_key(lesson.key, "further")):
        st.session_state[MODEL_KEY] = model_ref
        st.switch_page(lesson.further_page)


def compare(prediction: float, measured: float, unit: str = "%") -> str:
    """One sentence setting a numeric prediction beside the measurement."""
    gap = measured - prediction
    if abs(gap) < 5:
        return _("Your prediction was {prediction:.0f}{unit}: close to the measured "
                 "{measured:.1f}{unit}.").format(prediction=prediction, measured=measured,
                                                 unit=unit)
    return _("Your prediction was {prediction:.0f}{unit}; the measurement is "
             "{measured:.1f}{unit} ({gap:+.1f} points).").format(
                 prediction=prediction, measured=measured, unit=unit, gap=gap)
