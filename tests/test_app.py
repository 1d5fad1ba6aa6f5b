"""The app through Streamlit's AppTest: pages load, sliders prune, tabs stay isolated."""

from __future__ import annotations

import weakref

import pytest
import torch
from fixtures import apptest
from fixtures.apptest import bench_of, rerun_while_running
from streamlit.proto.Metric_pb2 import Metric as MetricProto
from streamlit.testing.v1 import AppTest

from pruneviz.app.keys import MODEL_KEY, SWEEP_WORKERS_KEY, WORKSPACE_KEY, widget_key
from pruneviz.app.widgets import count_delta, latency_delta
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import Plan
from pruneviz.data.samples import load_sample, sample_names
from pruneviz.measure.timing import Speedup

PAGES = [f"app_pages/{name}.py" for name in (
    "model", "inspect", "sensitivity", "prune", "finetune", "deploy", "tradeoffs")]
TIMEOUT = 60


def start(sample: str = "digits_cnn", page: str | None = None) -> AppTest:
    return apptest.start(f"sample:{sample}", page, timeout=TIMEOUT)


def shown_metric(at: AppTest, label: str) -> str:
    for metric in at.metric:
        if metric.label == label:
            return str(metric.value)
    raise AssertionError(f"no metric {label!r}; have {[m.label for m in at.metric]}")


def shown_sparsity(at: AppTest, layer: str) -> str:
    table = at.dataframe[-1].value
    row = table[table["layer"] == layer]
    assert len(row) == 1
    return str(row["sparsity"].iloc[0])


@pytest.mark.parametrize("sample", sample_names())
@pytest.mark.parametrize("page", PAGES)
def test_every_page_loads_for_every_sample(sample: str, page: str) -> None:
    at = start(sample, page)
    assert not at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.title, "every page has a title"


def test_layer_slider_changes_that_layer_and_the_metric() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    before_metric = shown_metric(at, "accuracy")
    assert shown_sparsity(at, "conv2") == "0.0%"
    at.slider(key=widget_key("sp", "conv2")).set_value(95).run()
    assert not at.exception
    assert shown_sparsity(at, "conv2") == "95.0%"
    assert shown_sparsity(at, "conv1") == "0.0%"
    assert shown_metric(at, "accuracy") != before_metric
    result = bench_of(at).session.result("conv2")
    assert result.sparsity == pytest.approx(0.95, abs=1e-3)


def test_global_slider_sets_every_layer() -> None:
    at = start("digits_mlp", "app_pages/prune.py")
    at.slider(key=widget_key("all")).set_value(60).run()
    assert not at.exception
    for name in ["fc1", "fc2", "fc3"]:
        assert at.slider(key=widget_key("sp", name)).value == 60
        assert shown_sparsity(at, name) == "60.0%"


def test_global_ranking_scope_prunes_to_the_total() -> None:
    at = start("digits_mlp", "app_pages/prune.py")
    at.radio(key=widget_key("scope")).set_value("Global ranking").run()
    at.slider(key=widget_key("g_sp")).set_value(80).run()
    assert not at.exception
    session = bench_of(at).session
    pruned = sum(r.params - r.nonzero for r in session.results())
    total = sum(r.params for r in session.results())
    assert pruned / total == pytest.approx(0.8, abs=0.01)


def test_reset_restores_the_baseline_exactly() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    baseline = shown_metric(at, "accuracy")
    at.slider(key=widget_key("sp", "conv1")).set_value(70).run()
    at.slider(key=widget_key("sp", "fc")).set_value(90).run()
    assert shown_metric(at, "accuracy") != baseline
    at.button(key="pv_reset").click().run()
    assert not at.exception
    assert shown_metric(at, "accuracy") == baseline
    for name in ["conv1", "conv2", "fc"]:
        assert shown_sparsity(at, name) == "0.0%"
    pristine = load_sample("digits_cnn").model.state_dict()
    for key, tensor in bench_of(at).session.model.state_dict().items():
        assert torch.equal(tensor, pristine[key]), key


def test_two_sessions_stay_isolated() -> None:
    first = start("digits_cnn", "app_pages/prune.py")
    second = start("digits_cnn", "app_pages/prune.py")
    first.slider(key=widget_key("sp", "conv2")).set_value(90).run()
    second.run()
    assert shown_sparsity(first, "conv2") == "90.0%"
    assert shown_sparsity(second, "conv2") == "0.0%"
    assert bench_of(first).session.model is not bench_of(second).session.model
    pristine = load_sample("digits_cnn").model.state_dict()
    for key, tensor in bench_of(second).session.model.state_dict().items():
        assert torch.equal(tensor, pristine[key]), key


def test_choosing_an_experiment_restores_its_plan() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    at.slider(key=widget_key("sp", "conv2")).set_value(50).run()
    plan_at_50 = bench_of(at).session.plan
    at.slider(key=widget_key("sp", "conv2")).set_value(80).run()
    at.switch_page("app_pages/tradeoffs.py").run()
    assert not at.exception
    log = at.session_state[WORKSPACE_KEY].log
    target = next(e for e in log if Plan.from_json(e.plan_json).key() == plan_at_50.key())
    at.selectbox(key="pv_tradeoff_choice").set_value(target.id).run()
    at.button(key="pv_restore").click().run()
    assert not at.exception
    assert bench_of(at).session.plan.key() == plan_at_50.key()
    assert at.slider(key=widget_key("sp", "conv2")).value == 50
    assert shown_sparsity(at, "conv2") == "50.0%"


def test_unsupported_choice_shows_a_message_not_a_traceback() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    at.selectbox(key=widget_key("gran", "conv1")).set_value("filter").run()
    at.selectbox(key=widget_key("crit", "conv1")).set_value("bn_scale").run()
    assert not at.exception
    assert any("BatchNorm" in w.value for w in at.warning)
    at.slider(key=widget_key("sp", "conv2")).set_value(100).run()
    assert not at.exception
    assert shown_sparsity(at, "conv2") == "100.0%"


def test_sweep_adds_measured_points_to_the_tradeoffs() -> None:
    at = start("digits_mlp", "app_pages/tradeoffs.py")
    assert len(at.session_state[WORKSPACE_KEY].log) == 1
    at.button(key="pv_sweep").click().run()
    assert not at.exception
    # measured in the background (tests/test_sweep_page.py): wait for it as the page polls
    workers = at.session_state[SWEEP_WORKERS_KEY]
    (worker,) = workers.values()
    rerun_while_running(at, worker, 60)
    log = list(at.session_state[WORKSPACE_KEY].log)
    assert len(log) == 10
    sparsities = [e.sparsity for e in log[1:]]
    assert sparsities == sorted(sparsities)
    assert log[-1].metric < log[0].metric  # 90% of every layer costs accuracy
    # the plan applied before the sweep is still the one applied after it
    assert bench_of(at).session.plan.is_empty


def test_model_picker_switches_the_model_and_keeps_it_across_pages() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    at.selectbox(key="pv_model_picker").set_value("sample:digits_mlp").run()
    assert not at.exception
    assert bench_of(at).name == "sample:digits_mlp"
    assert at.slider(key=widget_key("sp", "fc1")).value == 0
    at.switch_page("app_pages/inspect.py").run()
    at.switch_page("app_pages/prune.py").run()
    assert bench_of(at).name == "sample:digits_mlp"


def test_threshold_mode_prunes_scores_below_the_slider() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    at.radio(key=widget_key("mode")).set_value("|score| threshold").run()
    assert not at.exception
    session = bench_of(at).session
    table = session.scores("conv2", Granularity.UNSTRUCTURED, "l1")
    threshold = float(table.sorted[table.count // 2])
    at.slider(key=widget_key("th", "conv2")).set_value(threshold).run()
    assert not at.exception
    result = session.result("conv2")
    assert result.structures_pruned == table.count_below(threshold)
    assert result.threshold == pytest.approx(threshold)
    assert 0.4 < result.sparsity < 0.6


@pytest.mark.slow
def test_coupled_layers_move_together_and_slim_on_the_deploy_page() -> None:
    at = start("digits_resnet", "app_pages/prune.py")
    for name in ["stem.conv", "layer1.conv2"]:
        at.selectbox(key=widget_key("gran", name)).set_value("filter").run()
    at.slider(key=widget_key("sp", "layer1.conv2")).set_value(50).run()
    assert not at.exception
    # stem.conv and layer1.conv2 feed the same residual sum: pruned together.
    assert at.slider(key=widget_key("sp", "stem.conv")).value == 50
    session = bench_of(at).session
    assert "stem.conv" in session.coupled_with("layer1.conv2")
    assert session.result("stem.conv").structures_pruned == 8
    at.switch_page("app_pages/deploy.py").run()
    assert not at.exception
    # no form refused (the machine-is-busy note depends on the machine, not on the plan)
    refused = [w.value for w in at.warning if not w.value.startswith("The machine is busy")]
    assert not refused, refused
    shown = {m.label: m.value for m in at.metric}
    assert "parameters stored" in shown
    # the latency change is a speed-up with its interval, or "within noise": no percentage
    latency = [m for m in at.metric if m.label == "latency (batch 64)"]
    assert len(latency) == 3
    for metric in latency[1:]:  # slimmed and sparse-deployed, against masked
        delta = metric.proto.delta
        assert delta == "within noise" or " (CI " in delta, delta
        assert "%" not in delta
    assert any("Slimming cut the weight MACs" in i.value for i in at.info)


@pytest.mark.slow
def test_tradeoffs_show_each_configuration_at_its_fastest_form() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    at.selectbox(key=widget_key("gran", "conv1")).set_value("filter").run()
    at.slider(key=widget_key("sp", "conv1")).set_value(50).run()
    at.switch_page("app_pages/tradeoffs.py").run()
    at.button(key="pv_forms_all").click().run()
    assert not at.exception
    found = at.session_state[WORKSPACE_KEY].best_forms
    assert set(found) == {0, 1}
    assert all(f.max_abs_diff <= 1e-4 for f in found.values())


def test_many_layer_models_edit_one_layer_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    import pruneviz.app.state as ui_state

    monkeypatch.setattr(ui_state, "MANY_LAYERS", 2)  # digits_cnn's 3 layers count as many
    at = start("digits_cnn", "app_pages/prune.py")
    assert not at.exception
    at.multiselect(key=widget_key("edit_layers")).set_value(["conv2"]).run()
    assert [s.key for s in at.slider if s.key and "::" in s.key] == [widget_key("sp", "conv2")]
    at.slider(key=widget_key("sp", "conv2")).set_value(60).run()
    at.multiselect(key=widget_key("edit_layers")).set_value(["fc"]).run()
    assert not at.exception
    # conv2 keeps its 60% while another layer is being edited
    assert shown_sparsity(at, "conv2") == "60.0%"
    at.slider(key=widget_key("sp", "fc")).set_value(30).run()
    assert shown_sparsity(at, "conv2") == "60.0%"
    assert shown_sparsity(at, "fc") == "30.0%"


def test_a_count_change_shows_however_small_it_is() -> None:
    # 2,048 of 25,557,032 parameters pruned is 0.008%: a percentage rounds it to nothing
    assert count_delta(25_557_032 - 2_048, 25_557_032) == ("-2,048", "inverse")
    assert count_delta(25_557_032, 25_557_032) == ("no change", "off")
    assert count_delta(500, 1_000) == ("-50.0%", "inverse")
    assert count_delta(5, 0) == (None, "off")


def test_a_graph_that_cannot_be_traced_is_explained(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the dependency graph cannot be traced (Torch-Pruning fails on ShuffleNet-V2's
    channel shuffle, for one), the Model page says why instead of keeping it to itself."""
    import pruneviz.core.session as session_module

    def untraceable(model: object, example: object, layers: object) -> tuple[list[object], str]:
        return [], "the dependency graph could not be traced (RuntimeError: shuffle)"

    monkeypatch.setattr(session_module, "find_groups", untraceable)
    monkeypatch.setattr(session_module, "_GRAPHS", weakref.WeakKeyDictionary())  # trace anew
    at = start("digits_mlp")  # a model this test has not opened: no cached session
    warnings = [w.value for w in at.warning]
    assert any("could not be traced (RuntimeError: shuffle)" in w and "cannot slim" in w
               for w in warnings), warnings


def test_a_latency_change_whose_interval_holds_1x_is_not_shown_as_a_change() -> None:
    # a +53% median change whose interval still holds 1x: noise, grey, no number
    assert latency_delta(Speedup(1.53, 0.9, 1.8, 20)) == ("within noise", "off")
    assert latency_delta(Speedup(1.73, 1.62, 1.81, 20)) == ("1.73x faster (CI 1.62-1.81)",
                                                            "normal")
    assert latency_delta(Speedup(0.8, 0.75, 0.9, 20)) == ("1.25x slower (CI 1.11-1.33)",
                                                          "inverse")


def metric_value(at: AppTest, label: str) -> str:
    found = [m for m in at.metric if m.label == label]
    assert len(found) == 1, [m.label for m in at.metric]
    return str(found[0].value)


def test_a_move_shows_the_live_metrics_first_and_the_slow_ones_once_measured() -> None:
    at = start("digits_cnn", "app_pages/prune.py")
    space = apptest.workspace_of(at)
    space.refiner.stop()  # the baseline's background measurement: not under test here
    space.bench.meter.latency_runs = 200  # long enough to see it in flight
    at.slider(key=widget_key("sp", "conv2")).set_value(60).run()
    assert not at.exception
    assert space.refiner.running()
    assert metric_value(at, "latency") == "measuring…"
    assert metric_value(at, "gzip file") == "measuring…"
    assert metric_value(at, "sparse file").endswith("KiB")  # measured on the hot path
    entry = space.log.find(space.bench.session.plan)
    assert entry is not None
    assert entry.latency_ms is None
    assert space.refiner.wait(120)
    at.run()
    assert metric_value(at, "latency").endswith(" ms")
    assert metric_value(at, "gzip file").endswith("KiB")
    entry = space.log.find(space.bench.session.plan)
    assert entry is not None
    assert entry.latency_ms is not None
    assert entry.size_gzip_bytes is not None


def test_many_layers_are_edited_from_a_compact_table_several_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import pruneviz.app.state as ui_state

    monkeypatch.setattr(ui_state, "MANY_LAYERS", 2)
    at = start("digits_cnn", "app_pages/prune.py")
    table = at.dataframe[0].value
    assert list(table["layer"]) == bench_of(at).session.layer_names
    assert {"MACs", "coupled", "sparsity"} <= set(table.columns)
    assert "safe up to" not in table.columns  # no sensitivity analysis has run
    assert table["MACs"].sum() == pytest.approx(100)
    at.multiselect(key=widget_key("edit_layers")).set_value(["conv1", "fc"]).run()
    shown = [s.key for s in at.slider if s.key and "::" in s.key]
    assert shown == [widget_key("sp", "conv1"), widget_key("sp", "fc")]
    at.slider(key=widget_key("sp", "conv1")).set_value(40).run()
    table = at.dataframe[0].value
    assert table[table["layer"] == "conv1"]["sparsity"].iloc[0] == pytest.approx(40, abs=1)


def test_the_compact_table_says_how_much_each_layer_takes_after_an_analysis() -> None:
    from pruneviz.app.prune_view import safe_amounts

    class Analysis:
        def ranking(self) -> list[dict[str, object]]:
            return [{"layers": ["conv1"], "safe_sparsity": 0.6},
                    {"layers": ["conv2", "fc"], "safe_sparsity": 0.2}]

    assert safe_amounts(None) == {}
    assert safe_amounts(Analysis()) == {"conv1": 0.6, "conv2": 0.2, "fc": 0.2}  # type: ignore[arg-type]


def test_an_error_message_says_what_failed_once() -> None:
    """user_errors words every kind of failure as `what: why` ("The export failed:
    ...", never "The export failed failed")."""

    def page() -> None:
        from pruneviz.app.widgets import user_errors

        with user_errors("The export failed"):
            raise RuntimeError("disk unplugged")

    at = AppTest.from_function(page).run()
    assert [e.value for e in at.error] == [
        "The export failed: disk unplugged. Try another setting, or reset the plan on the "
        "Prune page."]


def test_a_change_without_a_direction_has_no_arrow() -> None:
    at = start(page="app_pages/prune.py")
    unpruned = {m.label: (m.proto.delta, m.proto.direction) for m in at.metric}
    no_change = [label for label, (delta, _) in unpruned.items() if delta == "no change"]
    assert {"non-zero params", "effective MACs", "dense file"} <= set(no_change)
    assert all(unpruned[label][1] == MetricProto.MetricDirection.NONE for label in no_change)
    at.slider(key=widget_key("sp", "conv2")).set_value(60).run()
    pruned = {m.label: (m.proto.delta, m.proto.direction) for m in at.metric}
    assert pruned["non-zero params"][1] == MetricProto.MetricDirection.DOWN  # fewer: an arrow
    assert pruned["dense file"] == ("no change", MetricProto.MetricDirection.NONE)


def test_accuracy_is_shown_in_percent_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    at = apptest.start(None, "app_pages/prune.py", timeout=TIMEOUT, monkeypatch=monkeypatch,
                       argv=["--model", "sample:digits_cnn", "--eval-subset", "100"])
    space = at.session_state[WORKSPACE_KEY]
    assert space.bench.eval_full is not None  # live on 100 samples, the whole set later
    at.slider(key=widget_key("sp", "conv2")).set_value(50).run()
    assert space.refiner.wait(60)  # the whole set's metric of this plan is in
    at.run()
    full = space.bench.meter.evaluate_full()
    assert shown_metric(at, "accuracy").startswith(f"{full.metric:.2%}")  # both measured
    captions = " ".join(c.value for c in at.caption)
    assert f"Whole set, this plan: **accuracy {full.metric:.2%}**" in captions
    at.switch_page("app_pages/tradeoffs.py").run()
    table = at.dataframe[0].value
    assert "metric" not in table.columns
    assert list(table["accuracy %"]) == pytest.approx([100 * e.metric for e in space.log])


def test_the_rows_of_a_coupled_group_show_what_the_table_shows() -> None:
    at = start("digits_resnet", "app_pages/prune.py")
    session = bench_of(at).session
    at.selectbox(key=widget_key("gran", "stem.conv")).set_value("filter").run()
    at.slider(key=widget_key("sp", "stem.conv")).set_value(50).run()
    assert not at.exception
    group = session.group_of("stem.conv")
    assert group is not None
    producers = [n for n in session.layer_names if session.group_of(n) is group]
    readers = [n for n in session.layer_names
               if session.group_of(n, Granularity.CHANNEL) is group]
    assert len(producers) > 1
    assert readers
    for name in producers:  # each producer's row reads filter 50%, as the table
        assert at.selectbox(key=widget_key("gran", name)).value == "filter"
        assert at.slider(key=widget_key("sp", name)).value == 50
        assert shown_sparsity(at, name) != "0.0%"
    rows = " ".join(m.value for m in at.markdown)
    for name in readers:  # each reader's row says its inputs go with the group
        assert shown_sparsity(at, name) != "0.0%"
        assert f"**{name}**" in rows
    notes = [c.value for c in at.caption if "inputs go with" in c.value]
    assert sorted(notes) == sorted(f":orange[:material/link: 50% of {name}'s inputs go with "
                                   "stem.conv's filters (they read the channels those "
                                   "filters make)]" for name in readers)


def test_switching_scope_says_where_the_plan_it_replaces_is_kept() -> None:
    at = start(page="app_pages/prune.py")
    at.radio(key=widget_key("scope")).set_value("Global ranking").run()
    at.slider(key=widget_key("g_sp")).set_value(60).run()
    session = bench_of(at).session
    global_plan = session.stamp(session.plan)
    assert not global_plan.is_empty
    at.radio(key=widget_key("scope")).set_value("Per layer").run()
    assert not at.exception
    (note,) = [i.value for i in at.info if "is kept" in i.value]
    log = at.session_state[WORKSPACE_KEY].log
    kept = log.find(global_plan)
    assert kept is not None
    assert f"experiment #{kept.id} on the Trade-offs page" in note
    assert log.plan(kept.id).key() == global_plan.key()  # restorable from there
    at.run()
    assert not [i for i in at.info if "is kept" in i.value]  # said once


def test_switching_model_and_back_keeps_the_tabs_work() -> None:
    at = start(page="app_pages/prune.py")
    at.slider(key=widget_key("sp", "conv2")).set_value(60).run()
    at.slider(key=widget_key("sp", "conv1")).set_value(30).run()
    space = at.session_state[WORKSPACE_KEY]
    plan, entries = space.bench.session.plan.key(), len(space.log)
    assert entries >= 3
    at.session_state[MODEL_KEY] = "sample:digits_mlp"
    at.run()
    assert bench_of(at).name == "sample:digits_mlp"
    at.session_state[MODEL_KEY] = "sample:digits_cnn"
    at.run()
    assert not at.exception
    back = at.session_state[WORKSPACE_KEY]
    assert back is space  # the same workspace: plan, experiments and results
    assert back.bench.session.plan.key() == plan
    assert len(back.log) == entries
    assert at.slider(key=widget_key("sp", "conv2")).value == 60  # the rows show it again


def test_a_reset_says_where_the_plan_it_replaces_is_kept() -> None:
    at = start(page="app_pages/prune.py")
    at.slider(key=widget_key("sp", "conv2")).set_value(60).run()
    session = bench_of(at).session
    pruned = session.stamp(session.plan)
    at.button(key="pv_reset").click().run()
    assert not at.exception
    assert session.plan.is_empty
    kept = at.session_state[WORKSPACE_KEY].log.find(pruned)
    assert kept is not None
    (note,) = [i.value for i in at.info if "is kept" in i.value]
    assert f"experiment #{kept.id} on the Trade-offs page" in note
