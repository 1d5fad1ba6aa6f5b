"""A sensitivity analysis in a background thread, so that no page waits for it.

`SensitivityWorker` is plain Python: it runs one `SensitivityRun` at a time on a
`PruningSession` of its own (a run changes its session's plan while it measures, so it
must never borrow the tab's workbench session), and keeps what the pages show — points
done and total, the result so far, an error message — behind a lock. Pages read it with
`snapshot()`; the thread never touches Streamlit. `sensitivity_worker()` keeps one worker
per model in the tab's session state, with its `SensitivityCache`, so re-running the
same settings is instant.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st

from pruneviz.data import TensorData
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.sensitivity import SensitivityCache, SensitivityResult, SensitivityRun
from pruneviz.session import PruningSession
from pruneviz.ui.state import pristine_sample
from pruneviz.workbench import CALIBRATION_SAMPLES, Workbench

WORKERS_KEY = "pv_sensitivity_workers"


@dataclass(frozen=True)
class Settings:
    """What an analysis was asked for."""

    criterion: str
    granularity: str
    levels: tuple[float, ...]


@dataclass(frozen=True)
class Progress:
    """A consistent view of the worker at one moment."""

    running: bool
    settings: Settings | None
    done: int  # points known (measured, cached or repeated)
    total: int
    result: SensitivityResult | None  # what is known so far; None before the first point
    error: str | None  # why the last run stopped, if it failed


class SensitivityWorker:
    """Runs sensitivity analyses of one model, one at a time, in a background thread."""

    def __init__(self, make_session: Callable[[], PruningSession], data: TensorData,
                 cache: SensitivityCache | None = None) -> None:
        self._make_session = make_session
        self.data = data
        self.cache = cache if cache is not None else SensitivityCache()
        self._session: PruningSession | None = None  # built on the first start
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._settings: Settings | None = None
        self._done = 0
        self._total = 0
        self._result: SensitivityResult | None = None
        self._error: str | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, criterion: str, granularity: str, levels: Sequence[float]) -> None:
        """Check the settings and start measuring in the background.

        Bad settings (a criterion the layers cannot use, no levels) raise PrunevizError
        here, before any thread starts."""
        if self.running:
            raise PlanError("an analysis is already running: cancel it or wait for it")
        if self._session is None:
            self._session = self._make_session()
        run = SensitivityRun(self._session, self.data, criterion=criterion,
                             granularity=granularity, levels=levels, cache=self.cache)
        cancel = threading.Event()
        with self._lock:
            self._settings = Settings(criterion, run.granularity.value, run.levels)
            self._done = 0
            self._total = run.total
            self._result = None
            self._error = None
            self._cancel = cancel
        self._thread = threading.Thread(target=self._work, args=(run, cancel),
                                        name="pruneviz-sensitivity", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        """Ask the running analysis to stop after the point it is measuring."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running analysis to end; False if it is still running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(self.running, self._settings, self._done, self._total,
                            self._result, self._error)

    def _work(self, run: SensitivityRun, cancel: threading.Event) -> None:
        try:
            for _ in run.points(cancel):
                partial = run.result()
                with self._lock:
                    self._done = run.done
                    self._result = partial
            final = run.result()  # marked complete only if no point was skipped
            with self._lock:
                self._done = run.done
                self._result = final
        except PrunevizError as exc:
            with self._lock:
                self._error = str(exc)
        except Exception as exc:  # noqa: BLE001 - a thread has no caller to raise to
            with self._lock:
                self._error = f"{type(exc).__name__}: {exc}"


def sensitivity_worker(bench: Workbench) -> SensitivityWorker:
    """This tab's worker for the workbench's model: one per model, kept across pages."""
    workers = st.session_state.setdefault(WORKERS_KEY, {})
    worker = workers.get(bench.name)
    if isinstance(worker, SensitivityWorker):
        return worker
    sample = pristine_sample(bench.name.removeprefix("sample:"))
    calibration = (bench.train_data or bench.eval_data).head(CALIBRATION_SAMPLES)
    name = bench.name

    def make_session() -> PruningSession:
        # The session deep-copies the pristine model: the worker's own copy.
        return PruningSession(sample.model, sample.example_input(), calibration=calibration,
                              name=name)

    worker = SensitivityWorker(make_session, bench.eval_data)
    workers[bench.name] = worker
    return worker
