"""Sensitivity analysis: each item pruned alone at each level, measured — and the fast
path (prefix reuse, shared baseline, repeated amounts) gives exactly the numbers of the
naive loop that re-runs the whole model for every point."""

from __future__ import annotations

import threading
from collections import Counter

import pytest
import torch
from fixtures.models import ZOO, assert_bit_identical, snapshot
from fixtures.sessions import session_and_data
from fixtures.unseen import UNSEEN
from torch import Tensor, nn

from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan, Plan
from pruneviz.core.session import PruningSession
from pruneviz.data.tasks import Task
from pruneviz.data.tensors import TensorData
from pruneviz.errors import PlanError
from pruneviz.measure.metrics import count_params, evaluate
from pruneviz.measure.storage import sparse_bytes
from pruneviz.workflows.sensitivity import (
    DEFAULT_LEVELS,
    PrefixCache,
    SensitivityCache,
    SensitivityResult,
    SensitivityRun,
    sensitivity_items,
)
from pruneviz.workflows.workbench import open_workbench

LEVELS = (0.0, 0.3, 0.6, 0.9)
ENTRIES = {**ZOO, **UNSEEN}


def fixture_session(name: str) -> tuple[PruningSession, TensorData]:
    return session_and_data(name, samples=40, batch=4)


def fields(result: SensitivityResult) -> dict[str, list[tuple[object, ...]]]:
    return {key: [(p.level, p.metric, p.loss, p.params_nonzero, p.macs, p.size_bytes,
                   p.structures_pruned) for p in points]
            for key, points in result.points.items()}


class InPlaceShared(nn.Module):
    """One ReLU(inplace=True) module called three times, a conv called twice: the prefix
    record must count calls per module and hand out copies of what is changed in place."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(2, 6, 3, padding=1)
        self.conv_b = nn.Conv2d(6, 6, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.head = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.conv_a(x))
        x = self.relu(self.conv_b(x))
        x = self.relu(self.conv_b(x))  # the same conv again
        out: Tensor = self.head(x.mean(dim=(2, 3)))
        return out


def in_place_session() -> tuple[PruningSession, TensorData]:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 2, 6, 6, generator=g)
    data = TensorData(x, torch.randint(0, 3, (40,), generator=g), Task.CLASSIFICATION, "rand")
    return PruningSession(InPlaceShared().eval(), x[:4], calibration=data), data


# -- the same numbers ----------------------------------------------------------------------
@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
@pytest.mark.parametrize("name", ["mlp", "conv_bn", "residual", "lstm", "gru", "attention",
                                  "unseen", "transformer", "in_place"])
def test_fast_path_gives_the_naive_loops_numbers(name: str, granularity: str) -> None:
    session, data = in_place_session() if name == "in_place" else fixture_session(name)
    if not sensitivity_items(session, granularity):
        pytest.skip(f"{name} has nothing to prune {granularity}")
    naive_run = SensitivityRun(session, data, granularity=granularity, levels=LEVELS,
                               reuse=False)
    naive = naive_run.run()
    fast_run = SensitivityRun(session, data, granularity=granularity, levels=LEVELS)
    fast = fast_run.run()
    assert fields(fast) == fields(naive)
    assert fast.baseline == naive.baseline
    assert fast.complete
    assert naive_run.evaluated == naive_run.total + 1  # every point, and the baseline
    assert fast_run.evaluated < naive_run.evaluated  # the baseline is shared at least


def test_every_point_is_what_pruning_the_item_alone_measures() -> None:
    session, data = fixture_session("residual")
    result = SensitivityRun(session, data, granularity="filter", levels=LEVELS).run()
    for item in result.items:
        for point in result.curve(item.key):
            session.apply(session.stamp(Plan({item.key: item.entry(point.level, "l1")})))
            evaluation = evaluate(session.model, data)
            assert (point.metric, point.loss) == (evaluation.metric, evaluation.loss)
            assert point.params_nonzero == count_params(session.model).nonzero
            assert point.size_bytes == len(sparse_bytes(session.model.state_dict()))
    session.apply(session.stamp(Plan()))


@pytest.mark.slow
def test_the_prefix_is_really_not_run_again() -> None:
    bench = open_workbench("sample:digits_resnet")
    session, data = bench.session, bench.eval_data
    calls: Counter[str] = Counter()
    stem = session.model.get_submodule("stem.conv")
    handle = stem.register_forward_hook(lambda *_: calls.update(["stem"]))
    try:
        run = SensitivityRun(session, data, levels=LEVELS)
        result = run.run()
    finally:
        handle.remove()
    # stem.conv runs for: the baseline, the record (twice for one batch), and only the
    # points of the items that change it (itself) — not those of the 9 layers after it.
    stem_points = sum(1 for p in result.curve("stem.conv") if p.level > 0)
    assert calls["stem"] <= 3 + stem_points
    assert run.evaluated < run.total


def test_prefix_cache_answers_only_calls_before_the_change() -> None:
    session, data = in_place_session()
    prefix = PrefixCache()
    assert prefix.record(session.model, [data.x], [{"conv_b"}, {"head"}])
    before_b = {(c.module, c.index) for c in prefix.stubs({"conv_b"})}
    assert before_b == {("conv_a", 0), ("relu", 0)}
    before_head = {(c.module, c.index) for c in prefix.stubs({"head"})}
    assert ("conv_b", 1) in before_head
    assert ("relu", 2) in before_head
    # ReLU(inplace=True) changes each conv's output after the conv returned it
    assert {("conv_a", 0), ("conv_b", 0), ("conv_b", 1)} <= prefix.mutated
    assert ("relu", 0) not in prefix.mutated
    with torch.inference_mode():
        full = session.model(data.x)
        for _ in range(2):  # twice: the record must not have been changed in place
            assert torch.equal(prefix.run(session.model, data.x, 0, {"head"}), full)
            assert torch.equal(prefix.run(session.model, data.x, 0, {"conv_b"}), full)


# -- items ---------------------------------------------------------------------------------
def test_structured_items_are_coupled_groups() -> None:
    session, _ = fixture_session("residual")
    items = sensitivity_items(session, Granularity.FILTER)
    # stem and conv2 feed one residual sum: one item, not two insensitive-looking layers
    keys = [item.key for item in items]
    assert len(keys) == len(set(keys))
    stem_group = next(item for item in items if "stem" in item.layers)
    assert set(stem_group.layers) == set(session.coupled_with("stem"))
    assert "conv2" in stem_group.layers
    assert all(not (set(a.layers) & set(b.layers)) or a.key == b.key
               for a in items for b in items if a.key != b.key and a.coupled and b.coupled
               and session.group_of(a.key) is session.group_of(b.key))
    assert "fc" not in keys  # the output layer's filters are its classes


def test_unstructured_items_are_every_layer() -> None:
    session, _ = fixture_session("mlp")
    assert [i.key for i in sensitivity_items(session, "unstructured")] == session.layer_names


def test_attention_heads_are_an_item() -> None:
    session, _ = fixture_session("transformer")
    heads = [i for i in sensitivity_items(session, "filter") if i.unit == "head"]
    assert {i.key for i in heads} == {"encoder.self_attn", "cross.q_proj_weight"}


# -- cache, cancel, restore ------------------------------------------------------------------
def test_a_second_run_with_the_same_cache_measures_nothing() -> None:
    session, data = fixture_session("conv_bn")
    cache = SensitivityCache()
    first = SensitivityRun(session, data, levels=LEVELS, cache=cache).run()
    again = SensitivityRun(session, data, levels=LEVELS, cache=cache)
    second = again.run()
    assert again.evaluated == 1  # the baseline only
    assert fields(first) == fields(second)
    other = SensitivityRun(session, data, levels=LEVELS, cache=cache, criterion="l2")
    other.run()
    assert other.evaluated > 1  # another criterion is another key


def test_repeated_amounts_are_measured_once() -> None:
    session, data = fixture_session("mlp")  # fc2 has 8 filters: 10% and 15% both prune 1
    run = SensitivityRun(session, data, granularity="filter", levels=(0.1, 0.15, 0.2))
    result = run.run()
    curve = result.curve("fc1")
    assert [p.structures_pruned for p in curve] == [round(0.1 * 16), round(0.15 * 16),
                                                    round(0.2 * 16)]
    assert run.evaluated < run.total


def test_cancel_stops_between_points_and_restores_the_plan() -> None:
    session, data = fixture_session("conv_bn")
    plan = session.stamp(Plan({"conv1": LayerPlan("unstructured", "l1", sparsity=0.5)}))
    session.apply(plan)
    before = snapshot(session.model)
    cancel = threading.Event()
    run = SensitivityRun(session, data, levels=DEFAULT_LEVELS)
    for seen, _ in enumerate(run.points(cancel), start=1):
        if seen == 5:
            cancel.set()
    result = run.result()
    assert not result.complete
    assert sum(len(v) for v in result.points.values()) == 5
    assert session.plan == plan
    assert_bit_identical(before, snapshot(session.model))


def test_a_failing_run_restores_the_plan() -> None:
    session, data = fixture_session("mlp")
    before = snapshot(session.model)
    broken = TensorData(data.x[:, :3], data.y, data.task, "wrong width")
    with pytest.raises(RuntimeError):
        SensitivityRun(session, broken, levels=LEVELS).run()
    assert_bit_identical(before, snapshot(session.model))


# -- refusals --------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    ({"granularity": "2:4"}, "fixed sparsity"),
    ({"levels": ()}, "at least one"),
    ({"levels": (0.5, 1.5)}, "between 0 and 1"),
    ({"levels": (float("nan"),)}, "between 0 and 1"),
    ({"criterion": "bn_scale"}, "cannot rank single weights"),
    ({"criterion": "bn_scale", "granularity": "filter"}, "nothing to analyse.*BatchNorm"),
])
def test_bad_settings_are_refused_before_running(kwargs: dict[str, object], message: str) -> None:
    session, data = fixture_session("mlp")
    with pytest.raises(PlanError, match=message):
        SensitivityRun(session, data, **kwargs)  # type: ignore[arg-type]


# -- the result --------------------------------------------------------------------------------
def test_ranking_puts_robust_items_first() -> None:
    session, data = fixture_session("conv_bn")
    result = SensitivityRun(session, data, levels=LEVELS).run()
    rows = result.ranking(tolerance=0.05)
    assert len(rows) == len(result.items)
    keys = [(-r["safe_sparsity"], r["mean_drop"]) for r in rows]
    assert keys == sorted(keys)
    for row in rows:
        curve = result.curve(row["item"])
        within = [p.level for p in curve if result.drop(p) <= 0.05]
        assert row["safe_sparsity"] <= max(within)
    as_json = result.to_dict()
    assert set(as_json["layers"]) == {i.key for i in result.items}
    first = as_json["layers"]["conv1"]["points"][0]
    assert set(first) >= {"sparsity", "metric", "loss"}


def test_the_cache_is_keyed_by_the_weights_values_not_only_the_architecture() -> None:
    entry = ENTRIES["conv_bn"]
    data = entry.data(samples=40)
    cache = SensitivityCache()
    first = PruningSession(entry.build(seed=0), entry.example(4), calibration=data)
    other = PruningSession(entry.build(seed=1), entry.example(4), calibration=data)
    assert first.fingerprint == other.fingerprint
    assert first.weights_key() != other.weights_key()
    SensitivityRun(first, data, levels=LEVELS, cache=cache).run()
    run = SensitivityRun(other, data, levels=LEVELS, cache=cache)
    result = run.run()
    assert run.evaluated > 1
    assert fields(result) == fields(SensitivityRun(other, data, levels=LEVELS).run())
