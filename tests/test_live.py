"""The live path: a slider move costs one forward pass of the live data; the slow figures
(whole-set metric, latency, gzip size) follow in the background and complete the log;
a session's memory stays bounded whatever the criteria tried."""

from __future__ import annotations

import gzip
import math
import threading
import time

import pytest
import torch
from fixtures.sessions import session_and_data

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import TABLE_BUDGET, PruningSession
from pruneviz.data.sources import auto_subset
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import Cancelled
from pruneviz.measure import meter as meter_module
from pruneviz.measure.machine import compute_turn
from pruneviz.measure.metrics import EvalResult, count_params, evaluate
from pruneviz.measure.storage import dense_bytes, gzip_size, sparse_bytes
from pruneviz.workflows import refine as refine_module
from pruneviz.workflows import workspace as workspace_module
from pruneviz.workflows.workbench import build_workbench, open_workbench
from pruneviz.workflows.workspace import Workspace


def live_space(samples: int = 120, subset: int | None = 40) -> Workspace:
    """A workspace on the digits CNN measuring `subset` of `samples` live."""
    session, data = session_and_data("conv_bn", samples=samples)
    bench = build_workbench("conv_bn", session.model, data.x[:1], data, data,
                            eval_subset=subset, latency_batch_size=8, live=True)
    bench.meter.latency_runs = 3
    return Workspace(bench)


def one_layer(space: Workspace, sparsity: float) -> Plan:
    session = space.bench.session
    return session.stamp(Plan({session.layer_names[0]: LayerPlan(
        Granularity.UNSTRUCTURED, "l1", sparsity=sparsity)}))


# -- the figures of a live report -----------------------------------------------------------
def test_a_live_report_measures_counts_and_sparse_size_exactly_and_leaves_slow_ones() -> None:
    space = live_space()
    session = space.bench.session
    session.apply(one_layer(space, 0.5))
    report = space.bench.meter.report(gzip=False)
    assert report.sizes.gzip is None
    assert report.latency is None
    assert not report.final
    state = session.model.state_dict()
    assert report.sizes.sparse == len(sparse_bytes(state))
    assert report.sizes.dense == len(dense_bytes(state))
    counts = count_params(session.model)
    assert (report.params_total, report.params_nonzero) == (counts.total, counts.nonzero)
    assert report.evaluation.samples == 40
    assert report.population == 120


def test_only_rewritten_tensors_are_measured_again(monkeypatch: pytest.MonkeyPatch) -> None:
    space = live_space()
    session, meter = space.bench.session, space.bench.meter
    meter.report(gzip=False)
    seen: list[str] = []
    real = meter_module.tensor_figures

    def counting(name: str, tensor: torch.Tensor) -> object:
        seen.append(name)
        return real(name, tensor)

    monkeypatch.setattr(meter_module, "tensor_figures", counting)
    first = session.layers[0]
    session.apply(one_layer(space, 0.3))
    meter.report(gzip=False)
    assert seen == [first.weight]  # unstructured: its weight alone was rewritten
    seen.clear()
    meter.report(gzip=False)
    assert seen == []


def test_finishing_fills_in_every_slow_figure_and_completes_the_log() -> None:
    space = live_space()
    session, meter = space.bench.session, space.bench.meter
    session.apply(one_layer(space, 0.6))
    live = space.measure_live()
    assert space.refiner.wait(60)
    assert space.refiner.error is None
    report = meter.report(gzip=False)
    assert report.complete
    assert report.sizes.gzip == len(gzip.compress(dense_bytes(session.model.state_dict()), 6))
    full = evaluate(session.model, space.bench.full_data)
    assert report.evaluation_full == full
    assert report.evaluation == live.evaluation  # the live subset's figure is kept
    entry = space.log.find(session.plan)
    assert entry is not None
    assert entry.final
    assert entry.eval_samples == 120
    assert entry.metric == full.metric
    assert entry.latency_ms == report.latency_ms
    assert entry.size_gzip_bytes == report.sizes.gzip
    # the unpruned model's entry is completed too, measured on the pristine model
    baseline = space.log.get(0)
    assert baseline.final
    assert baseline.metric == evaluate(space.bench.pristine, space.bench.full_data).metric
    assert baseline.latency_ms == report.latency_reference.median_ms  # type: ignore[union-attr]
    pristine_file = dense_bytes(space.bench.pristine.state_dict())
    assert baseline.size_gzip_bytes == len(gzip.compress(pristine_file, 6))
    assert not space.refiner.start()  # nothing left to measure: no thread, no polling


def test_a_new_plan_stops_the_refinement_in_flight_and_keeps_nothing_half_measured() -> None:
    space = live_space()
    session, meter = space.bench.session, space.bench.meter
    meter.latency_runs = 10_000  # far longer than the test: only a stop ends it
    session.apply(one_layer(space, 0.4))
    space.measure_live()
    assert space.refiner.running()
    session.apply(one_layer(space, 0.7))  # stops it before writing the weights
    assert not space.refiner.running()
    session.apply(one_layer(space, 0.4))
    assert not meter.has("latency")  # the stopped timing left nothing behind
    assert "latency" in space.refiner.pending()


def test_a_plan_replaced_before_it_settles_is_never_measured(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workspace_module, "REFINE_SETTLE", 0.5)  # as served (1 s), shorter
    space = live_space()
    session, meter = space.bench.session, space.bench.meter
    measured: list[str] = []
    real_finish = meter.finish

    def finish(*args: object, **kwargs: object) -> None:
        measured.append(session.plan.key())
        real_finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(meter, "finish", finish)
    for sparsity in (0.2, 0.4, 0.6):  # a tab moving its slider faster than it settles
        session.apply(one_layer(space, sparsity))
        assert space.measure_live().evaluation.samples == 40  # the live figure: at once
        assert space.refiner.running()  # "measuring…" on the page
        time.sleep(0.1)
    assert measured == []  # nothing was measured for the plans that did not stay
    assert space.refiner.wait(30)
    assert measured == [session.plan.key()]  # the plan that stayed, once it settled
    assert not space.refiner.pending()


def test_tabs_measure_their_slow_figures_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = live_space(), live_space()
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def blocking_finish(*args: object, **kwargs: object) -> None:
        order.append("first")
        inside.set()
        assert release.wait(30)

    monkeypatch.setattr(first.bench.meter, "finish", blocking_finish)
    second_finish = second.bench.meter.finish

    def finish_second(*args: object, **kwargs: object) -> None:
        order.append("second")
        second_finish(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(second.bench.meter, "finish", finish_second)
    first.bench.session.apply(one_layer(first, 0.5))
    first.measure_live()
    assert inside.wait(30)  # the first tab is measuring ...
    second.bench.session.apply(one_layer(second, 0.5))
    second.measure_live()
    time.sleep(0.3)
    assert order == ["first"]  # ... so the second waits its turn
    assert second.refiner.running()
    started = time.monotonic()
    second.bench.session.apply(one_layer(second, 0.6))  # a new plan stops the waiting one
    assert time.monotonic() - started < 1.0  # at once, not after the first tab's turn
    second.measure_live()
    release.set()
    assert first.refiner.wait(30)
    assert second.refiner.wait(30)
    assert order == ["first", "second"]  # the second tab's new plan, once it was its turn
    assert not second.refiner.pending()


def test_slow_figures_wait_while_any_tab_keeps_moving_sliders(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(refine_module, "QUIET", 0.4)  # as served (0.5 s)
    space = live_space()
    moving = threading.Event()
    moving.set()

    def another_tab() -> None:  # a slider move's forward pass every 0.1 s
        while moving.is_set():
            with compute_turn():
                pass
            time.sleep(0.1)

    thread = threading.Thread(target=another_tab, daemon=True)
    thread.start()
    space.bench.session.apply(one_layer(space, 0.5))
    space.measure_live()
    time.sleep(1.0)
    assert space.refiner.running()
    assert "latency" in space.refiner.pending()  # nothing measured while the class moves
    moving.clear()
    thread.join(5)
    paused = time.monotonic()
    assert space.refiner.wait(30)
    assert time.monotonic() - paused >= 0.3  # it waited for the pause ...
    assert not space.refiner.pending()  # ... then measured everything
    # a plan replaced while it waits for a pause is given up at once
    stopper = threading.Thread(target=another_tab, daemon=True)
    moving.set()
    stopper.start()
    space.bench.session.apply(one_layer(space, 0.7))
    space.measure_live()
    time.sleep(0.3)
    started = time.monotonic()
    space.bench.session.apply(one_layer(space, 0.8))  # stops the waiting refinement
    assert time.monotonic() - started < 0.5
    moving.clear()
    stopper.join(5)


def test_stoppable_measurements_raise_cancelled() -> None:
    space = live_space()
    stop = threading.Event()
    stop.set()
    with pytest.raises(Cancelled):
        evaluate(space.bench.model, space.bench.full_data, stop=stop.is_set)
    with pytest.raises(Cancelled):
        gzip_size(b"x" * (3 << 20), stop=stop.is_set)
    data = bytes(range(256)) * 9000
    assert gzip_size(data) == len(gzip.compress(data, 6))


# -- how sure a live metric is -------------------------------------------------------------
def test_accuracy_has_a_binomial_standard_error_and_a_wilson_interval() -> None:
    space = live_space()
    ev = space.bench.meter.evaluate()
    p, n = ev.metric, ev.samples
    assert ev.proportion
    assert ev.stderr == pytest.approx(math.sqrt(p * (1 - p) / (n - 1)))
    low, high = ev.interval(population=120) or (0.0, 0.0)
    unlimited = ev.interval() or (0.0, 0.0)
    assert low <= p <= high
    assert high - low < unlimited[1] - unlimited[0]  # a third of the set is known exactly
    assert ev.interval(population=n) == (p, p)


def test_a_mean_metric_has_its_sample_standard_error() -> None:
    result = EvalResult("mse", 2.0, 2.0, 4, stderr=0.5)
    assert result.interval() == pytest.approx((2.0 - 1.96 * 0.5, 2.0 + 1.96 * 0.5))
    assert EvalResult("f1", 0.5, 0.1, 10).interval() is None  # a user's batch metric


def test_the_live_subset_is_sized_from_the_forward_time() -> None:
    assert auto_subset(10_000, 0.001, 1.0) == 1000
    assert auto_subset(10_000, 0.1, 1.0) == 100  # never below the floor
    assert auto_subset(10_000, 1e-6, 1.0) == 2000  # nor above the cap
    assert auto_subset(500, 0.001, 1.0) is None  # the whole set fits


class _Slow(torch.nn.Module):
    """Linear(4, 3) that takes `seconds` per call and fails on batches above `fails_over`;
    records the batch sizes it was called with."""

    def __init__(self, seconds: float, fails_over: int | None = None) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)
        self.seconds, self.fails_over, self.batches = seconds, fails_over, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        if self.fails_over is not None and x.shape[0] > self.fails_over:
            raise RuntimeError("out of memory")
        time.sleep(self.seconds)
        return self.fc(x)


def _four_features(samples: int) -> TensorData:
    return TensorData(torch.randn(samples, 4), torch.randint(0, 3, (samples,)),
                      Task.CLASSIFICATION, "four")


def test_opening_probes_growing_batches_not_the_whole_set() -> None:
    """The fit check grows its batch eightfold until one takes PROBE_S: a slow model is
    timed on 8 samples, not on an evaluation batch of all 5,000; a fast one up to one
    evaluation batch."""
    from pruneviz.data import sources

    slow = _Slow(sources.PROBE_S)
    seconds = sources.check_fit(slow, _four_features(5000), "the data")
    assert slow.batches == [1, 8]
    assert seconds == pytest.approx(sources.PROBE_S / 8, rel=0.5)
    fast = _Slow(0.0)
    sources.check_fit(fast, _four_features(5000), "the data")
    assert fast.batches == [1, 8, 64, 512, sources.FIT_BATCH]
    small = _Slow(0.0)
    sources.check_fit(small, _four_features(20), "the data")
    assert small.batches == [1, 8, 20]


def test_a_model_failing_on_a_probed_batch_is_named_with_its_shape() -> None:
    from pruneviz.data import sources
    from pruneviz.errors import ModelError

    with pytest.raises(ModelError, match=r"batch of shape \(64, 4\).*out of memory"):
        sources.check_fit(_Slow(0.0, fails_over=8), _four_features(100), "the data")


# -- memory ---------------------------------------------------------------------------------
def test_tables_beyond_the_plan_in_use_stay_within_the_budget() -> None:
    session, _ = session_and_data("conv_bn")
    weight_bytes = sum(session.original(layer.weight).numel() * 4 for layer in session.layers)
    in_use = 0
    for criterion in ("l1", "l2", "random", "fpgm"):
        for granularity in (Granularity.UNSTRUCTURED, Granularity.FILTER):
            plan, skipped = session.uniform_plan(0.5, granularity, criterion)
            if skipped and len(skipped) == len(session.layers):
                continue
            session.apply(plan)
            in_use = sum(t.nbytes for t in session._decided.tables())
            memory = session.memory()
            assert memory.tables <= in_use + TABLE_BUDGET * weight_bytes
    assert in_use > 0


def test_a_workbench_session_shares_the_pristine_weights_and_never_writes_them() -> None:
    bench = open_workbench("sample:digits_cnn")
    before = {n: t.clone() for n, t in bench.pristine.state_dict().items()}
    session = bench.session
    assert session.memory().originals == 0
    plan, _ = session.uniform_plan(0.7, Granularity.FILTER, "l2")
    session.apply(plan)
    tuned = {n: t + 0.01 for n, t in session.model.state_dict().items()}
    session.apply(Plan())
    session.rebase(tuned)
    session.apply(plan)
    session.reset()
    assert all(torch.equal(before[n], t) for n, t in bench.pristine.state_dict().items())
    assert session.memory().originals > 0  # new originals are the session's own


def test_a_copying_session_keeps_its_own_originals() -> None:
    session, _ = session_and_data("conv_bn")
    assert isinstance(session, PruningSession)
    assert session.memory().originals > 0


def test_a_model_the_machine_cannot_hold_is_refused_before_opening(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.errors import ModelError
    from pruneviz.workflows import workbench

    session, data = session_and_data("conv_bn", samples=20)
    needed = workbench.memory_needed(session.model, data)
    workbench.check_room("conv_bn", session.model, data, available=needed)  # just fits
    with pytest.raises(ModelError, match=r"needs about .* GiB .* free; close other tabs"):
        workbench.check_room("conv_bn", session.model, data, available=needed - 1)
    monkeypatch.setattr(workbench, "available_memory", lambda device=None: 1024)
    with pytest.raises(ModelError, match="opening conv_bn needs"):
        build_workbench("conv_bn", session.model, data.x[:1], data, None)


def test_a_model_on_a_gpu_is_checked_against_the_gpus_own_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.errors import ModelError
    from pruneviz.measure import machine
    from pruneviz.workflows import workbench

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * 2**20, 2**30))
    assert machine.available_memory(torch.device("cuda:0")) == 5 * 2**20
    session, data = session_and_data("conv_bn", samples=20)
    monkeypatch.setattr(workbench, "model_device", lambda model: torch.device("cuda:0"))
    monkeypatch.setattr(workbench, "available_memory",
                        lambda device=None: 0 if device.type == "cuda" else 2**40)
    with pytest.raises(ModelError, match=r"but cuda:0 has 0.00 GiB free"):
        workbench.check_room("conv_bn", session.model, data)


def test_the_app_says_so_when_a_model_does_not_fit_and_stays_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from fixtures.apptest import start

    from pruneviz.workflows import workbench

    monkeypatch.setattr(workbench, "available_memory", lambda device=None: 1024)
    at = start("sample:digits_cnn", "app_pages/prune.py", no_errors=False)
    assert not at.exception
    assert any("needs about" in e.value and "GiB" in e.value for e in at.error)
    monkeypatch.setattr(workbench, "available_memory", lambda device=None: None)
    at.run()
    assert not at.exception
    assert not at.error


def test_a_second_session_on_a_kept_model_reuses_its_traced_graph(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from pruneviz.core import session as session_module

    session, data = session_and_data("residual")
    first = PruningSession(session.model, data.x[:2], share_originals=True)
    traced: list[object] = []
    monkeypatch.setattr(session_module, "find_groups",
                        lambda *args: traced.append(args) or ([], None))
    second = PruningSession(session.model, data.x[:2], share_originals=True)
    assert traced == []  # not traced again
    assert second.groups == first.groups
    assert second.layer_names == first.layer_names
    assert second.output_layers == first.output_layers
    PruningSession(session.model, data.x[:3], share_originals=True)  # another input shape
    assert len(traced) == 1
    PruningSession(session.model, data.x[:2])  # a copying session traces its own
    assert len(traced) == 2


def test_groups_listed_with_the_built_index_mappings_are_torch_prunings_own(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Listing a DenseNet's groups without Torch-Pruning recomputing every concatenation's
    index mapping at each group (quadratic in depth) gives the very same groups."""
    from contextlib import nullcontext

    from fixtures import zoo

    from pruneviz.core import coupling
    from pruneviz.core.layers import find_prunable_layers

    model = zoo.densenet121(4, (2, 3, 2), 8, 2, num_classes=10).eval()
    x = torch.randn(1, 3, 32, 32)
    layers = find_prunable_layers(model, x)
    fast, note = coupling.find_groups(model, x, layers)
    monkeypatch.setattr(coupling, "_index_mapping_as_built", nullcontext)
    slow, _ = coupling.find_groups(model, x, layers)
    assert note is None
    assert len(fast) > 10
    assert fast == slow
