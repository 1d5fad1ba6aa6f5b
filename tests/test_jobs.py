"""Long jobs without Streamlit: the time-left text, a uniform sweep measured point by point
(cancellable, on a session of its own), and a sensitivity analysis that makes a fast
first pass on the live subset, then refines on the whole evaluation set."""

from __future__ import annotations

import threading
from functools import cache
from typing import Any

import pytest
from fixtures.jobs import WAIT, Gate, wait_until

from pruneviz.app.worker import SensitivityWorker, SweepWorker, session_factory
from pruneviz.data.sources import Loaded, Source, load_source
from pruneviz.errors import PlanError
from pruneviz.workflows.eta import ESTIMATING, FINISHING, eta_text, seconds_left
from pruneviz.workflows.experiments import ORIGINAL, Experiment
from pruneviz.workflows.sensitivity import SensitivityResult, SensitivityRun
from pruneviz.workflows.sweep import UniformSweep
from pruneviz.workflows.workbench import Workbench, build_workbench, workbench_for
from pruneviz.workflows.workspace import Workspace

SUBSET = 100  # of the 450 digits test samples
LEVELS = (0.0, 0.5, 0.9)


@cache
def loaded(name: str) -> Loaded:
    """The pristine sample, loaded once (never changed: every workbench copies it)."""
    return load_source(Source(model=f"sample:{name}"))


def subset_bench(name: str = "digits_mlp") -> Workbench:
    """A workbench whose live updates measure SUBSET samples of the evaluation set."""
    sample = loaded(name)
    return build_workbench(sample.name, sample.model, sample.example_input, sample.eval_data,
                           sample.train_data, eval_subset=SUBSET)


def numbers(e: Experiment) -> tuple[object, ...]:
    """What an experiment records, but the latency (a timing: never the same twice)."""
    return (e.label, e.plan_key, e.weights, e.technique, e.metric, e.loss, e.params_nonzero,
            e.macs_effective, e.size_dense_bytes, e.size_sparse_bytes, e.size_gzip_bytes)


# -- the time left ---------------------------------------------------------------------------
def test_time_left_is_estimated_only_once_a_point_has_finished() -> None:
    assert eta_text(0, 9, 0.0) == ESTIMATING == "estimating…"
    assert eta_text(0, 9, 12.5) == ESTIMATING  # time passed, but no point is done yet
    assert seconds_left(0, 9, 3.0) is None


@pytest.mark.parametrize(("done", "total", "elapsed", "text"), [
    (1, 9, 2.0, "about 16 s left"),  # 8 points at 2 s each
    (3, 9, 4.5, "about 9 s left"),  # 1.5 s per point
    (8, 9, 0.8, "about 1 s left"),  # 0.1 s: never "0 s"
    (5, 6, 0.0, "about 1 s left"),  # cached points take no time
    (1, 3, 59.0, "about 118 s left"),
    (1, 3, 60.0, "about 2 min left"),  # from two minutes on, in minutes
    (10, 100, 300.0, "about 45 min left"),
    (9, 9, 18.0, FINISHING),
])
def test_time_left_is_the_time_per_point_so_far_times_the_points_to_go(
        done: int, total: int, elapsed: float, text: str) -> None:
    assert eta_text(done, total, elapsed) == text


def test_seconds_left_is_exact() -> None:
    assert seconds_left(3, 9, 4.5) == pytest.approx(9.0)
    assert seconds_left(9, 9, 4.5) == 0.0
    assert seconds_left(10, 9, 4.5) == 0.0  # never negative


# -- the uniform sweep -----------------------------------------------------------------------
def test_a_sweep_cancelled_between_points_keeps_the_measured_ones_and_the_plan() -> None:
    space = Workspace(workbench_for(loaded("digits_cnn")))
    session = space.bench.session
    plan, _ = session.uniform_plan(0.3, "unstructured", "l1")
    session.apply(plan)
    sweep = UniformSweep(space.bench.meter, [0.2, 0.4, 0.6, 0.8], "unstructured", "l1")
    assert sweep.total == 4
    cancel = threading.Event()
    measured = []
    for point in sweep.points(cancel):
        measured.append(space.record_sweep_point(point))
        if len(measured) == 2:
            cancel.set()
    assert sweep.done == 2
    assert [e.label for e in measured] == ["uniform unstructured l1 20%",
                                           "uniform unstructured l1 40%"]
    assert session.plan == plan  # each point's plan was applied only while measured
    assert len(space.log) == 3


def test_the_sweep_worker_measures_what_the_workspace_measures_on_its_own_session() -> None:
    inline = Workspace(workbench_for(loaded("digits_cnn")))
    assert inline.record_uniform_sweep(list(LEVELS[1:]), "filter", "l2") == 2
    bench = workbench_for(loaded("digits_cnn"))
    space = Workspace(bench)
    worker = SweepWorker(session_factory(bench), bench.eval_data, bench.pristine,
                         latency_batch_size=bench.meter.latency_batch_size,
                         latency_runs=bench.meter.latency_runs)
    worker.start(LEVELS[1:], "filter", "l2")
    assert worker.wait(WAIT)
    progress = worker.snapshot()
    assert (progress.done, progress.total, progress.error, progress.stopped) == (2, 2, None,
                                                                               False)
    assert progress.elapsed > 0
    points = worker.take_points()
    assert worker.take_points() == []  # each point is handed out once
    for point in points:
        space.record_sweep_point(point)
    assert [numbers(e) for e in space.log] == [numbers(e) for e in inline.log]
    assert all(e.latency_ms is not None for e in list(space.log)[1:])
    assert bench.session.plan.is_empty  # the tab's session was never used
    assert worker.session() is not bench.session


def test_the_sweep_worker_measures_the_weights_it_is_given() -> None:
    bench = workbench_for(loaded("digits_cnn"))
    space = Workspace(bench)
    tweaked = {k: v * 0.5 if v.is_floating_point() else v.clone()
               for k, v in bench.pristine.state_dict().items()}
    space.remember_weights("halved", tweaked)
    worker = SweepWorker(session_factory(bench), bench.eval_data, bench.pristine)
    with pytest.raises(PlanError, match="values of the halved weights"):
        worker.start([0.5], "unstructured", "l1", weights="halved")
    worker.start([0.5], "unstructured", "l1", weights="halved", state=tweaked)
    assert worker.wait(WAIT)
    (point,) = worker.take_points()
    recorded = space.record_sweep_point(point)
    assert recorded.weights == "halved"
    space.use_weights("halved", point.plan)  # the tab measuring the same plan itself
    assert space.measure_and_record().evaluation.loss == recorded.loss
    # back on the originals: measured as the originals again
    worker.start([0.5], "unstructured", "l1", weights=ORIGINAL,
                 state=bench.pristine.state_dict())
    assert worker.wait(WAIT)
    (again,) = worker.take_points()
    assert again.weights == ORIGINAL
    assert again.report.evaluation.loss != point.report.evaluation.loss


def test_a_sweep_with_nothing_to_prune_is_refused_before_it_starts() -> None:
    bench = workbench_for(loaded("digits_mlp"))
    worker = SweepWorker(session_factory(bench), bench.eval_data, bench.pristine)
    with pytest.raises(PlanError, match="nothing to sweep"):
        worker.start([0.5], "unstructured", "bn_scale")
    assert not worker.running


# -- sensitivity: a first pass on the subset, then the whole set ------------------------------
def refine_gate(monkeypatch: pytest.MonkeyPatch, samples: int) -> Gate:
    """Hold every measurement of an analysis on `samples` samples until the test lets it."""
    gate = Gate()
    measure = SensitivityRun._measure

    def held(self: SensitivityRun, *args: Any, **kwargs: Any) -> Any:
        if len(self.data) == samples:
            gate.wait()
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(SensitivityRun, "_measure", held)
    return gate


def two_pass_worker(bench: Workbench) -> SensitivityWorker:
    return SensitivityWorker(session_factory(bench), bench.eval_data, full=bench.eval_full)


def direct(bench: Workbench, on_full: bool) -> SensitivityResult:
    data = bench.full_data if on_full else bench.eval_data
    return SensitivityRun(session_factory(bench)(), data, levels=LEVELS).run()


def test_the_analysis_refines_the_first_pass_on_the_whole_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bench = subset_bench()
    full = len(bench.full_data)
    assert len(bench.eval_data) == SUBSET < full
    gate = refine_gate(monkeypatch, full)
    worker = two_pass_worker(bench)
    worker.start("l1", "unstructured", LEVELS)
    wait_until(lambda: worker.snapshot().refining, "the refinement starts")
    during = worker.snapshot()
    assert during.running
    assert (during.samples, during.full_samples, during.done) == (full, full, 0)
    first = during.result
    assert first is not None
    assert first.complete
    assert first.samples == SUBSET  # the first pass's curves stay until the refinement ends
    assert first.points == direct(bench, on_full=False).points
    gate.open()
    assert worker.wait(WAIT)
    after = worker.snapshot()
    assert after.error is None
    assert (after.done, after.total, after.refining) == (9, 9, True)
    refined = after.result
    assert refined is not None
    assert refined.complete
    assert refined.samples == full
    assert refined.points == direct(bench, on_full=True).points
    assert refined.points != first.points
    assert len(worker.cache.points) == 2 * 9  # each pass's points, on its own data


def test_cancelling_the_refinement_keeps_the_first_pass(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bench = subset_bench()
    gate = refine_gate(monkeypatch, len(bench.full_data))
    worker = two_pass_worker(bench)
    worker.start("l1", "unstructured", LEVELS)
    wait_until(lambda: gate.waiting > 0, "the refinement measures its first point")
    worker.cancel()
    gate.open()
    assert worker.wait(WAIT)
    progress = worker.snapshot()
    assert progress.error is None
    assert progress.refining
    assert progress.done < progress.total
    result = progress.result
    assert result is not None
    assert result.complete
    assert result.samples == SUBSET
    assert result.points == direct(bench, on_full=False).points


def test_cancelling_the_first_pass_keeps_its_points_and_does_not_refine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bench = subset_bench()
    gate = refine_gate(monkeypatch, SUBSET)
    worker = two_pass_worker(bench)
    worker.start("l1", "unstructured", LEVELS)
    gate.let(2)  # the unpruned model, then one point
    wait_until(lambda: gate.passed == 2 and gate.waiting == 1,
               "the first pass waits to measure its third model")
    worker.cancel()
    gate.open()
    assert worker.wait(WAIT)
    progress = worker.snapshot()
    assert not progress.refining
    assert progress.samples == SUBSET
    result = progress.result
    assert result is not None
    assert not result.complete
    assert result.samples == SUBSET
    assert sum(len(p) for p in result.points.values()) == progress.done < progress.total


def test_without_a_subset_there_is_one_pass_on_all_the_data() -> None:
    bench = workbench_for(loaded("digits_mlp"))
    assert bench.eval_full is None
    worker = two_pass_worker(bench)
    worker.start("l1", "unstructured", LEVELS)
    assert worker.wait(WAIT)
    progress = worker.snapshot()
    assert progress.full_samples is None
    assert not progress.refining
    assert progress.result is not None
    assert progress.result.samples == len(bench.eval_data)
    assert progress.result.to_dict()["eval_samples"] == len(bench.eval_data)
