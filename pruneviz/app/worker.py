"""A sensitivity analysis, a uniform sweep, a fine-tuning run or an export, in the
background, so that no page waits for it — and so that no slider move waits for it either.

A worker keeps what its pages show — points done and total, the time they took, the
result so far, an error message — behind a lock; pages read it with `snapshot()`, and
nothing here but the `*_worker(bench)` factories touches Streamlit. The work itself is a
`Job` (pruneviz.workflows.processes): it waits for its turn in the server's queue of long
jobs (at most a few at once, one per user: `queued` in a snapshot is the job's place,
1 = next), then runs in a child process at a lower priority, which sends its progress back
as messages that `receive` turns into the snapshot. A model on a GPU keeps its jobs in a
thread of the server, as do the page tests (`processes.RUN_IN_PROCESSES`): the same
messages, the same snapshots. The bodies of the jobs are pruneviz.workflows.long_jobs'.

`SensitivityWorker` runs one `SensitivityRun` at a time on a session of its own (a run
changes its session's plan while it measures, so it must never borrow the tab's workbench
session). When the tab's workbench measures a subset of the evaluation set, an analysis is
a fast first pass on the subset, then a second pass on the whole set whose result replaces
the first once it is complete. `sensitivity_worker()` keeps one worker per model in the
tab's session state, with its `SensitivityCache`, so re-running the same settings is
instant.

`SweepWorker` measures a `UniformSweep` the same way, on a session and meter of its own;
its measured points wait in the worker until a page records them in the tab's
experiment log (`record_sweep_points`), so that the log is only ever written by the page.

`FinetuneWorker` is the same for training: one run at a time on a session of its own,
from the original weights, the curve's records so far behind the lock. When training
ends (or is cancelled: the best weights so far are kept) it measures the result on the
test split with latency, and the same final plan on the original weights — the twin that
shows what fine-tuning recovered. The page records both in the tab's experiment log;
`finetune_worker()` keeps one worker per model in session state, so leaving the page does
not lose the run.

`ExportWorker` writes and verifies an export of the tab's plan the same way, on a session
of its own that loads the tab's weights and plan (pruneviz.output.export_job); the page
shows its download once it is in.

Each worker's jobs are queued as its `user`'s: the factories set it to `current_user()`,
the logged-in student's name in classroom mode, else the browser session's id.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import streamlit as st
from streamlit.runtime.scriptrunner import get_script_run_ctx
from torch import Tensor, nn

from pruneviz.app.keys import (
    EXPORT_WORKERS_KEY,
    FINETUNE_WORKERS_KEY,
    SWEEP_WORKERS_KEY,
    USER_KEY,
    WORKERS_KEY,
)
from pruneviz.app.state import LATENCY_RUNS, bench_key, workspace
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError, PrunevizError
from pruneviz.measure.meter import Meter
from pruneviz.output.bundle import ExportDownload
from pruneviz.output.export_job import ExportSpec, run_export
from pruneviz.workflows import jobqueue, processes
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.finetune import FinetuneRecipe, Record, total_steps
from pruneviz.workflows.finetune_job import validate_train_data
from pruneviz.workflows.jobqueue import JobQueue
from pruneviz.workflows.long_jobs import (
    FinetuneJob,
    FinetuneOutcome,
    FinetuneSpec,
    PassEnded,
    PassStarted,
    PointMeasured,
    SensitivitySpec,
    SessionRecipe,
    SweepMeasured,
    SweepSpec,
    SweepStarted,
    prepare_finetune,
    run_finetune,
    run_sensitivity,
    run_sweep,
)
from pruneviz.workflows.processes import ChildTask, Emit, Ended, Failed, Finishing, Job, Work
from pruneviz.workflows.sensitivity import SensitivityCache, SensitivityResult, SensitivityRun
from pruneviz.workflows.sweep import SweepPoint, UniformSweep
from pruneviz.workflows.workbench import Workbench, load_weights
from pruneviz.workflows.workspace import Workspace

LOCAL_USER = "local"  # who runs jobs when there is no Streamlit session (tests, scripts)


def current_user() -> str:
    """Whose long jobs this session's are, for the queue's one-job-per-user rule: the
    logged-in student's name (`USER_KEY`, classroom mode), else this browser session's id,
    else (no Streamlit session: tests, scripts) "local"."""
    user = st.session_state.get(USER_KEY)
    if isinstance(user, str):
        return user
    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else LOCAL_USER


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
    refinement runs), or the first pass's partial one while that runs or if it stopped.
    While the analysis waits for a free worker, `running` is True and `queued` its place
    in the queue."""

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
    queued: int | None = None  # waiting for a free worker: its place (1 = next)
    jobs_running: int = 0  # long jobs running on the server (while this one waits)


class _Background:
    """One job at a time, in a child process or a thread, with a lock for what it shares
    with the pages; a subclass's start() calls _launch(), its run_here() runs the job in
    this process, its receive() takes the job's messages.

    `child_process`: whether jobs go to a child process (None: when
    `processes.RUN_IN_PROCESSES` and the model is on the CPU; a session factory other than
    a `SessionRecipe` keeps them here). `queue`: the queue of long jobs (None: the server's,
    `jobqueue.JOBS`). `user`: whose jobs they are, in the queue."""

    def __init__(self, make_session: Callable[[], PruningSession], *,
                 child_process: bool | None = None, queue: JobQueue | None = None,
                 user: str = LOCAL_USER) -> None:
        self._make_session = make_session
        self._session: PruningSession | None = None  # the worker's own, built on first use
        self.child_process = child_process
        self.queue = queue
        self.user = user
        self._lock = threading.Lock()
        self._job: Job | None = None
        self._error: str | None = None  # why the last job failed, if it did
        self._started = 0.0  # when the current pass started (time.monotonic)
        self._elapsed = 0.0  # seconds from then to the end of its last point

    @property
    def running(self) -> bool:
        """A job waits for its turn or runs."""
        job = self._job
        return job is not None and job.running

    @property
    def job(self) -> Job | None:
        """The current (or last) job: its process id and niceness, whether it went to a
        child process."""
        return self._job

    def session(self) -> PruningSession:
        if self._session is None:
            self._session = self._make_session()
        return self._session

    def cancel(self) -> None:
        """Ask the running job to stop at its next check (between points or steps); a
        job waiting for its turn leaves the queue."""
        job = self._job
        if job is not None:
            job.cancel()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the running job to end; False if it is still running."""
        job = self._job
        return True if job is None else job.join(timeout)

    def in_child(self) -> bool:
        """Whether the next job goes to a child process."""
        wanted = processes.RUN_IN_PROCESSES if self.child_process is None \
            else self.child_process
        recipe = self._make_session
        return wanted and isinstance(recipe, SessionRecipe) and recipe.on_cpu

    def _queued(self) -> tuple[int | None, int]:
        """The job's place in the queue (None: not waiting), and the jobs running."""
        job = self._job
        if job is None or not job.running:
            return None, 0
        return job.position(), job.jobs_running()

    def receive(self, message: object) -> None:
        """A message of the running job: a subclass takes its own, then calls this."""
        if isinstance(message, Failed):
            with self._lock:
                self._error = message.message

    def run_here(self, emit: Emit, cancel: threading.Event) -> None:
        """Run the current job in this process, in the job's thread."""
        raise NotImplementedError

    def _clock_start(self) -> None:
        """A pass starts: time its points from now. Call it holding the lock."""
        self._started = time.monotonic()
        self._elapsed = 0.0

    def _clock_point(self) -> None:
        """A point of the pass just ended. Call it holding the lock."""
        self._elapsed = time.monotonic() - self._started

    def _launch(self, name: str, work: Work, spec: object) -> None:
        """Start the job: `work(session, spec, emit, cancel)` in a child process on a
        session of its own, or run_here()."""
        task = ChildTask(work, self._make_session, spec) if self.in_child() else None
        self._job = Job(self, name=name, user=self.user,
                        queue=self.queue if self.queue is not None else jobqueue.JOBS,
                        task=task)


class SensitivityWorker(_Background):
    """Runs sensitivity analyses of one model, one at a time, in the background.

    Each analysis measures on `data`; with `full` (the whole evaluation set, of which
    `data` is a subset), a complete first pass is followed by a second one on `full`,
    whose result replaces the first pass's once it is complete. Cancelling stops either
    pass: a cancelled refinement leaves the first pass's result."""

    def __init__(self, make_session: Callable[[], PruningSession], data: TensorData,
                 cache: SensitivityCache | None = None, *,
                 full: TensorData | None = None, child_process: bool | None = None,
                 queue: JobQueue | None = None, user: str = LOCAL_USER) -> None:
        super().__init__(make_session, child_process=child_process, queue=queue, user=user)
        self.data = data
        self.full = full
        self.cache = cache if cache is not None else SensitivityCache()
        self._settings: Settings | None = None
        self._done = 0
        self._total = 0
        self._result: SensitivityResult | None = None
        self._samples = 0
        self._refining = False
        self._spec: SensitivitySpec | None = None
        # told of each pass's result as it ends, in the job's thread (the tab's workspace
        # keeps it: saved even if no page looks before the server stops)
        self.on_result: Callable[[SensitivityResult], None] | None = None

    def start(self, criterion: str, granularity: str, levels: Sequence[float]) -> None:
        """Check the settings and start measuring in the background.

        Bad settings (a criterion the layers cannot use, no levels) raise PrunevizError
        here, before any job starts."""
        if self.running:
            raise PlanError("an analysis is already running: cancel it or wait for it")
        run = SensitivityRun(self.session(), self.data, criterion=criterion,
                             granularity=granularity, levels=levels, cache=self.cache)
        with self._lock:
            self._settings = Settings(criterion, run.granularity.value, run.levels)
            self._done = 0
            self._total = run.total
            self._result = None
            self._error = None
            self._samples = len(self.data)
            self._refining = False
            self._clock_start()
        self._spec = SensitivitySpec(self.data, self.full, criterion, run.granularity.value,
                                     run.levels, dict(self.cache.points))
        self._launch("pruneviz-sensitivity", run_sensitivity, self._spec)

    def restore(self, result: SensitivityResult) -> None:
        """Show `result` (a saved workspace's) as this worker's last analysis."""
        with self._lock:
            self._settings = Settings(result.criterion, result.granularity.value,
                                      result.levels)
            self._result = result
            self._done = self._total = sum(len(c) for c in result.points.values())
            self._samples = result.samples
            self._elapsed = result.seconds

    def snapshot(self) -> Progress:
        queued, jobs_running = self._queued()
        with self._lock:
            return Progress(self.running, self._settings, self._done, self._total,
                            self._result, self._error, self._elapsed, self._samples,
                            self._refining, None if self.full is None else len(self.full),
                            queued, jobs_running)

    def run_here(self, emit: Emit, cancel: threading.Event) -> None:
        assert self._spec is not None
        run_sensitivity(self.session(), self._spec, emit, cancel)

    def receive(self, message: object) -> None:
        """A pass starts; a point of it is known (the result shown grows with it in the
        first pass); it ends (its result is shown if it is the first pass's, or
        complete)."""
        with self._lock:
            if isinstance(message, PassStarted):
                self._done = 0
                self._total = message.total
                self._samples = message.samples
                self._refining = message.refining
                self._clock_start()
            elif isinstance(message, PointMeasured):
                for key, point in message.cached.items():
                    self.cache.put(key, point)
                self._done = message.done
                self._clock_point()
                if message.result is not None:
                    self._result = message.result
            elif isinstance(message, PassEnded):
                self._done = message.done
                if message.partial or message.result.complete:
                    self._result = message.result
            ended = self._result if isinstance(message, PassEnded) else None
        if ended is not None and self.on_result is not None:
            self.on_result(ended)
        super().receive(message)


def session_factory(bench: Workbench) -> SessionRecipe:
    """Builds a worker's own session over the bench's pristine model (deep-copied, its
    originals read from the pristine, which is never changed), with the bench's example
    input and calibration data: the same decisions as the tab's. It pickles, so that a
    job's process builds the same session."""
    return SessionRecipe(bench.pristine, bench.session.example_input,
                         bench.session.calibration, bench.name)


def sensitivity_worker(bench: Workbench) -> SensitivityWorker:
    """This tab's worker for the workbench's model: one per model, kept across pages."""
    workers = st.session_state.setdefault(WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if not isinstance(worker, SensitivityWorker):
        worker = SensitivityWorker(session_factory(bench), bench.eval_data,
                                   full=bench.eval_full)
        space = workspace()
        if space.sensitivity is not None:  # a saved workspace's last analysis
            worker.restore(space.sensitivity)
        worker.on_result = space.keep_sensitivity
        workers[bench_key()] = worker
    worker.user = current_user()
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
    queued: int | None = None  # waiting for a free worker: its place (1 = next)
    jobs_running: int = 0  # long jobs running on the server (while this one waits)

    @property
    def stopped(self) -> bool:
        """The last sweep ended before its last configuration (cancelled, or failed)."""
        return not self.running and self.done < self.total


class SweepWorker(_Background):
    """Measures uniform sweeps of one model, one at a time, in the background, on a
    session and meter of its own: the meter measures `data` like the tab's (latency timed
    against `reference`, the unpruned model, which is only read).

    Each sweep measures the weights the tab prunes when it starts (given by name and
    value). Measured points wait in the worker until a page takes them (`take_points`)
    and records them in the tab's experiment log."""

    def __init__(self, make_session: Callable[[], PruningSession], data: TensorData,
                 reference: nn.Module, *, latency_batch_size: int = 64,
                 latency_runs: int = LATENCY_RUNS, child_process: bool | None = None,
                 queue: JobQueue | None = None, user: str = LOCAL_USER) -> None:
        super().__init__(make_session, child_process=child_process, queue=queue, user=user)
        self.data = data
        self.reference = reference
        self.latency_batch_size = latency_batch_size
        self.latency_runs = latency_runs
        self._meter: Meter | None = None
        self._loaded = ORIGINAL  # the weights the session holds (built from the originals)
        self._loaded_state: dict[str, Tensor] | None = None  # their values, unless original
        self._settings: SweepSettings | None = None
        self._done = 0
        self._total = 0
        self._points: list[SweepPoint] = []  # measured, not taken by a page yet
        self._spec: SweepSpec | None = None

    def meter(self) -> Meter:
        """The worker's meter, on its own session (its measurements cached per plan and
        weights, like the tab's: a sweep measured before in this process is measured again
        instantly; a job's process measures afresh)."""
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
        raises PrunevizError here, before any job starts."""
        if self.running:
            raise PlanError("a sweep is already running: cancel it or wait for it")
        session = self.session()
        if weights != self._loaded:
            if state is None:
                raise PlanError(f"the values of the {weights} weights are needed")
            load_weights(session, state)
            self._loaded = weights
            self._loaded_state = None if weights == ORIGINAL else state
        sweep = UniformSweep(self.meter(), levels, granularity, criterion, weights=weights)
        if not sweep.total:
            raise PlanError(f"nothing to sweep: no layer can be pruned at the {granularity} "
                            f"granularity by {criterion}")
        with self._lock:
            self._settings = SweepSettings(granularity, criterion, tuple(levels), weights)
            self._done = 0
            self._total = sweep.total
            self._error = None
            self._clock_start()
        self._spec = SweepSpec(tuple(levels), granularity, criterion, weights,
                               self._loaded_state, self.data, self.reference,
                               self.latency_batch_size, self.latency_runs)
        self._launch("pruneviz-sweep", run_sweep, self._spec)

    def snapshot(self) -> SweepProgress:
        queued, jobs_running = self._queued()
        with self._lock:
            return SweepProgress(self.running, self._settings, self._done, self._total,
                                 self._elapsed, self._error, queued, jobs_running)

    def take_points(self) -> list[SweepPoint]:
        """The points measured since the last call, in order; each is handed out once."""
        with self._lock:
            points, self._points = self._points, []
            return points

    def run_here(self, emit: Emit, cancel: threading.Event) -> None:
        assert self._spec is not None
        run_sweep(self.session(), self._spec, emit, cancel, meter=self.meter())

    def receive(self, message: object) -> None:
        """The sweep starts measuring (its clock starts); a configuration is measured."""
        with self._lock:
            if isinstance(message, SweepStarted):
                self._total = message.total
                self._clock_start()
            elif isinstance(message, SweepMeasured):
                self._points.append(message.point)
                self._done = message.done
                self._clock_point()
        super().receive(message)


# -- an export -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportProgress:
    """A consistent view of the export worker at one moment: what the running (or last)
    export is of (`identity`, the page's own key for it), its download once written and
    verified, whether a copy went into a folder, why it failed."""

    running: bool
    identity: object | None
    download: ExportDownload | None
    in_folder: bool
    error: str | None
    queued: int | None = None  # waiting for a free worker: its place (1 = next)
    jobs_running: int = 0  # long jobs running on the server (while this one waits)


class ExportWorker(_Background):
    """Writes and verifies exports of one model, one at a time, in the background: in a
    job's process, on a session of its own rebuilt from the tab's (its weights, its plan:
    pruneviz.output.export_job), so that the seconds or minutes an export takes never
    hold up a slider."""

    def __init__(self, make_session: Callable[[], PruningSession], *,
                 child_process: bool | None = None, queue: JobQueue | None = None,
                 user: str = LOCAL_USER) -> None:
        super().__init__(make_session, child_process=child_process, queue=queue, user=user)
        self._spec: ExportSpec | None = None
        self._identity: object | None = None
        self._download: ExportDownload | None = None

    def start(self, spec: ExportSpec, identity: object) -> None:
        """Start writing the export `spec` describes; `identity` names what it is of."""
        if self.running:
            raise PlanError("an export is already being written: wait for it")
        with self._lock:
            self._identity = identity
            self._download = None
            self._error = None
        self._spec = spec
        self._launch("pruneviz-export", run_export, spec)

    def snapshot(self) -> ExportProgress:
        queued, jobs_running = self._queued()
        with self._lock:
            spec = self._spec
            return ExportProgress(self.running, self._identity, self._download,
                                  spec is not None and spec.folder is not None, self._error,
                                  queued, jobs_running)

    def run_here(self, emit: Emit, cancel: threading.Event) -> None:
        assert self._spec is not None
        run_export(self._make_session(), self._spec, emit, cancel)  # a fresh session each

    def receive(self, message: object) -> None:
        """The export is written and verified."""
        if isinstance(message, ExportDownload):
            with self._lock:
                self._download = message
        super().receive(message)


def export_worker(bench: Workbench) -> ExportWorker:
    """This tab's export worker for the workbench's model: one per model, kept across
    pages (leaving the Export page does not stop or lose an export)."""
    workers = st.session_state.setdefault(EXPORT_WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if not isinstance(worker, ExportWorker):
        worker = ExportWorker(session_factory(bench))
        workers[bench_key()] = worker
    worker.user = current_user()
    return worker


def sweep_worker(bench: Workbench) -> SweepWorker:
    """This tab's sweep worker for the workbench's model: one per model, kept across pages
    (leaving the Trade-offs page does not stop or lose a sweep)."""
    workers = st.session_state.setdefault(SWEEP_WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if not isinstance(worker, SweepWorker):
        worker = SweepWorker(session_factory(bench), bench.eval_data, bench.pristine,
                             latency_batch_size=bench.meter.latency_batch_size,
                             latency_runs=bench.meter.latency_runs)
        workers[bench_key()] = worker
    worker.user = current_user()
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
class FinetuneProgress:
    """A consistent view of the worker at one moment."""

    running: bool
    phase: str  # "queued" (waiting for a free worker), "training", "measuring", or "" idle
    job: FinetuneJob | None
    records: tuple[Record, ...]  # the curve of the current (or last) run
    done: int  # training steps done
    total: int  # training steps the recipe runs (before early stopping)
    outcome: FinetuneOutcome | None  # the last finished run, None while one runs
    error: str | None  # why the last run failed
    queued: int | None = None  # waiting for a free worker: its place (1 = next)
    jobs_running: int = 0  # long jobs running on the server (while this one waits)


class FinetuneWorker(_Background):
    """Fine-tunes one model, one run at a time, in the background.

    Every run starts from `pristine`'s weights on a session of the worker's own, never
    the tab's. `pristine` is only read: it is the distillation teacher and the latency
    reference."""

    def __init__(self, make_session: Callable[[], PruningSession], pristine: nn.Module,
                 train_data: TensorData, eval_data: TensorData, *,
                 latency_batch_size: int = 64, latency_runs: int = LATENCY_RUNS,
                 child_process: bool | None = None, queue: JobQueue | None = None,
                 user: str = LOCAL_USER) -> None:
        super().__init__(make_session, child_process=child_process, queue=queue, user=user)
        self.pristine = pristine
        self.train_data = train_data
        self.eval_data = eval_data
        self.latency_batch_size = latency_batch_size
        self.latency_runs = latency_runs
        self._job_asked: FinetuneJob | None = None
        self._phase = ""
        self._records: list[Record] = []
        self._total = 0
        self._outcome: FinetuneOutcome | None = None
        self._runs = 0
        self._claimed = 0
        self._spec: FinetuneSpec | None = None
        # told of each finished run, in the job's thread (it is recorded in the tab's
        # workspace and saved even if no page looks before the server stops)
        self.on_outcome: Callable[[FinetuneOutcome], None] | None = None

    def steps(self, recipe: FinetuneRecipe) -> int:
        """Training steps `recipe` runs on this model's training split."""
        return total_steps(self.train_data, recipe)

    def start(self, job: FinetuneJob) -> None:
        """Check the job and start training in the background.

        Bad choices (nothing to fine-tune, a schedule that does not end within the
        training, a criterion no layer can use, L1 on BatchNorm scales without BatchNorm)
        raise PrunevizError here, before any job starts, with the CLI's messages (the
        rules are workflows.finetune_job's)."""
        if self.running:
            raise PlanError("a run is already going: cancel it or wait for it")
        total = self.steps(job.recipe)
        prepare_finetune(self.session(), job, self.pristine, total)
        with self._lock:
            self._runs += 1
            run = self._runs
            self._job_asked = job
            self._phase = "training"
            self._records = []
            self._total = total
            self._outcome = None
            self._error = None
        self._spec = FinetuneSpec(job, run, total, self.pristine, self.train_data,
                                  self.eval_data, self.latency_batch_size, self.latency_runs)
        self._launch("pruneviz-finetune", run_finetune, self._spec)

    def snapshot(self) -> FinetuneProgress:
        queued, jobs_running = self._queued()
        with self._lock:
            done = self._records[-1].step if self._records else 0
            phase = "queued" if queued is not None else self._phase
            return FinetuneProgress(self.running, phase, self._job_asked,
                                    tuple(self._records), done, self._total, self._outcome,
                                    self._error, queued, jobs_running)

    def restore(self, outcomes: dict[int, FinetuneOutcome]) -> None:
        """Show the last of `outcomes` (a saved workspace's runs) as this worker's last
        run; the next run is numbered after them."""
        last = outcomes[max(outcomes)]
        with self._lock:
            self._runs = self._claimed = last.run
            self._job_asked = last.job
            self._records = list(last.result.history)
            self._total = last.summary.steps_planned
            self._outcome = last

    def claim(self, outcome: FinetuneOutcome) -> bool:
        """True exactly once per finished run: whoever gets it records the outcome."""
        with self._lock:
            if outcome.run <= self._claimed:
                return False
            self._claimed = outcome.run
            return True

    def run_here(self, emit: Emit, cancel: threading.Event) -> None:
        assert self._spec is not None  # start() prepared the session for it
        run_finetune(self.session(), self._spec, emit, cancel, prepared=True)

    def receive(self, message: object) -> None:
        """A record of the curve; training is over, the result is measured; the
        outcome; the end of the job."""
        with self._lock:
            if isinstance(message, Record):
                self._records.append(message)
            elif isinstance(message, Finishing):
                self._phase = "measuring"
            elif isinstance(message, FinetuneOutcome):
                self._outcome = message
            elif isinstance(message, Ended):
                self._phase = ""
        if isinstance(message, FinetuneOutcome) and self.on_outcome is not None:
            self.on_outcome(message)
        super().receive(message)


def finetune_worker(bench: Workbench) -> FinetuneWorker:
    """This tab's fine-tuning worker for the workbench's model: one per model, kept across
    pages (leaving the Fine-tune page does not stop or lose a run)."""
    workers = st.session_state.setdefault(FINETUNE_WORKERS_KEY, {})
    worker = workers.get(bench_key())
    if not isinstance(worker, FinetuneWorker):
        try:
            train_data = validate_train_data(bench.name, bench.train_data)
        except PrunevizError as exc:
            raise PlanError(f"{exc}: upload training data on the Model page, or start the "
                            "app with --train-data FILE (the same forms as --data)") from None
        worker = FinetuneWorker(session_factory(bench), bench.pristine, train_data,
                                bench.eval_data,
                                latency_batch_size=bench.meter.latency_batch_size)
        space = workspace()
        if space.finetuned:  # a saved workspace's runs
            worker.restore(space.finetuned)
        worker.on_outcome = partial(_record_run, space, worker)
        workers[bench_key()] = worker
    worker.user = current_user()
    return worker


def record_finished_run(bench: Workbench) -> FinetuneOutcome | None:
    """Record the tab's last fine-tuning run of this model in the experiment log, once: the
    fine-tuned weights with the final plan, and its twin (the same plan on the original
    weights). Any page may call it; returns the last finished run, if any."""
    worker = st.session_state.get(FINETUNE_WORKERS_KEY, {}).get(bench_key())
    if not isinstance(worker, FinetuneWorker):
        return None
    outcome = worker.snapshot().outcome
    if outcome is not None:
        _record_run(workspace(), worker, outcome)
    return outcome


def _record_run(space: Workspace, worker: FinetuneWorker, outcome: FinetuneOutcome) -> None:
    """Record a finished run in `space` once (the worker's job thread as it finishes, or a
    page): the fine-tuned weights with the final plan, its twin, and the run itself."""
    if not worker.claim(outcome):
        return
    space.remember_weights(outcome.weights, outcome.result.state)
    head = space.head  # the plan on screen when the run was recorded: both came from it
    space.log.record(outcome.report, outcome.plan, outcome.job.label, outcome.weights,
                     parent=head)
    space.log.record(outcome.twin, outcome.plan, f"{outcome.job.label} (before fine-tuning)",
                     parent=head)
    space.keep_finetune(outcome)


__all__ = [
    "LOCAL_USER",
    "FinetuneJob",
    "FinetuneOutcome",
    "FinetuneProgress",
    "FinetuneWorker",
    "Progress",
    "SensitivityWorker",
    "Settings",
    "SweepProgress",
    "SweepSettings",
    "SweepWorker",
    "current_user",
    "finetune_worker",
    "record_finished_run",
    "record_sweep_points",
    "sensitivity_worker",
    "session_factory",
    "sweep_worker",
]
