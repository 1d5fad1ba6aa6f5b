"""Fair scheduling of long jobs: the server's queue (at most `max_running` at once, one per
user, first come first served, a visible place), and jobs run in child processes at a
lower priority — with the same results as in a thread, the fine-tuned weights bit for
bit, a killed child explained in plain words, a user's own model read in the child after
its file is imported, and no child left behind by a worker that is gone.

The queue tests run their jobs in threads (conftest.py's default) and hold them with
gates; the child-process tests ask for processes explicitly (`child_process=True`) and are
marked slow: each child costs 2-3 s to import torch. The three jobs compared with the
thread path share one fixture, so that their children start side by side."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fixtures import apptest
from fixtures.apptest import rerun_while_running
from fixtures.jobs import WAIT, Gate, wait_until
from torch import nn

from pruneviz.app.keys import BENCH_ID_KEY, USER_KEY, WORKERS_KEY
from pruneviz.app.worker import (
    LOCAL_USER,
    ExportWorker,
    FinetuneJob,
    FinetuneProgress,
    FinetuneWorker,
    Progress,
    SensitivityWorker,
    SweepProgress,
    SweepWorker,
    current_user,
    session_factory,
)
from pruneviz.core.plan import Plan
from pruneviz.data.sources import Loaded, Source, load_source
from pruneviz.data.tasks import top_k
from pruneviz.data.tensors import load_digits
from pruneviz.output.bundle import export_for_download
from pruneviz.output.export_job import export_spec
from pruneviz.workflows import jobqueue, processes
from pruneviz.workflows.experiments import Experiment
from pruneviz.workflows.finetune import FinetuneRecipe, PruneSpec
from pruneviz.workflows.jobqueue import JobQueue, ordinal, waiting_text
from pruneviz.workflows.processes import JOB_NICENESS, died_text, dumps, job_threads, loads
from pruneviz.workflows.schedules import Schedule, ScheduleKind
from pruneviz.workflows.sensitivity import SensitivityRun
from pruneviz.workflows.workbench import Workbench, build_workbench, workbench_for
from pruneviz.workflows.workspace import Workspace, load_weights

LEVELS = (0.0, 0.5, 0.9)
SUBSET = 100  # of the 450 digits test samples: the analysis refines on all of them
SWEEP_LEVELS = (0.5, 0.9)
SHORT = FinetuneJob("iterative", "iterative 50% + fine-tune", FinetuneRecipe(
    epochs=1, lr=1e-2, batch_size=32, max_steps=30), schedule=Schedule(
    ScheduleKind.ITERATIVE, 0.5, end_step=20, rounds=2), prune=PruneSpec())
LONG = FinetuneJob("iterative", "long", FinetuneRecipe(  # minutes, unless stopped
    epochs=500, lr=1e-3, batch_size=8, patience=1000), schedule=Schedule(
    ScheduleKind.ITERATIVE, 0.5, end_step=20, rounds=2), prune=PruneSpec())
CHILD_WAIT = 120.0  # seconds a child's job may take, at most (a busy machine imports slowly)


@cache
def loaded(name: str) -> Loaded:
    """The pristine sample, loaded once (never changed: every workbench copies it)."""
    return load_source(Source(model=f"sample:{name}"))


def subset_bench() -> Workbench:
    """digits_mlp measured live on SUBSET samples: an analysis makes two passes."""
    sample = loaded("digits_mlp")
    return build_workbench(sample.name, sample.model, sample.example_input, sample.eval_data,
                           sample.train_data, eval_subset=SUBSET)


def sensitivity(bench: Workbench, **options: Any) -> SensitivityWorker:
    return SensitivityWorker(session_factory(bench), bench.eval_data, full=bench.eval_full,
                             **options)


def sweep(bench: Workbench, **options: Any) -> SweepWorker:
    return SweepWorker(session_factory(bench), bench.eval_data, bench.pristine,
                       latency_batch_size=bench.meter.latency_batch_size, latency_runs=2,
                       **options)


def finetuner(bench: Workbench, **options: Any) -> FinetuneWorker:
    assert bench.train_data is not None
    return FinetuneWorker(session_factory(bench), bench.pristine, bench.train_data,
                          bench.eval_data, latency_runs=1, **options)


def numbers(e: Experiment) -> tuple[object, ...]:
    """What an experiment records, but the latency (a timing: never the same twice)."""
    return (e.label, e.plan_key, e.weights, e.technique, e.metric, e.loss, e.params_nonzero,
            e.macs_effective, e.size_dense_bytes, e.size_sparse_bytes, e.size_gzip_bytes)


@contextmanager
def child_threads() -> Iterator[None]:
    """This process computes with as many torch threads as a job's child: the same
    numbers, bit for bit."""
    before = torch.get_num_threads()
    torch.set_num_threads(job_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bits(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bytes (NaN payloads, -0.0 and all), to compare bit for bit."""
    return t.detach().contiguous().view(torch.uint8)


def same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and torch.equal(bits(a[k]),
                                                                               bits(b[k]))
        for k in a)


def assert_in_child(
        worker: SensitivityWorker | SweepWorker | FinetuneWorker | ExportWorker) -> None:
    """The worker's last job ran in another process, at the lower priority, with the
    job's torch threads."""
    job = worker.job
    assert job is not None
    assert job.in_child
    assert job.info is not None
    assert job.info.pid == job.pid != os.getpid()
    assert job.info.niceness == min(19, os.nice(0) + JOB_NICENESS)
    assert job.info.threads == job_threads(job.queue)


# -- the queue ---------------------------------------------------------------------------------
def test_the_queue_runs_at_most_max_running_jobs_and_one_per_user() -> None:
    queue = JobQueue(max_running=2)
    ann1, ann2, bob, cy = (queue.enter(u) for u in ("ann", "ann", "bob", "cy"))
    # ann's second job waits although a slot is free; bob takes it; cy waits for a slot
    assert [queue.position(t) for t in (ann1, ann2, bob, cy)] == [None, 1, None, 2]
    assert (queue.running, queue.waiting) == (2, 2)
    queue.leave(bob)  # a free slot, but ann still runs: cy goes first
    assert [queue.position(t) for t in (ann2, cy)] == [1, None]
    queue.leave(ann1)
    assert queue.position(ann2) is None
    assert queue.wait_turn(ann2)
    assert queue.wait_turn(cy)
    assert (queue.running, queue.waiting) == (2, 0)


def test_a_withdrawn_job_leaves_the_queue_and_the_next_moves_up() -> None:
    queue = JobQueue(max_running=1)
    first, second, third = (queue.enter(u) for u in ("ann", "bob", "cy"))
    assert [queue.position(t) for t in (second, third)] == [1, 2]
    outcome: list[bool] = []
    waiter = threading.Thread(target=lambda: outcome.append(queue.wait_turn(second)))
    waiter.start()
    queue.withdraw(second)
    waiter.join(WAIT)
    assert outcome == [False]  # it never ran
    assert queue.position(third) == 1
    queue.leave(first)
    assert queue.position(third) is None
    assert queue.running == 1


def test_the_place_in_the_queue_is_said_in_words() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "111th"]
    assert waiting_text(2, 1).startswith("Waiting for a free worker: 2nd in the queue "
                                         "(1 job running")
    assert "(3 jobs running" in waiting_text(1, 3)
    with pytest.raises(ValueError, match="at least 1"):
        JobQueue(max_running=0)


def hold_sensitivity(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Hold every measurement of every analysis (in threads) until the test lets it."""
    gate = Gate()
    measure = SensitivityRun._measure

    def held(self: SensitivityRun, *args: Any, **kwargs: Any) -> Any:
        gate.wait()
        return measure(self, *args, **kwargs)

    monkeypatch.setattr(SensitivityRun, "_measure", held)
    return gate


def test_a_users_second_job_waits_and_another_users_job_runs(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hold_sensitivity(monkeypatch)
    queue = JobQueue(max_running=2)
    bench = workbench_for(loaded("digits_mlp"))
    first, second, other = (sensitivity(bench, queue=queue, user=u)
                            for u in ("ann", "ann", "bob"))
    first.start("l1", "unstructured", LEVELS)
    wait_until(lambda: gate.waiting == 1, "ann's first analysis measures")
    second.start("l1", "unstructured", LEVELS)
    waiting = second.snapshot()
    assert waiting.running  # the pages keep polling while it waits
    assert (waiting.queued, waiting.jobs_running, waiting.done) == (1, 1, 0)
    other.start("l1", "unstructured", LEVELS)  # bob's: a slot is free, bob runs nothing
    wait_until(lambda: gate.waiting == 2, "bob's analysis measures")
    assert other.snapshot().queued is None
    assert first.snapshot().queued is None
    assert second.snapshot().queued == 1  # still ann's turn to wait
    gate.open()
    for worker in (first, second, other):
        assert worker.wait(WAIT)
        progress = worker.snapshot()
        assert (progress.error, progress.queued, progress.done) == (None, None, 9)
    assert queue.running == queue.waiting == 0


def test_cancelling_a_queued_job_takes_it_out_of_the_queue(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hold_sensitivity(monkeypatch)
    queue = JobQueue(max_running=1)
    bench = workbench_for(loaded("digits_mlp"))
    busy, queued, behind = (sensitivity(bench, queue=queue, user=u)
                            for u in ("ann", "bob", "cy"))
    busy.start("l1", "unstructured", LEVELS)
    wait_until(lambda: gate.waiting == 1, "the first analysis measures")
    queued.start("l1", "unstructured", LEVELS)
    behind.start("l1", "unstructured", LEVELS)
    assert (queued.snapshot().queued, behind.snapshot().queued) == (1, 2)
    queued.cancel()
    assert queued.wait(WAIT)  # at once, although the slot is still taken
    progress = queued.snapshot()
    assert not progress.running
    assert (progress.queued, progress.error, progress.done, progress.result) == (
        None, None, 0, None)
    assert behind.snapshot().queued == 1
    gate.open()
    assert busy.wait(WAIT)
    assert behind.wait(WAIT)
    assert behind.snapshot().result is not None
    assert queued.snapshot().result is None  # it never measured


def test_a_queued_fine_tune_says_so() -> None:
    queue = JobQueue(max_running=1)
    blocker = queue.enter("someone else")
    bench = workbench_for(loaded("digits_mlp"))
    worker = finetuner(bench, queue=queue)
    worker.start(SHORT)
    progress: FinetuneProgress = worker.snapshot()
    assert (progress.running, progress.phase, progress.queued) == (True, "queued", 1)
    queue.leave(blocker)
    assert worker.wait(WAIT)
    done = worker.snapshot()
    assert (done.phase, done.queued, done.error) == ("", None, None)
    assert done.outcome is not None


def test_without_a_streamlit_session_the_user_is_local() -> None:
    assert current_user() == LOCAL_USER


def test_the_page_shows_the_place_in_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    queue = JobQueue(max_running=1)
    monkeypatch.setattr(jobqueue, "JOBS", queue)
    blocker = queue.enter("someone else")  # takes the only slot
    at = apptest.start("sample:digits_mlp", "app_pages/sensitivity.py")
    at.session_state[USER_KEY] = "ann"
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    worker = at.session_state[WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, SensitivityWorker)
    assert worker.user == "ann"  # the logged-in student's name, not the session id
    progress: Progress = worker.snapshot()
    assert (progress.running, progress.queued, progress.jobs_running) == (True, 1, 1)
    (bar,) = at.get("progress")
    assert str(bar.proto.text) == waiting_text(1, 1)
    assert str(bar.proto.text).startswith("Waiting for a free worker: 1st in the queue")
    queue.leave(blocker)
    rerun_while_running(at, worker, WAIT)
    result = worker.snapshot().result
    assert result is not None
    assert result.complete


# -- what crosses between processes ------------------------------------------------------------
def test_what_goes_to_a_child_comes_back_bit_for_bit() -> None:
    torch.manual_seed(0)
    state = {
        "f32": torch.randn(3, 4), "f64": torch.randn(5, dtype=torch.float64),
        "bf16": torch.randn(4, dtype=torch.bfloat16), "i8": torch.randint(-128, 127, (7,),
                                                                          dtype=torch.int8),
        "bool": torch.rand(6) > 0.5, "odd": torch.tensor([float("nan"), -0.0, float("inf")]),
        "view": torch.arange(12.0).reshape(3, 4).t(),  # not contiguous
    }
    data, files = dumps(state)
    assert files == []
    assert same_bits(loads(data), state)
    bench = workbench_for(loaded("digits_mlp"))
    uniform, _ = bench.session.uniform_plan(0.5, "unstructured", "l1")
    assert loads(dumps(uniform)[0]) == uniform  # a Plan's read-only layers
    assert loads(dumps(Plan())[0]) == Plan()
    top5 = replace(bench.eval_data, scorer=top_k(5))
    again = loads(dumps(top5)[0])  # a Scorer's functions are closures: made again
    assert again.metric_name == "top-5 accuracy"
    out = torch.randn(len(top5), 10)
    assert again.metric_sum(out, top5.y) == top5.metric_sum(out, top5.y)


def test_a_model_that_does_not_pickle_runs_in_a_thread() -> None:
    class Local(nn.Module):  # defined in a function: pickle cannot find it by name
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.fc1 = nn.Linear(64, 16)
            self.fc2 = nn.Linear(16, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(torch.relu(self.fc1(x.flatten(1))))

    data = load_digits("test")
    bench = build_workbench("local", Local().eval(), data.x[:1], data, None)
    worker = sensitivity(bench, child_process=True)
    assert worker.in_child()  # asked for, and on the CPU
    worker.start("l1", "unstructured", LEVELS)
    assert worker.wait(WAIT)
    job = worker.job
    assert job is not None
    assert not job.in_child
    assert job.pid is None
    progress = worker.snapshot()
    assert progress.error is None
    assert progress.result is not None
    assert progress.result.complete


def test_a_dead_child_is_explained_in_plain_words() -> None:
    assert died_text(-9).startswith("the worker process stopped unexpectedly (signal 9, "
                                    "SIGKILL): it may have run out of memory")
    assert "(exit code 3)" in died_text(3)


# -- jobs in child processes ---------------------------------------------------------------------
@dataclass
class Children:
    """Four jobs run in child processes side by side, and their workbenches."""

    sensitivity: SensitivityWorker
    sensitivity_bench: Workbench
    sweep: SweepWorker
    sweep_bench: Workbench
    finetune: FinetuneWorker
    finetune_bench: Workbench
    export: ExportWorker
    export_bench: Workbench
    export_folder: Path


def halved(bench: Workbench) -> dict[str, torch.Tensor]:
    """The pristine weights, halved: other weights than the originals."""
    return {k: v * 0.5 if v.is_floating_point() else v.clone()
            for k, v in bench.pristine.state_dict().items()}


def export_plan(bench: Workbench) -> Plan:
    """Filters pruned by l2 on every layer that takes them: a slimmed model is written."""
    return bench.session.stamp(bench.session.uniform_plan(0.5, "filter", "l2")[0])


@pytest.fixture(scope="module")
def children(tmp_path_factory: pytest.TempPathFactory) -> Children:
    queue = JobQueue(max_running=4)
    s_bench, w_bench, f_bench, e_bench = (
        subset_bench(), workbench_for(loaded("digits_cnn")), workbench_for(loaded("digits_mlp")),
        workbench_for(loaded("digits_resnet")))
    folder = tmp_path_factory.mktemp("exports") / "run1"
    done = Children(sensitivity(s_bench, child_process=True, queue=queue, user="ann"), s_bench,
                    sweep(w_bench, child_process=True, queue=queue, user="bob"), w_bench,
                    finetuner(f_bench, child_process=True, queue=queue, user="cy"), f_bench,
                    ExportWorker(session_factory(e_bench), child_process=True, queue=queue,
                                 user="dee"), e_bench, folder)
    done.sensitivity.start("l1", "unstructured", LEVELS)
    done.sweep.start(SWEEP_LEVELS, "filter", "l2", weights="halved", state=halved(w_bench))
    done.finetune.start(SHORT)
    done.export.start(export_spec(e_bench, export_plan(e_bench), weights="halved",
                                  state=halved(e_bench), folder=folder), identity="run1")
    for worker in (done.sensitivity, done.sweep, done.finetune, done.export):
        assert worker.wait(CHILD_WAIT)
    return done


@pytest.mark.slow
def test_an_analysis_in_a_child_is_the_threads_analysis(children: Children) -> None:
    worker = children.sensitivity
    assert_in_child(worker)
    progress = worker.snapshot()
    assert (progress.error, progress.done, progress.total, progress.refining) == (
        None, 9, 9, True)
    result = progress.result
    assert result is not None
    assert result.complete
    assert result.samples == 450  # refined on the whole set
    with child_threads():
        here = sensitivity(children.sensitivity_bench, child_process=False)
        here.start("l1", "unstructured", LEVELS)
        assert here.wait(WAIT)
    expected = here.snapshot().result
    assert expected is not None
    assert result.points == expected.points
    assert result.baseline == expected.baseline
    assert worker.cache.points == here.cache.points  # both passes' points came back
    assert len(worker.cache.points) == 2 * 9


@pytest.mark.slow
def test_a_sweep_in_a_child_measures_what_the_thread_measures(children: Children) -> None:
    worker = children.sweep
    assert_in_child(worker)
    progress: SweepProgress = worker.snapshot()
    assert (progress.done, progress.total, progress.error, progress.stopped) == (2, 2, None,
                                                                               False)
    bench = children.sweep_bench
    in_child, here = Workspace(bench), Workspace(bench)
    for point in worker.take_points():
        assert point.weights == "halved"
        in_child.record_sweep_point(point)
    with child_threads():
        thread = sweep(bench, child_process=False)
        thread.start(SWEEP_LEVELS, "filter", "l2", weights="halved", state=halved(bench))
        assert thread.wait(WAIT)
    for point in thread.take_points():
        here.record_sweep_point(point)
    assert [numbers(e) for e in in_child.log] == [numbers(e) for e in here.log]
    assert all(e.latency_ms is not None for e in list(in_child.log)[1:])
    # measured on the halved weights, not the originals
    original = Workspace(workbench_for(loaded("digits_cnn")))
    original.record_uniform_sweep(list(SWEEP_LEVELS), "filter", "l2")
    assert [e.loss for e in in_child.log][1:] != [e.loss for e in original.log][1:]
    assert bench.session.plan.is_empty  # the tab's session was never used


@pytest.mark.slow
def test_a_fine_tune_in_a_child_sends_its_weights_bit_for_bit(children: Children) -> None:
    worker = children.finetune
    assert_in_child(worker)
    progress = worker.snapshot()
    assert (progress.error, progress.phase, progress.queued) == (None, "", None)
    outcome = progress.outcome
    assert outcome is not None
    assert worker.claim(outcome)
    with child_threads():
        here = finetuner(children.finetune_bench, child_process=False)
        here.start(SHORT)
        assert here.wait(WAIT)
    expected = here.snapshot().outcome
    assert expected is not None
    assert outcome.result.steps == expected.result.steps == 30
    assert same_bits(outcome.result.state, expected.result.state)
    assert same_bits(outcome.result.masks, expected.result.masks)
    assert repr(progress.records) == repr(here.snapshot().records)  # NaN losses compare
    assert outcome.plan == expected.plan
    assert outcome.report.evaluation == expected.report.evaluation
    assert outcome.twin.evaluation == expected.twin.evaluation
    assert outcome.report.params_nonzero == expected.report.params_nonzero
    assert outcome.summary == expected.summary


@pytest.mark.slow
def test_an_export_in_a_child_writes_what_the_thread_writes(children: Children) -> None:
    worker = children.export
    assert_in_child(worker)
    progress = worker.snapshot()
    assert (progress.running, progress.error, progress.identity, progress.in_folder) == (
        False, None, "run1", True)
    download = progress.download
    assert download is not None
    assert download.result.passed, download.result.checks
    assert download.result.out == children.export_folder
    written = children.export_folder
    assert sorted(str(p.relative_to(written)) for p in written.rglob("*") if p.is_file()) == \
        sorted(download.files)
    bench = children.export_bench
    assert bench.session.plan.is_empty  # the tab's session was never used
    with child_threads():  # the same export, written here in this process
        here = workbench_for(loaded("digits_resnet"))
        load_weights(here.session, halved(here))
        here.session.apply(export_plan(here))
        expected = export_for_download(here, None, latency=True, weights="halved")
    assert expected.result.passed
    assert sorted(download.files) == sorted(expected.files)
    assert "slim/slim.safetensors" in download.files  # the filters were really removed
    assert "base_weights.safetensors" in download.files  # the halved weights ship with it
    for name in download.files:
        if name not in ("report.html", "summary.md", "manifest.json"):  # (timings inside)
            assert download.files[name] == expected.files[name], name
    assert [c.name for c in download.result.checks] == [c.name for c in expected.result.checks]
    assert "halved" in download.files["summary.md"].decode()


def wait_until_training(worker: FinetuneWorker) -> None:
    """Return once the worker's child sent its first training record."""
    wait_until(lambda: bool(worker.snapshot().records), "the child trains", CHILD_WAIT)


@pytest.mark.slow
def test_a_killed_child_is_explained_and_the_worker_runs_again() -> None:
    bench = workbench_for(loaded("digits_mlp"))
    worker = finetuner(bench, child_process=True, queue=JobQueue(max_running=1))
    worker.start(LONG)
    wait_until_training(worker)
    job = worker.job
    assert job is not None
    assert job.pid is not None
    os.kill(job.pid, signal.SIGKILL)  # as the system does when memory runs out
    assert worker.wait(WAIT)
    progress = worker.snapshot()
    assert progress.error == died_text(-signal.SIGKILL)
    assert "Traceback" not in progress.error
    assert (progress.outcome, progress.phase) == (None, "")
    # The worker runs again; a cancelled run still sends its best weights so far.
    worker.start(LONG)
    wait_until_training(worker)
    worker.cancel()
    assert worker.wait(CHILD_WAIT)
    progress = worker.snapshot()
    assert progress.error is None
    outcome = progress.outcome
    assert outcome is not None
    assert outcome.result.stopped == "cancelled"
    assert 0 < outcome.result.steps < progress.total
    assert outcome.run == 2
    assert_in_child(worker)


USER_NET = (Path(__file__).parent / "fixtures" / "user_models" / "digits_conv.py").read_text()


@pytest.mark.slow
def test_the_users_own_model_and_metric_go_through_the_child(tmp_path: Path) -> None:
    net = tmp_path / "net.py"
    net.write_text(USER_NET)
    test = load_digits("test")
    np.savez(tmp_path / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    source = Source(model=f"{net}:build", data=str(tmp_path / "test.npz"),
                    metric=f"{net}:right")
    bench = workbench_for(load_source(source))
    assert dumps(bench.pristine)[1] == [str(net.resolve())]  # the file to import first
    worker = sensitivity(bench, child_process=True, queue=JobQueue(max_running=1))
    worker.start("l1", "unstructured", LEVELS)
    assert worker.wait(CHILD_WAIT)
    assert_in_child(worker)
    progress = worker.snapshot()
    assert progress.error is None
    result = progress.result
    assert result is not None
    assert result.metric_name == "right"  # the user's metric, made again in the child
    with child_threads():
        here = sensitivity(bench, child_process=False)
        here.start("l1", "unstructured", LEVELS)
        assert here.wait(WAIT)
    expected = here.snapshot().result
    assert expected is not None
    assert result.points == expected.points


@pytest.mark.slow
def test_a_worker_that_is_gone_leaves_no_child() -> None:
    bench = workbench_for(loaded("digits_mlp"))
    queue = JobQueue(max_running=1)
    worker = finetuner(bench, child_process=True, queue=queue)
    worker.start(LONG)
    wait_until_training(worker)
    job = worker.job
    assert job is not None
    pid = job.pid
    assert pid is not None
    del worker  # the tab's session ended: its state, and the worker, are collected
    gc.collect()
    wait_until(lambda: not job.running, "the job ends")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # killed, and reaped
    assert queue.running == queue.waiting == 0


SLEEPY_NET = textwrap.dedent(
    """
    import os, time
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(64, 10)

        def forward(self, x):
            if str(os.getpid()) != os.environ["SERVER_PID"]:
                time.sleep(60)  # in a job's process: silent for a minute
            return self.fc(x.flatten(1))


    def build():
        return Net()
    """
)
SERVER = textwrap.dedent(
    """
    import os, sys, time
    from pruneviz.app.worker import SensitivityWorker, session_factory
    from pruneviz.data.sources import Source
    from pruneviz.workflows.workbench import open_workbench

    os.environ["SERVER_PID"] = str(os.getpid())  # the child inherits it
    net, data = sys.argv[1:]
    bench = open_workbench(Source(model=f"{net}:build", data=data))
    worker = SensitivityWorker(session_factory(bench), bench.eval_data, child_process=True)
    worker.start("l1", "unstructured", [0.5])
    while worker.job.info is None:  # the child is set up; it reads the task next
        time.sleep(0.01)
    time.sleep(1)  # ... and sleeps in the model's first forward pass
    print(worker.job.pid, flush=True)
    time.sleep(600)  # until killed
    """
)


def gone(pid: int) -> bool:
    """Whether process `pid` has ended (a zombie waiting for its parent has ended too)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_child_whose_server_died_exits_at_once(tmp_path: Path) -> None:
    net = tmp_path / "sleepy.py"
    net.write_text(SLEEPY_NET)
    test = load_digits("test")
    np.savez(tmp_path / "test.npz", x=test.x.numpy(), y=test.y.numpy())
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(net),
                               str(tmp_path / "test.npz")], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        pid = int(server.stdout.readline())
        assert not gone(pid)
        server.kill()  # no clean-up at all: the child finds its pipe closed
        server.wait()
        wait_until(lambda: gone(pid), "the child exits", timeout=10)  # not after its minute
    finally:
        server.kill()
        server.wait()


@pytest.mark.slow
def test_the_app_runs_an_analysis_in_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(processes, "RUN_IN_PROCESSES", True)  # the app's default
    at = apptest.start("sample:digits_mlp", "app_pages/sensitivity.py")
    at.button(key="pv_sens_run").click().run()
    assert not at.exception, at.exception
    worker = at.session_state[WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, SensitivityWorker)
    rerun_while_running(at, worker, CHILD_WAIT)
    assert_in_child(worker)
    progress = worker.snapshot()
    assert progress.error is None
    assert progress.result is not None
    assert progress.result.complete
    (bar,) = at.get("progress")
    assert str(bar.proto.text).startswith("33 of 33 points — done")
