"""A sensitivity analysis, a uniform sweep, or a fine-tuning run, in a background thread,
so that no page waits for it.

`SensitivityWorker` is plain Python: it runs one `SensitivityRun` at a time on a
`PruningSession` of its own (a run changes its session's plan while it measures, so it
must never borrow the tab's workbench session), and keeps what the pages show — points
done and total, the time they took, the result so far, an error message — behind a lock.
Pages read it with `snapshot()`; the thread never touches Streamlit. When the tab's
workbench measures a subset of the evaluation set, an analysis is a fast first pass on
the subset, then a second pass on the whole set whose result replaces the first once it
is complete. `sensitivity_worker()` keeps one worker per model in the tab's session
state, with its `SensitivityCache`, so re-running the same settings is instant.

`SweepWorker` measures a `UniformSweep` the same way, on a session and meter of its own;
its measured points wait in the worker until a page records them in the tab's
experiment log (`record_sweep_points`), so that the log is only ever written by the page.

`FinetuneWorker` is the same for training: one run at a time on a session of its own,
reset to the original weights before each run, the curve's records so far behind the
lock. When training ends (or is cancelled: the best weights so far are kept) it measures
the result on the test split with latency, and the same final plan on the original
weights — the twin that shows what fine-tuning recovered. The page records both in the
tab's experiment log; `finetune_worker()` keeps one worker per model in session state, so
leaving the page does not lose the run.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import streamlit as st
from torch import Tensor, nn

from pruneviz.app.keys import FINETUNE_WORKERS_KEY, SWEEP_WORKERS_KEY, WORKERS_KEY
from pruneviz.app.state import LATENCY_RUNS, bench_key, workspace
from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.measure.meter import Meter, Report
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.finetune import (
    FinetuneRecipe,
    FinetuneResult,
    PruneSpec,
    Record,
    finetune,
    total_steps,
)
from pruneviz.workflows.finetune_job import (
    RunSummary,
    epoch_steps,
    summarize_run,
    validate_plan_prunes,
    validate_prunable,
    validate_regularizer_fits,
    validate_schedule_fits,
    validate_train_data,
)
from pruneviz.workflows.schedules import Schedule
from pruneviz.workflows.sensitivity import SensitivityCache, SensitivityResult, SensitivityRun
from pruneviz.workflows.sweep import SweepPoint, UniformSweep
from pruneviz.workflows.workbench import Workbench
from pruneviz.workflows.workspace import load_weights


@dataclass(frozen=True)
class Settings:
    """What an analysis was asked for."""

    criterion: str
    granularity: str
    levels: tuple[float, ...]


@dataclass(frozen=True)
class Progress:
    """A consistent view of the worker at one moment.

    `done`, `total`, `elapsed` and `samples` are the current pass's (or the last one's):
    the first pass on the workbench's evaluation data, or the refinement on the whole
    set. `result` is the best complete result so far (the first pass's while the
    refinement runs), or the first pass's partial one while that runs or if it stopped."""

    running: bool
    settings: Settings | None
    done: int  # points known (measured, cached or repeated)
    total: int
    result: SensitivityResult | None  # what is known so far; None before the first point
    error: str | None  # why the last run stopped, if it failed
    elapsed: float  # seconds the pass's `done` points took
    samples: int  # evaluation samples the pass measures on
    refining: bool  # the pass is the refinement on the whole evaluation set
    full_samples: int | None  # the whole set's size, when the first pass is on a subset


class _Background:
    """One background thread at a time, with a cancel flag and a lock for what it shares
    with the pages; a subclass's start() calls _launch()."""

    def __init__(self, make_session: Callable[[], PruningSession]) -> None:
        self._make_session = make_session
        self._session: PruningSession | None = None  # the worker's own, built on first use
        self._lock = threading.Lock()
        self._cancel = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: str | None = None  # why the last job failed, if it did
        self._started = 0.0  # when the current pass started (time.monotonic)
        self._elapsed = 0.0  # seconds from then to the end of its last point

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def session(self) -> PruningSession:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (between points or steps)."""
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running job to end; False if it is still running."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        return not self.running

    def _fail(self, exc: Exception) -> None:
        """Keep a job's failure for the page: a user problem's message as it is, anything
        else with its type."""
        message = str(exc) if isinstance(exc, PrunevizError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._error = message

    def _clock_start(self) -> None:
        """A pass starts: time its points from now. Call it holding the lock."""
        self._started = time.monotonic()
        self._elapsed = 0.0

    def _clock_point(self) -> None:
        """A point of the pass just ended. Call it holding the lock."""
        self._elapsed = time.monotonic() - self._started

    def _launch(self, name: str, target: Callable[..., None], *args: object) -> None:
        self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._thread.start()


class SensitivityWorker(_Background):
    """Runs sensitivity analyses of one model, one at a time, in a background thread.

    Each analysis measures on `data`; with `full` (the whole evaluation set, of which
    `data` is a subset), a complete first pass is followed by a second one on `full`,
    whose result replaces the first pass's once it is complete. Cancelling stops either
    pass: a cancelled refinement leaves the first pass's result."""

    def __init__(self, make_session: Callable[[], PruningSession], data: TensorData,
                 cache: SensitivityCache | None = None, *,
                 full: TensorData | None = None) -> None:
        super().__init__(make_session)
        self.data = data
        self.full = full
        self.cache = cache if cache is not None else SensitivityCache()
        self._settings: Settings | None = None
        self._done = 0
        self._total = 0
        self._result: SensitivityResult | None = None
        self._samples = 0
        self._refining = False

    def start(self, criterion: str, granularity: str, levels: Sequence[float]) -> None:
        """Check the settings and start measuring in the background.

        Bad settings (a criterion the layers cannot use, no levels) raise PrunevizError
        here, before any thread starts."""
        if self.running:
            raise PlanError("an analysis is already running: cancel it or wait for it")
        run = SensitivityRun(self.session(), self.data, criterion=criterion,
                             granularity=granularity, levels=levels, cache=self.cache)
        cancel = threading.Event()
        with self._lock:
            self._settings = Settings(criterion, run.granularity.value, run.levels)
            self._done = 0
            self._total = run.total
            self._result = None
            self._error = None
            self._cancel = cancel
            self._samples = len(self.data)
            self._refining = False
            self._clock_start()
        self._launch("pruneviz-sensitivity", self._work, run, cancel)

    def snapshot(self) -> Progress:
        with self._lock:
            return Progress(self.running, self._settings, self._done, self._total,
                            self._result, self._error, self._elapsed, self._samples,
                            self._refining, None if self.full is None else len(self.full))

    def _work(self, run: SensitivityRun, cancel: threading.Event) -> None:
        try:
            if not self._pass(run, cancel, partial=True) or self.full is None \
                    or cancel.is_set():
                return
            refine = SensitivityRun(self.session(), self.full, criterion=run.criterion,
                                    granularity=run.granularity, levels=run.levels,
                                    cache=self.cache)
            with self._lock:
                self._done = 0
                self._total = refine.total
                self._samples = len(self.full)
                self._refining = True
                self._clock_start()
            self._pass(refine, cancel, partial=False)
        except Exception as exc:  # noqa: BLE001 - a thread has no caller to raise to
            self._fail(exc)

    def _pass(self, run: SensitivityRun, cancel: threading.Event, *, partial: bool) -> bool:
        """Run one pass; the result shown becomes its result as it grows (`partial`), or
        once it is complete. True if it is complete."""
        for _ in run.points(cancel):
            grown = run.result() if partial else None
            with self._lock:
                self._done = run.done
                self._clock_point()
                if grown is not None:
                    self._result = grown
        final = run.result()  # marked complete only if no point was skipped
        with self._lock:
            self._done = run.done
            if partial or final.complete:
                self._result = final
        return final.complete


def session_factory(bench: Workbench) -> Callable[[], PruningSession]:
    """Builds a worker's own session over the bench's pristine model (deep-copied, its
    originals read from the pristine, which is never changed), with the bench's example
    input and calibration data: the same decisions as the tab's."""
    pristine, example = bench.pristine, bench.session.example_input
    calibration, name = bench.session.calibration, bench.name

    def make_session() -> PruningSession:
        return PruningSession(pristine, example, calibration=calibration, name=name,
                              share_originals=True)

    return make_session


def sensitivity_worker(bench: Workbench) -> SensitivityWorker:
    """This tab's worker for the workbench's model: one per model, kept across pages."""
    workers = st.session_state.setdefault(WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if isinstance(worker, SensitivityWorker):
        return worker
    worker = SensitivityWorker(session_factory(bench), bench.eval_data, full=bench.eval_full)
    workers[bench_key()] = worker
    return worker


# -- a uniform sweep --------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep was asked for."""

    granularity: str
    criterion: str
    levels: tuple[float, ...]
    weights: str  # the name of the weights it measures


@dataclass(frozen=True)
class SweepProgress:
    """A consistent view of the sweep worker at one moment."""

    running: bool
    settings: SweepSettings | None
    done: int  # configurations measured
    total: int  # configurations the sweep measures
    elapsed: float  # seconds the `done` configurations took
    error: str | None  # why the last sweep stopped, if it failed

    @property
    def stopped(self) -> bool:
        """The last sweep ended before its last configuration (cancelled, or failed)."""
        return not self.running and self.done < self.total


class SweepWorker(_Background):
    """Measures uniform sweeps of one model, one at a time, in a background thread, on a
    session and meter of its own: the meter measures `data` like the tab's (latency timed
    against `reference`, the unpruned model, which is only read).

    Each sweep measures the weights the tab prunes when it starts (given by name and
    value). Measured points wait in the worker until a page takes them (`take_points`)
    and records them in the tab's experiment log."""

    def __init__(self, make_session: Callable[[], PruningSession], data: TensorData,
                 reference: nn.Module, *, latency_batch_size: int = 64,
                 latency_runs: int = LATENCY_RUNS) -> None:
        super().__init__(make_session)
        self.data = data
        self.reference = reference
        self.latency_batch_size = latency_batch_size
        self.latency_runs = latency_runs
        self._meter: Meter | None = None
        self._loaded = ORIGINAL  # the weights the session holds (built from the originals)
        self._settings: SweepSettings | None = None
        self._done = 0
        self._total = 0
        self._points: list[SweepPoint] = []  # measured, not taken by a page yet

    def meter(self) -> Meter:
        """The worker's meter, on its own session (its measurements cached per plan and
        weights, like the tab's: a sweep measured before is measured again instantly)."""
        if self._meter is None:
            self._meter = Meter(self.session(), self.data, reference=self.reference,
                                latency_batch_size=self.latency_batch_size,
                                latency_runs=self.latency_runs)
        return self._meter

    def start(self, levels: Sequence[float], granularity: str, criterion: str, *,
              weights: str = ORIGINAL, state: dict[str, Tensor] | None = None) -> None:
        """Start measuring the uniform plans at `levels` (fractions) in the background, on
        the weights called `weights` (`state`: their values, needed unless they are the
        originals).

        A sweep with nothing to prune (no layer takes this granularity and criterion)
        raises PrunevizError here, before any thread starts."""
        if self.running:
            raise PlanError("a sweep is already running: cancel it or wait for it")
        session = self.session()
        if weights != self._loaded:
            if state is None:
                raise PlanError(f"the values of the {weights} weights are needed")
            load_weights(session, state)
            self._loaded = weights
        sweep = UniformSweep(self.meter(), levels, granularity, criterion, weights=weights)
        if not sweep.total:
            raise PlanError(f"nothing to sweep: no layer can be pruned at the {granularity} "
                            f"granularity by {criterion}")
        cancel = threading.Event()
        with self._lock:
            self._settings = SweepSettings(granularity, criterion, tuple(levels), weights)
            self._done = 0
            self._total = sweep.total
            self._error = None
            self._cancel = cancel
            self._clock_start()
        self._launch("pruneviz-sweep", self._work, sweep, cancel)

    def snapshot(self) -> SweepProgress:
        with self._lock:
            return SweepProgress(self.running, self._settings, self._done, self._total,
                                 self._elapsed, self._error)

    def take_points(self) -> list[SweepPoint]:
        """The points measured since the last call, in order; each is handed out once."""
        with self._lock:
            points, self._points = self._points, []
            return points

    def _work(self, sweep: UniformSweep, cancel: threading.Event) -> None:
        try:
            for point in sweep.points(cancel):
                with self._lock:
                    self._points.append(point)
                    self._done = sweep.done
                    self._clock_point()
        except Exception as exc:  # noqa: BLE001 - a thread has no caller to raise to
            self._fail(exc)


def sweep_worker(bench: Workbench) -> SweepWorker:
    """This tab's sweep worker for the workbench's model: one per model, kept across pages
    (leaving the Trade-offs page does not stop or lose a sweep)."""
    workers = st.session_state.setdefault(SWEEP_WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if isinstance(worker, SweepWorker):
        return worker
    worker = SweepWorker(session_factory(bench), bench.eval_data, bench.pristine,
                         latency_batch_size=bench.meter.latency_batch_size,
                         latency_runs=bench.meter.latency_runs)
    workers[bench_key()] = worker
    return worker


def record_sweep_points() -> int:
    """Record the points this tab's sweep of its model measured since the last call in the
    tab's experiment log, as `Workspace.record_uniform_sweep` records them. Any page may
    call it; returns how many were taken."""
    worker = st.session_state.get(SWEEP_WORKERS_KEY, {}).get(bench_key())
    if not isinstance(worker, SweepWorker):
        return 0
    space = workspace()
    points = worker.take_points()
    for point in points:
        space.record_sweep_point(point)
    return len(points)


# -- fine-tuning ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FinetuneJob:
    """What a fine-tuning run is asked for."""

    kind: str  # the page's recipe: "oneshot", "iterative", "poly" or "regularize"
    label: str  # the experiment label of the result
    recipe: FinetuneRecipe
    schedule: Schedule | None = None  # None: `plan` is held fixed (masked fine-tuning)
    prune: PruneSpec | None = None  # how the schedule's events prune
    plan: Plan | None = None  # one-shot + fine-tune: the plan to hold fixed


@dataclass(frozen=True)
class FinetuneOutcome:
    """A finished run (done, stopped early or cancelled), measured."""

    run: int  # 1, 2, ... per model in this tab
    job: FinetuneJob
    result: FinetuneResult
    plan: Plan  # the final plan (stamped)
    report: Report  # the fine-tuned weights with `plan`, on the test split, with latency
    twin: Report  # `plan` on the original weights, no retraining
    summary: RunSummary  # how training went, as the CLI's report says it
    before_pruning: dict[str, Tensor] | None  # weights just before the first pruning event,
    # when a regulariser prepared it

    @property
    def weights(self) -> str:
        """The name of the fine-tuned weights in the tab's experiment log."""
        return f"fine-tuned #{self.run}"


@dataclass(frozen=True)
class FinetuneProgress:
    """A consistent view of the worker at one moment."""

    running: bool
    phase: str  # "training", "measuring", or "" when idle
    job: FinetuneJob | None
    records: tuple[Record, ...]  # the curve of the current (or last) run
    done: int  # training steps done
    total: int  # training steps the recipe runs (before early stopping)
    outcome: FinetuneOutcome | None  # the last finished run, None while one runs
    error: str | None  # why the last run failed


class FinetuneWorker(_Background):
    """Fine-tunes one model, one run at a time, in a background thread.

    Every run starts from `pristine`'s weights on the worker's own session, never the
    tab's. `pristine` is only read: it is the distillation teacher and the latency
    reference."""

    def __init__(self, make_session: Callable[[], PruningSession], pristine: nn.Module,
                 train_data: TensorData, eval_data: TensorData, *,
                 latency_batch_size: int = 64, latency_runs: int = LATENCY_RUNS) -> None:
        super().__init__(make_session)
        self.pristine = pristine
        self.train_data = train_data
        self.eval_data = eval_data
        self.latency_batch_size = latency_batch_size
        self.latency_runs = latency_runs
        self._job: FinetuneJob | None = None
        self._phase = ""
        self._records: list[Record] = []
        self._total = 0
        self._outcome: FinetuneOutcome | None = None
        self._runs = 0
        self._claimed = 0

    def steps(self, recipe: FinetuneRecipe) -> int:
        """Training steps `recipe` runs on this model's training split."""
        return total_steps(self.train_data, recipe)

    def start(self, job: FinetuneJob) -> None:
        """Check the job and start training in the background.

        Bad choices (nothing to fine-tune, a schedule that does not end within the
        training, a criterion no layer can use, L1 on BatchNorm scales without BatchNorm)
        raise PrunevizError here, before any thread starts, with the CLI's messages (the
        rules are workflows.finetune_job's)."""
        if self.running:
            raise PlanError("a run is already going: cancel it or wait for it")
        session = self.session()
        session.apply(session.stamp(Plan()))
        session.rebase(self.pristine.state_dict())  # every run starts from the originals
        total = self.steps(job.recipe)
        validate_regularizer_fits(job.recipe, session.model)
        if job.schedule is None:  # checked here; held fixed while training
            session.apply(validate_plan_prunes(job.plan, "this tab's plan"))
        else:
            prune = job.prune or PruneSpec()
            validate_schedule_fits(job.schedule, job.recipe, total)
            validate_prunable(session, prune, job.schedule.final)
            with session.applied(prune.plan(session, job.schedule.final)):
                pass  # refuses what no layer can do, before training starts
        cancel = threading.Event()
        with self._lock:
            self._runs += 1
            run = self._runs
            self._job = job
            self._phase = "training"
            self._records = []
            self._total = total
            self._outcome = None
            self._error = None
            self._cancel = cancel
        self._launch("pruneviz-finetune", self._work, job, session, cancel, run)

    def snapshot(self) -> FinetuneProgress:
        with self._lock:
            done = self._records[-1].step if self._records else 0
            return FinetuneProgress(self.running, self._phase, self._job,
                                    tuple(self._records), done, self._total, self._outcome,
                                    self._error)

    def claim(self, outcome: FinetuneOutcome) -> bool:
        """True exactly once per finished run: whoever gets it records the outcome."""
        with self._lock:
            if outcome.run <= self._claimed:
                return False
            self._claimed = outcome.run
            return True

    def _work(self, job: FinetuneJob, session: PruningSession, cancel: threading.Event,
              run: int) -> None:
        total = self._total
        events = job.schedule.events(total) if job.schedule is not None else []
        first = events[0][0] if events else 0
        watch = job.recipe.regularizer is not None and first > 0
        every = max(1, min(10, total // 60))
        if watch:  # a record falls exactly on the step before the first pruning event
            every = math.gcd(every, first)
        before: dict[str, Tensor] | None = None

        def progress(record: Record) -> None:
            nonlocal before
            if watch and record.step == first and record.event is None:
                before = {k: v.detach().clone() for k, v in session.model.state_dict().items()}
            with self._lock:
                self._records.append(record)

        try:
            result = finetune(
                session, self.train_data, job.recipe, schedule=job.schedule, prune=job.prune,
                teacher=self.pristine if job.recipe.distill > 0 else None,
                progress=progress, cancel=cancel, record_every=every)
            with self._lock:
                self._phase = "measuring"
            plan = session.stamp(session.plan)
            meter = Meter(session, self.eval_data, reference=self.pristine,
                          latency_batch_size=self.latency_batch_size,
                          latency_runs=self.latency_runs)
            report = meter.report(latency=True)
            session.rebase(self.pristine.state_dict())  # the same plan, no retraining
            twin = meter.report(latency=True)
            summary = summarize_run(result, job.recipe, total,
                                    epoch_steps(self.train_data, job.recipe),
                                    self.eval_data.metric_name)
            outcome = FinetuneOutcome(run, job, result, plan, report, twin, summary, before)
            with self._lock:
                self._outcome = outcome
        except Exception as exc:  # noqa: BLE001 - a thread has no caller to raise to
            self._fail(exc)
        finally:
            with self._lock:
                self._phase = ""


def finetune_worker(bench: Workbench) -> FinetuneWorker:
    """This tab's fine-tuning worker for the workbench's model: one per model, kept across
    pages (leaving the Fine-tune page does not stop or lose a run)."""
    workers = st.session_state.setdefault(FINETUNE_WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if isinstance(worker, FinetuneWorker):
        return worker
    try:
        train_data = validate_train_data(bench.name, bench.train_data)
    except PrunevizError as exc:
        raise PlanError(f"{exc}: start the app with --train-data (the same forms as --data)") \
            from None
    worker = FinetuneWorker(session_factory(bench), bench.pristine, train_data,
                            bench.eval_data,
                            latency_batch_size=bench.meter.latency_batch_size)
    workers[bench_key()] = worker
    return worker


def record_finished_run(bench: Workbench) -> FinetuneOutcome | None:
    """Record the tab's last fine-tuning run of this model in the experiment log, once: the
    fine-tuned weights with the final plan, and its twin (the same plan on the original
    weights). Any page may call it; returns the last finished run, if any."""
    worker = st.session_state.get(FINETUNE_WORKERS_KEY, {}).get(bench_key())
    if not isinstance(worker, FinetuneWorker):
        return None
    outcome = worker.snapshot().outcome
    if outcome is None or not worker.claim(outcome):
        return outcome
    space = workspace()
    space.remember_weights(outcome.weights, outcome.result.state)
    space.log.record(outcome.report, outcome.plan, outcome.job.label, outcome.weights)
    space.log.record(outcome.twin, outcome.plan, f"{outcome.job.label} (before fine-tuning)")
    return outcome
