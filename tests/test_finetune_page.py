"""The Fine-tune page through Streamlit's AppTest: a run trains in a background thread, its
result and its un-retrained twin are measured and recorded, the schedule is drawn before
training, cancel keeps a result, and fine-tuned weights can be taken and given back bit
for bit."""

from __future__ import annotations

import time

import numpy as np
import pytest
from fixtures import apptest
from fixtures.apptest import array, bench_of, figure, rerun_while_running
from fixtures.models import assert_bit_identical, snapshot
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import BENCH_ID_KEY, FINETUNE_WORKERS_KEY, WORKSPACE_KEY
from pruneviz.app.worker import FinetuneOutcome, FinetuneWorker
from pruneviz.data.samples import load_sample
from pruneviz.workflows.experiments import ORIGINAL, Experiment, describe_plan
from pruneviz.workflows.finetune import FinetuneRecipe, total_steps
from pruneviz.workflows.schedules import Schedule

PAGE = "app_pages/finetune.py"
MODEL = "sample:digits_mlp"
WAIT = 30.0  # seconds a short run of digits_mlp may take, at most


def start(plan_sparsity: float | None = None) -> AppTest:
    """The app on the Fine-tune page; with `plan_sparsity`, the tab's plan prunes every
    layer that much (set directly, as the Prune page would, without recording it)."""
    plan = None if plan_sparsity is None else (plan_sparsity, "unstructured")
    return apptest.start(MODEL, PAGE, plan=plan)




def worker_of(at: AppTest) -> FinetuneWorker:
    worker = at.session_state[FINETUNE_WORKERS_KEY][str(at.session_state[BENCH_ID_KEY])]
    assert isinstance(worker, FinetuneWorker)
    return worker


def log_of(at: AppTest) -> list[Experiment]:
    return list(at.session_state[WORKSPACE_KEY].log)


def short(at: AppTest, epochs: int = 2, max_steps: int = 24) -> None:
    at.number_input(key="pv_ft_epochs").set_value(epochs)
    at.number_input(key="pv_ft_max_steps").set_value(max_steps)
    at.run()


def run_until_done(at: AppTest) -> FinetuneOutcome:
    """Re-run the app, as the page's polling does, until the worker has stopped."""
    worker = worker_of(at)
    rerun_while_running(at, worker, WAIT)
    assert not at.error, [e.value for e in at.error]
    outcome = worker.snapshot().outcome
    assert outcome is not None
    return outcome


def train(at: AppTest) -> FinetuneOutcome:
    at.button(key="pv_ft_run").click().run()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return run_until_done(at)






def progress_text(at: AppTest) -> str:
    (bar,) = at.get("progress")
    return str(bar.proto.text)


@pytest.mark.slow
def test_oneshot_finetune_records_the_result_next_to_its_twin() -> None:
    at = start(plan_sparsity=0.8)
    assert at.radio(key="pv_ft_recipe").value == "oneshot"  # the tab has a plan
    bench = bench_of(at)
    plan = bench.session.stamp(bench.session.plan)
    short(at)
    outcome = train(at)
    assert outcome.result.stopped in ("done", "early")
    assert outcome.result.steps <= 24
    assert progress_text(at).startswith("step 24 of 24")

    label = f"one-shot {describe_plan(plan)} + fine-tune"
    log = log_of(at)
    assert len(log) == 3
    tuned, twin = log[1], log[2]
    assert (tuned.label, tuned.weights) == (label, "fine-tuned #1")
    assert (twin.label, twin.weights) == (f"{label} (before fine-tuning)", ORIGINAL)
    assert tuned.plan_key == twin.plan_key == plan.key()
    assert tuned.latency_ms is not None
    assert twin.latency_ms is not None
    # the twin is this tab's plan on the original weights, measured for real
    assert twin.metric == bench.meter.report().evaluation.metric
    assert tuned.metric > twin.metric  # retraining recovers from the collapse
    assert tuned.sparsity == pytest.approx(twin.sparsity, abs=0.01)
    # the tab's own session was never borrowed: same plan, original weights
    assert bench.session.plan.key() == plan.key()
    assert at.session_state[WORKSPACE_KEY].weights == ORIGINAL

    (table,) = [d.value for d in at.dataframe if "stage" in d.value.columns]
    assert list(table["accuracy"]) == [f"{e.metric:.2%}" for e in (log[0], twin, tuned)]
    assert list(table["experiment"]) == ["#0", "#2", "#1"]
    curves = figure(at, "ft_curves")
    loss = next(t for t in curves.data if t.name == "training loss")
    assert list(loss.x) == [r.step for r in outcome.result.history
                            if r.step > 0 and r.loss == r.loss]

    # On Trade-offs the fine-tuned point is a diamond joined to its twin.
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception, at.exception
    chart = figure(at, "tradeoff_size_sparse_bytes")
    (diamonds,) = [t for t in chart.data if t.name == "fine-tuned weights"]
    assert list(diamonds.y) == [tuned.metric]
    (joined,) = [t for t in chart.data if t.name == "pruned → fine-tuned"]
    assert list(joined.y)[:2] == [twin.metric, tuned.metric]


def test_leaving_the_page_does_not_lose_the_run() -> None:
    at = start(plan_sparsity=0.6)
    short(at, epochs=3, max_steps=54)
    at.button(key="pv_ft_run").click().run()
    worker = worker_of(at)
    at.switch_page("app_pages/prune.py").run()  # the run goes on while another page is shown
    assert not at.exception, at.exception
    at.switch_page("app_pages/tradeoffs.py").run()
    assert worker.wait(WAIT)
    at.run()  # Trade-offs records a run that ended while the user was away
    assert not at.exception, at.exception
    # the Prune page recorded the plan on the original weights: that is the twin already
    assert [e.weights for e in log_of(at)] == [ORIGINAL, ORIGINAL, "fine-tuned #1"]
    assert log_of(at)[1].plan_key == log_of(at)[2].plan_key
    at.switch_page(PAGE).run()  # and the page shows it, recorded once
    assert not at.exception, at.exception
    assert any("Collapse and recovery" in h.value for h in at.subheader)
    assert len(log_of(at)) == 3

    # The deployable forms of each experiment are measured on its own weights; the tab's
    # weights and plan are the same afterwards, bit for bit.
    session = bench_of(at).session
    plan, before = session.plan, snapshot(session.model)
    at.switch_page("app_pages/tradeoffs.py").run()
    at.button(key="pv_forms_all").click().run()
    assert not at.exception, at.exception
    found = at.session_state[WORKSPACE_KEY].best_forms
    assert set(found) == {0, 1, 2}
    assert found[2].max_abs_diff <= 1e-4
    assert session.plan == plan
    assert_bit_identical(snapshot(session.model), before)
    assert at.session_state[WORKSPACE_KEY].weights == ORIGINAL


def test_the_schedule_is_drawn_before_training() -> None:
    at = start()
    at.radio(key="pv_ft_recipe").set_value("poly").run()
    at.number_input(key="pv_ft_epochs").set_value(3)
    at.number_input(key="pv_ft_initial").set_value(50.0)
    at.number_input(key="pv_ft_final").set_value(90.0)
    at.slider(key="pv_ft_window").set_value((10, 60))
    at.number_input(key="pv_ft_frequency").set_value(7)
    at.run()
    assert not at.exception, at.exception
    total = total_steps(bench_of(at).train_data,  # type: ignore[arg-type]
                        FinetuneRecipe(epochs=3, lr=3e-3, batch_size=64))
    expected = Schedule("poly", 0.9, initial=0.5, begin_step=round(total * 0.1),
                        end_step=round(total * 0.6), frequency=7, power=3.0)
    fig = figure(at, "ft_schedule")
    line = next(t for t in fig.data if t.name == "target sparsity")
    np.testing.assert_array_equal(array(line.y), np.array(expected.curve(total)))
    np.testing.assert_array_equal(array(line.x), np.arange(total))
    marks = next(t for t in fig.data if t.name == "pruning event")
    assert [list(p) for p in zip(marks.x, marks.y, strict=True)] == \
        [[s, v] for s, v in expected.events(total)]
    assert not worker_of(at).running  # nothing trains until asked

    # regularize-then-prune: the regulariser's steps are shaded, one event after them
    at.radio(key="pv_ft_recipe").set_value("regularize").run()
    assert not at.exception, at.exception
    reg = list(at.selectbox(key="pv_ft_reg").options)
    assert reg == ["L1 on the weights", "group lasso on filters"]  # no BatchNorm here
    fig = figure(at, "ft_schedule")
    k = round(total * 0.5)
    assert fig.layout.meta["regularize_until"] == k
    assert fig.layout.meta["events"] == [[k, 0.9]]  # the final sparsity set above
    (band,) = [s for s in fig.layout.shapes if s.type == "rect"]
    assert (band.x0, band.x1) == (0, k)


def test_cancel_stops_the_run_and_keeps_the_best_weights() -> None:
    at = start(plan_sparsity=0.8)
    at.number_input(key="pv_ft_epochs").set_value(300).run()
    at.button(key="pv_ft_run").click().run()
    worker = worker_of(at)
    assert worker.running
    assert at.button(key="pv_ft_run").disabled
    deadline = time.monotonic() + WAIT
    while not any(r.metric is not None for r in worker.snapshot().records):
        assert time.monotonic() < deadline
        time.sleep(0.05)  # one epoch evaluated: there are best weights to keep
    at.button(key="pv_ft_cancel").click().run()
    assert not at.exception, at.exception
    outcome = run_until_done(at)
    assert outcome.result.stopped == "cancelled"
    assert outcome.result.steps < 300 * 18
    assert outcome.result.best_metric is not None
    assert "cancelled" in progress_text(at)
    assert [e.weights for e in log_of(at)] == [ORIGINAL, "fine-tuned #1", ORIGINAL]
    assert not at.button(key="pv_ft_run").disabled


def test_fine_tuned_weights_are_used_and_given_back_bit_for_bit() -> None:
    at = start(plan_sparsity=0.7)
    short(at)
    outcome = train(at)
    bench = bench_of(at)
    session = bench.session
    pristine = snapshot(load_sample("digits_mlp").model)

    at.button(key="pv_ft_use").click().run()
    assert not at.exception, at.exception
    assert at.session_state[WORKSPACE_KEY].weights == "fine-tuned #1"
    assert at.button(key="pv_ft_use").disabled
    assert session.plan.key() == outcome.plan.key()
    assert_bit_identical(snapshot(session.model), outcome.result.state)
    assert bench.meter.report().evaluation.metric == outcome.report.evaluation.metric
    at.switch_page("app_pages/prune.py").run()
    assert not at.exception, at.exception
    assert any("fine-tuned #1" in c.value for c in at.caption)

    at.switch_page(PAGE).run()
    at.button(key="pv_ft_back").click().run()
    assert not at.exception, at.exception
    assert at.session_state[WORKSPACE_KEY].weights == ORIGINAL
    assert session.plan.key() == outcome.plan.key()  # the plan stays, on the originals
    session.reset()
    assert_bit_identical(snapshot(session.model), pristine)

    # Restoring the fine-tuned experiment on Trade-offs takes its weights too.
    tuned = next(e for e in log_of(at) if e.weights == "fine-tuned #1")
    at.switch_page("app_pages/tradeoffs.py").run()
    at.selectbox(key="pv_tradeoff_choice").set_value(tuned.id).run()
    assert any("fine-tuned #1" in c.value for c in at.caption)
    at.button(key="pv_restore").click().run()
    assert not at.exception, at.exception
    assert at.session_state[WORKSPACE_KEY].weights == "fine-tuned #1"
    assert_bit_identical(snapshot(session.model), outcome.result.state)
    at.switch_page("app_pages/tradeoffs.py").run()
    at.selectbox(key="pv_tradeoff_choice").set_value(0).run()
    at.button(key="pv_restore").click().run()
    assert not at.exception, at.exception
    assert at.session_state[WORKSPACE_KEY].weights == ORIGINAL
    assert session.plan.is_empty
    assert_bit_identical(snapshot(session.model), pristine)


def test_regularize_then_prune_grows_a_spike_at_zero() -> None:
    at = start()
    at.radio(key="pv_ft_recipe").set_value("regularize").run()
    at.number_input(key="pv_ft_strength").set_value(0.01)
    short(at, epochs=3, max_steps=54)
    outcome = train(at)
    assert outcome.before_pruning is not None
    assert outcome.job.label.startswith("l1 then 92% unstructured l1 global")
    before = np.abs(array(figure(at, "ft_hist_before").data[0].x))
    assert before.size  # histograms of fc1, before and just before pruning
    original = np.abs(load_sample("digits_mlp").model.fc1.weight.detach().numpy())
    regularised = np.abs(outcome.before_pruning["fc1.weight"].numpy())
    assert np.mean(regularised < 1e-3) > np.mean(original < 1e-3) + 0.05
    assert any("spike at zero" in c.value for c in at.caption)


def test_bad_choices_show_an_error_not_a_traceback() -> None:
    at = start()
    at.radio(key="pv_ft_recipe").set_value("iterative").run()
    at.number_input(key="pv_ft_final").set_value(100.0).run()
    assert not at.exception, at.exception
    assert any("cannot run" in e.value and "[0, 1)" in e.value for e in at.error), \
        [e.value for e in at.error]
    at.button(key="pv_ft_run").click().run()
    assert not at.exception, at.exception
    assert not worker_of(at).running
    assert worker_of(at).snapshot().job is None

    # one-shot with nothing pruned: there is nothing to fine-tune
    at.radio(key="pv_ft_recipe").set_value("oneshot").run()
    at.button(key="pv_ft_run").click().run()
    assert not at.exception, at.exception
    assert any("prunes nothing" in e.value for e in at.error), [e.value for e in at.error]
    assert not worker_of(at).running
