"""The three long jobs — a sensitivity analysis, a uniform sweep, a fine-tuning run — as
functions that a worker runs on a session of its own, and report what the pages show as
messages.

Each job is a spec (plain data: what to run, on which data; picklable, so that it can go
to a child process) and a function `run_*(session, spec, emit, cancel)`. The function
sends its progress through `emit(message)`, one of the small message classes below (or a
result object itself: a `SweepPoint`'s measurement, a training `Record`, the
`FinetuneOutcome`), and stops at its next check once `cancel` is set. It does not know
where it runs: pruneviz.workflows.processes runs it in a child process (or, for a model on
a GPU, in a thread), and the worker in pruneviz.app.worker turns each message into its
`snapshot()`. The session is the job's own (`SessionRecipe` builds one over the pristine
model): a job changes its session's plan and weights while it runs.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field

from torch import Tensor, nn

from pruneviz.core.plan import Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tensors import TensorData
from pruneviz.measure.meter import Meter, Report
from pruneviz.workflows.experiments import ORIGINAL
from pruneviz.workflows.finetune import (
    FinetuneRecipe,
    FinetuneResult,
    PruneSpec,
    Record,
    finetune,
)
from pruneviz.workflows.finetune_job import (
    RunSummary,
    epoch_steps,
    summarize_run,
    validate_plan_prunes,
    validate_prunable,
    validate_regularizer_fits,
    validate_schedule_fits,
)
from pruneviz.workflows.processes import Emit, Finishing
from pruneviz.workflows.schedules import Schedule
from pruneviz.workflows.sensitivity import (
    Point,
    SensitivityCache,
    SensitivityResult,
    SensitivityRun,
)
from pruneviz.workflows.sweep import SweepPoint, UniformSweep
from pruneviz.workflows.workbench import load_weights


@dataclass(frozen=True)
class SessionRecipe:
    """What a worker's own session is built from: the pristine model (deep-copied by the
    session, its originals read from the pristine, which is never changed), an example
    input and the calibration data. Calling it builds the session; it pickles, so that a
    child process builds the same session as a thread would."""

    pristine: nn.Module
    example_input: Tensor | tuple[Tensor, ...]
    calibration: TensorData | None
    name: str

    def __call__(self) -> PruningSession:
        return PruningSession(self.pristine, self.example_input, calibration=self.calibration,
                              name=self.name, share_originals=True)

    @property
    def on_cpu(self) -> bool:
        """Whether the model and its inputs are on the CPU (CUDA tensors stay in-process)."""
        inputs = self.example_input if isinstance(self.example_input, tuple) \
            else (self.example_input,)
        tensors = [*self.pristine.parameters(), *self.pristine.buffers(), *inputs]
        if self.calibration is not None:
            tensors += [self.calibration.x, self.calibration.y]
        return all(t.device.type == "cpu" for t in tensors)


# -- sensitivity ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SensitivitySpec:
    """An analysis: a pass on `data`, then, with `full` (the whole set, of which `data` is a
    subset), a second pass on it. `known`: the points measured before (the worker's cache),
    which are not measured again."""

    data: TensorData
    full: TensorData | None
    criterion: str
    granularity: str
    levels: tuple[float, ...]
    known: dict[tuple[str, ...], Point]


@dataclass(frozen=True)
class PassStarted:
    """A pass of `total` points on `samples` samples starts (`refining`: the second)."""

    total: int
    samples: int
    refining: bool


@dataclass(frozen=True)
class PointMeasured:
    """A point of the pass is known: `done` so far, the result so far (first pass only),
    and the points added to the cache by it, for the worker's cache."""

    done: int
    result: SensitivityResult | None
    cached: dict[tuple[str, ...], Point]


@dataclass(frozen=True)
class PassEnded:
    """A pass ended (complete or cancelled): its result, which the pages show if it is the
    first pass's (`partial`) or complete."""

    done: int
    result: SensitivityResult
    partial: bool


@dataclass
class _RecordingCache(SensitivityCache):
    """A copy of the worker's cache that keeps what each point adds, to hand back."""

    added: dict[tuple[str, ...], Point] = field(default_factory=dict)

    def put(self, key: tuple[str, ...], point: Point) -> None:
        super().put(key, point)
        self.added[key] = point

    def take(self) -> dict[tuple[str, ...], Point]:
        added, self.added = self.added, {}
        return added


def run_sensitivity(session: PruningSession, spec: SensitivitySpec, emit: Emit,
                    cancel: threading.Event) -> None:
    """The first pass; then, if it is complete and there is a whole set, the refinement."""
    cache = _RecordingCache(dict(spec.known))

    def one_pass(data: TensorData, *, partial: bool) -> bool:
        run = SensitivityRun(session, data, criterion=spec.criterion,
                             granularity=spec.granularity, levels=spec.levels, cache=cache)
        emit(PassStarted(run.total, len(data), refining=not partial))
        for _ in run.points(cancel):
            emit(PointMeasured(run.done, run.result() if partial else None, cache.take()))
        final = run.result()  # marked complete only if no point was skipped
        emit(PassEnded(run.done, final, partial))
        return final.complete

    if not one_pass(spec.data, partial=True) or spec.full is None or cancel.is_set():
        return
    one_pass(spec.full, partial=False)


# -- a uniform sweep ------------------------------------------------------------------------
@dataclass(frozen=True)
class SweepSpec:
    """A uniform sweep of the weights called `weights` (`state`: their values, None for the
    original weights), measured on `data` with latency timed against `reference`."""

    levels: tuple[float, ...]
    granularity: str
    criterion: str
    weights: str
    state: dict[str, Tensor] | None
    data: TensorData
    reference: nn.Module
    latency_batch_size: int
    latency_runs: int


@dataclass(frozen=True)
class SweepStarted:
    """The sweep starts measuring its `total` configurations."""

    total: int


@dataclass(frozen=True)
class SweepMeasured:
    """One configuration is measured: `done` so far."""

    point: SweepPoint
    done: int


def run_sweep(session: PruningSession, spec: SweepSpec, emit: Emit, cancel: threading.Event,
              *, meter: Meter | None = None) -> None:
    """Measure the sweep's plans one by one. `meter`: one on `session` already holding the
    weights (a worker's own, whose cache makes a sweep measured before instant); without
    it the weights are loaded and a meter made for this sweep."""
    if meter is None:
        if spec.weights != ORIGINAL and spec.state is not None:
            load_weights(session, spec.state)
        meter = Meter(session, spec.data, reference=spec.reference,
                      latency_batch_size=spec.latency_batch_size, latency_runs=spec.latency_runs)
    sweep = UniformSweep(meter, spec.levels, spec.granularity, spec.criterion,
                         weights=spec.weights)
    emit(SweepStarted(sweep.total))
    for point in sweep.points(cancel):
        emit(SweepMeasured(point, sweep.done))


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
class FinetuneSpec:
    """Run number `run` of `job`: `total` steps on `train_data` from `pristine`'s weights
    (the distillation teacher and latency reference, only read), the result measured on
    `eval_data`."""

    job: FinetuneJob
    run: int
    total: int
    pristine: nn.Module
    train_data: TensorData
    eval_data: TensorData
    latency_batch_size: int
    latency_runs: int


def prepare_finetune(session: PruningSession, job: FinetuneJob, pristine: nn.Module,
                     total: int) -> None:
    """Put `session` at the start of a run (the original weights; the plan held fixed, if
    the job has no schedule), refusing what cannot run with the CLI's messages (the rules
    are workflows.finetune_job's): nothing to fine-tune, a schedule that does not end
    within the `total` steps, a criterion no layer can use, L1 on BatchNorm scales without
    BatchNorm."""
    session.apply(session.stamp(Plan()))
    session.rebase(pristine.state_dict())  # every run starts from the originals
    validate_regularizer_fits(job.recipe, session.model)
    if job.schedule is None:  # held fixed while training
        session.apply(validate_plan_prunes(job.plan, "this tab's plan"))
    else:
        prune = job.prune or PruneSpec()
        validate_schedule_fits(job.schedule, job.recipe, total)
        validate_prunable(session, prune, job.schedule.final)
        with session.applied(prune.plan(session, job.schedule.final)):
            pass  # refuses what no layer can do, before training starts


def run_finetune(session: PruningSession, spec: FinetuneSpec, emit: Emit,
                 cancel: threading.Event, *, prepared: bool = False) -> None:
    """Train (each curve `Record` sent as it comes), then measure the result on the test
    split with latency, and the same final plan on the original weights — the twin that
    shows what fine-tuning recovered — and send the `FinetuneOutcome`. Cancelling stops
    the training; the best weights so far are still measured and sent. `prepared`: the
    session is already at the start of the run (`prepare_finetune`)."""
    job, total, pristine = spec.job, spec.total, spec.pristine
    if not prepared:
        prepare_finetune(session, job, pristine, total)
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
        emit(record)

    result = finetune(
        session, spec.train_data, job.recipe, schedule=job.schedule, prune=job.prune,
        teacher=pristine if job.recipe.distill > 0 else None,
        progress=progress, cancel=cancel, record_every=every)
    emit(Finishing())
    plan = session.stamp(session.plan)
    meter = Meter(session, spec.eval_data, reference=pristine,
                  latency_batch_size=spec.latency_batch_size, latency_runs=spec.latency_runs)
    report = meter.report(latency=True)
    session.rebase(pristine.state_dict())  # the same plan, no retraining
    twin = meter.report(latency=True)
    summary = summarize_run(result, job.recipe, total, epoch_steps(spec.train_data, job.recipe),
                            spec.eval_data.metric_name)
    emit(FinetuneOutcome(spec.run, job, result, plan, report, twin, summary, before))


__all__ = [
    "FinetuneJob",
    "FinetuneOutcome",
    "FinetuneSpec",
    "PassEnded",
    "PassStarted",
    "PointMeasured",
    "SensitivitySpec",
    "SessionRecipe",
    "SweepMeasured",
    "SweepSpec",
    "SweepStarted",
    "prepare_finetune",
    "run_finetune",
    "run_sensitivity",
    "run_sweep",
]
