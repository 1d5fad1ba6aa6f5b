"""The Learn page's lessons, in order: each a few predict-then-reveal steps on a real sample
(one module per lesson; the shared parts are in frame.py)."""

from __future__ import annotations

from pruneviz.app.lessons import budgets, criteria, layers, masking, recovery, weights
from pruneviz.app.lessons.frame import Lesson

LESSONS: list[Lesson] = [
    weights.LESSON,
    masking.LESSON,
    layers.LESSON,
    criteria.LESSON,
    recovery.LESSON,
    budgets.LESSON,
]
