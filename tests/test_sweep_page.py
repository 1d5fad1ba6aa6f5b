"""The Trade-offs page's uniform sweep through Streamlit's AppTest: it is measured in the
background on a session of its own, shows its progress and the time left, can be
cancelled, and every configuration it measured is in the tab's experiments."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fixtures import apptest
from fixtures.apptest import bench_of, rerun_while_running, workspace_of
from fixtures.jobs import WAIT, Gate, wait_until
from streamlit.testing.v1 import AppTest

from pruneviz.app import sweep_view
from pruneviz.app.keys import BENCH_ID_KEY, SWEEP_WORKERS_KEY
from pruneviz.app.worker import SweepWorker
from pruneviz.data.sources import Source, load_source
from pruneviz.workflows.experiments import Experiment
from pruneviz.workflows.sweep import UniformSweep
from pruneviz.workflows.workbench import workbench_for
from pruneviz.workflows.workspace import Workspace

PAGE = "app_pages/tradeoffs.py"
MODEL = "sample:digits_cnn"
LEVELS = (0.25, 0.5, 0.75)


@pytest.fixture(autouse=True)
def few_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three levels instead of nine: the same code, in a third of the time."""
    monkeypatch.setattr(sweep_view, "SWEEP_LEVELS", LEVELS)


def start() -> AppTest:
    return apptest.start(MODEL, PAGE, no_errors=True)


def worker_of(at: AppTest) -> SweepWorker:
    worker = at.session_state[SWEEP_WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, SweepWorker)
    return worker


def progress_text(at: AppTest) -> str:
    (bar,) = at.get("progress")
    return str(bar.proto.text)


def hold_measurements(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """Each configuration of a sweep is measured only when the test lets it."""
    gate = Gate()
    measure = UniformSweep._measure

    def held(self: UniformSweep, *args: Any) -> Any:
        gate.wait()
        return measure(self, *args)

    monkeypatch.setattr(UniformSweep, "_measure", held)
    return gate


def numbers(e: Experiment) -> tuple[object, ...]:
    """What an experiment records, but the latency (a timing: never the same twice)."""
    return (e.label, e.plan_key, e.weights, e.technique, e.metric, e.loss, e.params_nonzero,
            e.macs_effective, e.size_dense_bytes, e.size_sparse_bytes, e.size_gzip_bytes)


def test_the_sweep_runs_in_the_background_and_records_every_configuration() -> None:
    at = start()
    assert len(workspace_of(at).log) == 1
    at.selectbox(key="pv_sweep_gran").set_value("filter")
    at.button(key="pv_sweep").click().run()
    assert not at.exception, at.exception
    worker = worker_of(at)
    rerun_while_running(at, worker, WAIT)
    assert not at.error, [e.value for e in at.error]
    log = list(workspace_of(at).log)
    assert [e.label for e in log[1:]] == [f"uniform filter l1 {v:.0%}" for v in LEVELS]
    assert all(e.latency_ms is not None for e in log[1:])
    # recorded exactly as Workspace.record_uniform_sweep records a sweep measured inline
    inline = Workspace(workbench_for(load_source(Source(model=MODEL))))
    inline.record_uniform_sweep(list(LEVELS), "filter", "l1")
    assert [numbers(e) for e in log[1:]] == [numbers(e) for e in list(inline.log)[1:]]
    assert progress_text(at) == "3 of 3 configurations measured — done"
    assert not at.button(key="pv_sweep").disabled
    assert at.button(key="pv_sweep_cancel").disabled
    # the tab's own session was never borrowed: its plan is still the unpruned one
    assert bench_of(at).session.plan.is_empty
    # the points are on the charts and in the experiments table
    assert list(at.dataframe[-1].value["label"])[1:] == [e.label for e in log[1:]]


def test_progress_says_the_time_left_and_cancel_keeps_the_measured_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hold_measurements(monkeypatch)
    at = start()
    at.button(key="pv_sweep").click().run()
    assert not at.exception, at.exception
    worker = worker_of(at)
    assert worker.running
    assert at.button(key="pv_sweep").disabled
    assert not at.button(key="pv_sweep_cancel").disabled
    assert progress_text(at) == "0 of 3 configurations measured — estimating…"

    gate.let()
    wait_until(lambda: worker.snapshot().done == 1, "the first configuration is measured")
    at.run()
    assert not at.exception, at.exception
    assert re.fullmatch(r"1 of 3 configurations measured — about \d+ s left",
                        progress_text(at)), progress_text(at)
    log = list(workspace_of(at).log)
    assert [e.label for e in log[1:]] == ["uniform unstructured l1 25%"]  # recorded at once

    gate.let()
    wait_until(lambda: worker.snapshot().done == 2 and gate.waiting == 1,
               "the sweep waits to measure its last configuration")
    at.button(key="pv_sweep_cancel").click().run()
    assert not at.exception, at.exception
    gate.open()
    rerun_while_running(at, worker, WAIT)
    # the configuration being measured when Cancel was pressed is finished and kept
    log = list(workspace_of(at).log)
    assert [e.label for e in log[1:]] == [f"uniform unstructured l1 {v:.0%}" for v in LEVELS]
    assert progress_text(at) == "3 of 3 configurations measured — done"


def test_cancel_before_the_next_configuration_keeps_the_ones_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hold_measurements(monkeypatch)
    at = start()
    at.button(key="pv_sweep").click().run()
    worker = worker_of(at)
    gate.let()
    wait_until(lambda: worker.snapshot().done == 1 and gate.waiting == 1,
               "the sweep waits to measure its second configuration")
    at.button(key="pv_sweep_cancel").click().run()
    assert not at.exception, at.exception
    gate.open()
    rerun_while_running(at, worker, WAIT)
    log = list(workspace_of(at).log)
    assert [e.label for e in log[1:]] == ["uniform unstructured l1 25%",
                                          "uniform unstructured l1 50%"]
    progress = worker.snapshot()
    assert progress.stopped
    assert progress_text(at) == ("2 of 3 configurations measured — cancelled: the 2 "
                                 "measured are in the experiments")
    assert not at.button(key="pv_sweep").disabled
    assert bench_of(at).session.plan.is_empty


def test_points_measured_while_another_page_is_shown_are_recorded_on_return(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gate = hold_measurements(monkeypatch)
    at = start()
    at.button(key="pv_sweep").click().run()
    worker = worker_of(at)
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, at.exception
    gate.open()
    assert worker.wait(WAIT)
    assert len(workspace_of(at).log) == 1  # nothing writes the log behind the page's back
    at.switch_page(PAGE).run()
    assert not at.exception, at.exception
    assert len(workspace_of(at).log) == 1 + len(LEVELS)


def test_an_export_taken_after_a_sweep_holds_its_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The Export page records what a sweep measured too: its report's trade-off charts
    are drawn from the tab's log."""
    gate = hold_measurements(monkeypatch)
    at = start()
    at.button(key="pv_sweep").click().run()
    worker = worker_of(at)
    at.switch_page("app_pages/prune.py").run()
    gate.open()
    assert worker.wait(WAIT)
    at.switch_page("app_pages/export.py").run()
    assert not at.exception, at.exception
    assert len(workspace_of(at).log) == 1 + len(LEVELS)
