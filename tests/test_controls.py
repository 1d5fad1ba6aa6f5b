"""The Prune page's controls <-> Plan, on plain values (no Streamlit)."""

from __future__ import annotations

from typing import Any

import pytest

from pruneviz.app import controls
from pruneviz.app.keys import widget_key
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan

LAYERS = ["conv1", "conv2", "fc"]


def supported(layer: str, granularity: Granularity, criterion: str) -> str | None:
    return None


def test_round_trip_plan_widgets_plan() -> None:
    plan = Plan({"conv1": LayerPlan(Granularity.FILTER, "l2", sparsity=0.5),
                 "fc": LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.8587)})
    values = controls.widget_values(plan, LAYERS)
    assert values[widget_key("scope")] == controls.Scope.PER_LAYER.value
    assert values[widget_key("mode")] == controls.Mode.SPARSITY.value
    assert values[widget_key("gran", "conv1")] == "filter"
    assert values[widget_key("crit", "conv1")] == "l2"
    assert values[widget_key("sp", "fc")] == 86  # whole percents on the slider
    assert values[widget_key("sp", "conv2")] == 0
    built = controls.plan_for_widgets(values, LAYERS, plan, supported)
    assert built.plan == plan  # 85.87% stays exact while its slider shows 86
    assert built.warnings == []


def test_moved_slider_gives_its_whole_percent() -> None:
    plan = Plan({"fc": LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.8587)})
    values = controls.widget_values(plan, LAYERS) | {widget_key("sp", "fc"): 70}
    built = controls.plan_for_widgets(values, LAYERS, plan, supported)
    assert built.plan.layers["fc"].sparsity == pytest.approx(0.70)


def test_blocks_round_trip() -> None:
    plan = Plan(blocks=("layer2",))
    values = controls.widget_values(plan, LAYERS)
    assert values[widget_key("blocks")] == ["layer2"]
    assert values[widget_key("blocks_k")] == 1
    assert controls.plan_for_widgets(values, LAYERS, plan, supported).plan == plan


def test_coupled_slider_move_sets_its_group() -> None:
    groups = {("conv1", Granularity.FILTER): "g", ("conv2", Granularity.FILTER): "g",
              ("fc", Granularity.CHANNEL): "g"}  # conv1 + conv2 make channels fc reads

    def group_of(layer: str, granularity: Granularity) -> object | None:
        return groups.get((layer, granularity))

    values: dict[str, Any] = controls.widget_values(Plan(), LAYERS)
    values[widget_key("gran", "conv1")] = "filter"
    values[widget_key("sp", "conv1")] = 40
    values[widget_key("crit", "conv1")] = "l2"
    # the other producer follows, even from "unstructured 0%": its row shows what the
    # group prunes in it (fc, which reads the channels, keeps its own entry)
    changes = controls.coupled_moves("conv1", values, LAYERS, group_of)
    assert changes == {widget_key("gran", "conv2"): "filter", widget_key("sp", "conv2"): 40,
                       widget_key("crit", "conv2"): "l2"}
    # fc's row says its inputs go with conv1's filters
    assert controls.coupled_inputs("fc", values, LAYERS, group_of) == ("conv1", 40)
    assert controls.coupled_inputs("conv2", values, LAYERS, group_of) is None
    # an unstructured layer moves alone
    values[widget_key("gran", "conv1")] = "unstructured"
    assert controls.coupled_inputs("fc", values, LAYERS, group_of) is None
    assert controls.coupled_moves("conv1", values, LAYERS, group_of) == {}
    # a layer in no group moves alone
    values[widget_key("gran", "conv1")] = "channel"
    assert controls.coupled_moves("conv1", values, LAYERS, group_of) == {}


def test_every_row_of_a_coupled_group_shows_what_the_table_shows() -> None:
    """The real engine on a residual model: set any producer of a group by filter, and
    the rows of every layer whose filters are pruned say so; the others pruned are the
    group's readers, whose inputs go with it (their rows say that: prune_view)."""
    from fixtures.sessions import bench_for

    session = bench_for("digits_resnet").session
    names = session.layer_names
    grouped = [n for n in names if len(session.coupled_with(n)) > 1]
    assert grouped
    for moved in grouped:
        values: dict[str, Any] = controls.widget_values(Plan(), names)
        values[widget_key("gran", moved)] = "filter"
        values[widget_key("sp", moved)] = 50
        values.update(controls.coupled_moves(moved, values, names, session.group_of))
        built = controls.plan_for_widgets(values, names, Plan(), session.unsupported)
        group = session.group_of(moved)
        assert group is not None
        readers = {n for n in names if session.group_of(n, Granularity.CHANNEL) is group}
        with session.applied(built.plan):
            pruned = {r.name for r in session.results() if r.sparsity > 0}
        shown = {n for n in names if int(values.get(widget_key("sp", n), 0)) > 0}
        assert shown == {n for n in names if session.group_of(n) is group}
        assert pruned == shown | readers, (moved, sorted(pruned ^ (shown | readers)))


def test_set_all_layers() -> None:
    assert controls.set_all_layers(30, LAYERS) == {widget_key("sp", n): 30 for n in LAYERS}


def test_threshold_mode() -> None:
    plan = Plan({"conv1": LayerPlan(Granularity.FILTER, "l1", threshold=0.25)})
    values = controls.widget_values(plan, LAYERS)
    assert values[widget_key("mode")] == controls.Mode.THRESHOLD.value
    values[widget_key("th", "conv1")] = 0.25  # the page seeds it from the session's scores
    values[widget_key("th", "fc")] = 0.0  # zero: not pruned
    built = controls.plan_for_widgets(values, LAYERS, plan, supported)
    assert built.plan == plan
    # a layer whose controls are not shown keeps its sparsity slider's value
    values[widget_key("sp", "fc")] = 20
    built = controls.plan_for_widgets(values, LAYERS, plan, supported, shown=["conv1"])
    assert built.plan.layers["fc"] == LayerPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.2)
    assert built.plan.layers["conv1"].threshold == 0.25


def test_nm_layer_takes_no_amount() -> None:
    values = controls.widget_values(Plan(), LAYERS) | {widget_key("gran", "fc"): "2:4"}
    built = controls.plan_for_widgets(values, LAYERS, Plan(), supported)
    assert built.plan.layers == {"fc": LayerPlan(Granularity.NM_2_4, "l1")}


def test_global_scope_with_cap_leaves_out_unsupported_layers() -> None:
    section = GlobalPlan(Granularity.FILTER, "l2", sparsity=0.6, layers=("conv1", "conv2"),
                         max_layer_sparsity=0.9)
    plan = Plan(global_=section)
    values = controls.widget_values(plan, LAYERS)
    assert values[widget_key("scope")] == controls.Scope.GLOBAL.value
    assert (values[widget_key("g_gran")], values[widget_key("g_crit")]) == ("filter", "l2")
    assert (values[widget_key("g_sp")], values[widget_key("g_cap")]) == (60, 90)

    def no_fc(layer: str, granularity: Granularity, criterion: str) -> str | None:
        return "no filters here" if layer == "fc" else None

    built = controls.plan_for_widgets(values, LAYERS, plan, no_fc)
    assert built.plan == plan
    assert built.warnings == ["fc left out: no filters here"]
    values[widget_key("g_sp")] = 0  # nothing to rank: the empty plan
    assert controls.plan_for_widgets(values, LAYERS, plan, no_fc).plan == Plan()


def test_global_defaults_without_a_global_section() -> None:
    values = controls.widget_values(Plan(), LAYERS)
    assert values[widget_key("g_sp")] == controls.DEFAULT_GLOBAL_PERCENT
    assert values[widget_key("g_cap")] == controls.DEFAULT_CAP_PERCENT
    values[widget_key("scope")] = controls.Scope.GLOBAL.value
    built = controls.plan_for_widgets(values, LAYERS, Plan(), supported)
    assert built.plan.global_ == GlobalPlan(Granularity.UNSTRUCTURED, "l1", sparsity=0.5,
                                            layers=tuple(LAYERS), max_layer_sparsity=0.95)


MANY = [f"blocks.{i}.fc" for i in range(60)]


def test_editing_layers_one_at_a_time_keeps_the_others() -> None:
    """60 layers, one shown at a time: each edit keeps every earlier one. The page writes
    the hidden layers' values from the applied plan after each run; here a stale value
    (what Streamlit falls back to for an undrawn slider) is overwritten by them."""
    plan = Plan()
    values = controls.widget_values(plan, MANY)
    for step, name in enumerate(MANY[:5]):
        values[widget_key("sp", name)] = 10 * (step + 1)  # the shown slider moves
        built = controls.plan_for_widgets(values, MANY, plan, supported, shown=[name])
        plan = built.plan
        hidden = controls.hidden_layers(MANY, [name])
        assert name not in hidden
        assert len(hidden) == 59
        stale = {widget_key("sp", n): 0 for n in hidden}  # what an undrawn slider reverts to
        values |= stale | controls.layer_values(plan, hidden)
    assert {n: e.sparsity for n, e in plan.layers.items()} == {
        MANY[i]: pytest.approx(0.1 * (i + 1)) for i in range(5)}


def test_hidden_threshold_layer_keeps_its_threshold() -> None:
    plan = Plan({"conv1": LayerPlan(Granularity.UNSTRUCTURED, "l1", threshold=0.25)})
    values = controls.widget_values(plan, LAYERS) | {
        widget_key("th", "fc"): 0.5, widget_key("mode"): controls.Mode.THRESHOLD.value}
    built = controls.plan_for_widgets(values, LAYERS, plan, supported, shown=["fc"])
    assert built.plan.layers["conv1"].threshold == 0.25
    assert built.plan.layers["fc"].threshold == 0.5
    assert controls.hidden_layers(LAYERS, None) == []
