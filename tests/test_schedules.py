"""Sparsity schedules: the events and curves each kind promises."""

from __future__ import annotations

import pytest

from pruneviz.errors import PlanError
from pruneviz.workflows.schedules import Schedule, ScheduleKind, agp


def test_poly_follows_tf_model_optimizations_formula() -> None:
    s = Schedule("poly", final=0.9, initial=0.5, begin_step=0, end_step=1000, frequency=100)
    events = s.events(2000)
    assert [step for step, _ in events] == list(range(0, 1001, 100))
    for step, value in events:
        expected = 0.9 + (0.5 - 0.9) * (1 - step / 1000) ** 3
        assert value == pytest.approx(expected, abs=1e-6)
    assert events[0][1] == 0.5
    assert events[-1][1] == 0.9
    values = [v for _, v in events]
    assert values == sorted(values)


def test_agp_is_the_cubic_poly_from_zero() -> None:
    a = agp(0.8, 100, 500, 50)
    assert a.kind is ScheduleKind.AGP
    assert a.events(1000)[0] == (100, 0.0)
    assert a.events(1000)[-1] == (500, 0.8)
    assert a.sparsity_at(99) == 0.0
    assert a.sparsity_at(300) == pytest.approx(0.8 - 0.8 * 0.5 ** 3)


def test_iterative_rounds_prune_the_same_share_of_what_is_left() -> None:
    s = Schedule("iterative", final=0.875, begin_step=0, end_step=300, rounds=3)
    assert s.events(1000) == [(0, 0.5), (100, 0.75), (200, 0.875)]


def test_oneshot_and_constant() -> None:
    assert Schedule("oneshot", final=0.7, begin_step=20).events(100) == [(20, 0.7)]
    constant = Schedule("constant", final=0.6, begin_step=0, end_step=200, frequency=100)
    assert constant.events(1000) == [(0, 0.6), (100, 0.6), (200, 0.6)]


def test_events_after_the_last_step_are_dropped_and_the_curve_steps() -> None:
    s = Schedule("poly", final=0.9, initial=0.5, begin_step=0, end_step=1000, frequency=100)
    assert s.events(250) == s.events(2000)[:3]
    curve = s.curve(250)
    assert len(curve) == 250
    assert curve[0] == 0.5
    assert curve[99] == 0.5
    assert curve[100] == s.events(2000)[1][1]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "cosine", "final": 0.5}, "unknown schedule"),
    ({"kind": "poly", "final": 1.0, "end_step": 10}, r"\[0, 1\)"),
    ({"kind": "poly", "final": 0.5, "initial": 0.8, "end_step": 10}, "only rises"),
    ({"kind": "poly", "final": 0.5, "begin_step": 10, "end_step": 10}, "must come after"),
    ({"kind": "poly", "final": 0.5, "end_step": 10, "frequency": 0}, "at least 1 step"),
    ({"kind": "iterative", "final": 0.5, "end_step": 10, "rounds": 0}, "at least 1 round"),
])
def test_bad_schedules_are_refused(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        Schedule(**kwargs)  # type: ignore[arg-type]
