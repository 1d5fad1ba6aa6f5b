"""Finishing a plan's slow measurements in the background, while the first ones show.

A slider move is measured at the cost of one forward pass of the live subset (see
`measure.meter`). What takes longer — the metric on the whole evaluation set, the
latency timed against the unpruned model, the gzip size — a `Refiner` measures in a
background thread for the plan applied now. The session stops it before it writes the
model again (`PruningSession.on_change`), within one batch, one timed run or one
megabyte of compression, and nothing half-measured is kept; the next plan starts a
new refinement. With `settle`, a refinement waits that long before it measures anything
and gives up if the plan changes meanwhile: a tab whose sliders keep moving costs the
server only its slider moves (benchmarks/classroom.py); and one refinement measures
at a time in a process, the others waiting their turn, and only once the tabs' slider
moves have paused for `QUIET` seconds. When one finishes, `on_finish`
gets the complete report (the workspace records it in its experiment log), and `then`
does any further work that can be stopped the same way (the workspace completes the
unpruned model's figures on the pristine model, which no plan touches).
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable

from pruneviz.errors import Cancelled
from pruneviz.measure.machine import STOP_CHECK_S, as_background, wait_for_quiet
from pruneviz.measure.meter import Report
from pruneviz.measure.metrics import Stop
from pruneviz.workflows.workbench import Workbench

# What a refinement measures, as the meter caches it, and how the app names it.
SLOW_FIGURES = {"eval_full": "the whole set's metric", "latency": "latency",
                "gzip": "gzip size"}


_LIVE: weakref.WeakSet[Refiner] = weakref.WeakSet()
# One refinement measures at a time in a process: with many tabs, the others wait their
# turn (each still stoppable) instead of all contending with the slider moves for the
# interpreter, which made a loaded server fall further behind with every plan that
# settled (benchmarks/classroom.py, 16 tabs).
_MEASURING = threading.Lock()
# ... and only once no slider move (of any tab) has asked for the cores for this long.
QUIET = 0.5


@atexit.register
def _stop_all() -> None:
    """At exit, stop every refinement in flight: a thread still inside torch while the
    interpreter shuts down aborts the process."""
    for refiner in list(_LIVE):
        refiner.stop()


class Refiner:
    """Measures the slow figures of `bench`'s current plan in a background thread.

    `latency=False` leaves latency out (for callers that never show it). `settle`: the
    seconds a plan must stay applied before its slow figures are measured.
    """

    def __init__(self, bench: Workbench, *, latency: bool = True,
                 on_finish: Callable[[Report], None] | None = None,
                 then: Callable[[Report, Stop], None] | None = None,
                 then_needed: Callable[[], bool] = lambda: False,
                 settle: float = 0.0) -> None:
        self._bench = bench
        self._latency = latency
        self.settle = settle
        self.on_finish = on_finish
        self.then = then
        self.then_needed = then_needed  # whether `then` has anything left to do
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._job: tuple[str, str] | None = None  # (plan key, weights key) being measured
        self.error: str | None = None
        bench.session.on_change.append(self.stop)
        _LIVE.add(self)

    def _current(self) -> tuple[str, str]:
        session = self._bench.session
        return session.plan.key(), session.weights_key()

    def pending(self) -> list[str]:
        """The slow figures (SLOW_FIGURES keys) not measured yet for the current plan."""
        meter = self._bench.meter
        kinds = [k for k in SLOW_FIGURES if self._latency or k != "latency"]
        if meter.full_data is None:
            kinds.remove("eval_full")
        return [k for k in kinds if not meter.has(k)]

    def running(self) -> bool:
        """Whether a refinement of the current plan is in flight."""
        thread = self._thread
        return thread is not None and thread.is_alive() and self._job == self._current()

    def start(self) -> bool:
        """Refine the current plan in the background unless it is measured already or
        being measured; returns whether a refinement is running now."""
        if self.running():
            return True
        self.stop()
        if not self.pending() and not (self.then is not None and self.then_needed()):
            return False
        self.error = None
        self._stop = threading.Event()
        self._job = self._current()
        self._thread = threading.Thread(target=self._work, args=(self._stop,),
                                        name="pruneviz-refine", daemon=True)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop a refinement in flight and wait for it (a fraction of a forward pass)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the refinement in flight; returns whether none is running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not (thread is not None and thread.is_alive())

    def _work(self, stop: threading.Event) -> None:
        if self.settle > 0 and stop.wait(self.settle):
            return  # the plan changed before it settled: nothing measured, nothing wasted
        while not _MEASURING.acquire(timeout=STOP_CHECK_S):
            if stop.is_set():
                return  # replaced while it waited for its turn
        try:
            if wait_for_quiet(QUIET, stop.is_set):  # the tabs' sliders have paused
                self._measure(stop)
        finally:
            _MEASURING.release()

    def _measure(self, stop: threading.Event) -> None:
        as_background(stop.is_set)  # slider moves go first; a stop never waits for them
        meter = self._bench.meter
        try:
            meter.finish(stop.is_set, latency=self._latency)
            report = meter.report(gzip=False)
        except Cancelled:
            return
        except Exception as exc:  # noqa: BLE001 - shown on the page, never raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"
            return
        if stop.is_set():
            return
        if self.on_finish is not None:
            self.on_finish(report)
        try:
            if self.then is not None:
                self.then(report, stop.is_set)
        except Cancelled:
            return
        except Exception as exc:  # noqa: BLE001 - shown on the page, never raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"
