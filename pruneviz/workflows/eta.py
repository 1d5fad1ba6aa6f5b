"""How long a background job has left, said the one way every page says it.

A job (a sensitivity pass, a sweep) is a number of points measured one after another;
the time the points done so far took is the best guess of what the others will take.
"""

from __future__ import annotations

from pruneviz.i18n import N_, _

ESTIMATING = N_("estimating…")  # before the first point has finished: nothing measured yet
FINISHING = N_("finishing…")  # every point is done; the job is wrapping up


def seconds_left(done: int, total: int, elapsed_s: float) -> float | None:
    """Seconds the `total - done` points still to go should take, at the rate of the
    `done` points that took `elapsed_s` seconds; None before the first point is done."""
    if done <= 0:
        return None
    return max(0, total - done) * max(0.0, elapsed_s) / done


def eta_text(done: int, total: int, elapsed_s: float) -> str:
    """"estimating…" before the first point is done, then "about N s left" (minutes from
    two minutes on: "about N min left"), and "finishing…" once all `total` are done.

    `elapsed_s` is the time the `done` points took (from the start to the end of the last
    one), so that the estimate holds still while a point is being measured."""
    left = seconds_left(done, total, elapsed_s)
    if left is None:
        return _(ESTIMATING)
    if done >= total:
        return _(FINISHING)
    if left < 120:
        return _("about {seconds} s left").format(seconds=max(1, round(left)))
    return _("about {minutes} min left").format(minutes=round(left / 60))


__all__ = ["ESTIMATING", "FINISHING", "eta_text", "seconds_left"]
