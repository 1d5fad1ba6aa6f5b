"""The pure decisions (core/decide) and score tables (core/scores) on tiny tensors, each
expected count and mask written out: True = kept."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from pruneviz.core.coupling import Group, Member
from pruneviz.core.criteria import Structures
from pruneviz.core.decide import (
    decide_group,
    decide_layer,
    decide_plan,
    global_counts,
    global_pruned,
)
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.core.scores import ScoreTable, combine, per_root
from pruneviz.errors import PlanError

T, F = True, False
U = Granularity.UNSTRUCTURED
W = torch.tensor([[0.5, -2.0, 1.0, -0.1],
                  [3.0, 0.2, -1.0, 4.0]])


def unstructured_table(weight: Tensor) -> ScoreTable:
    """|w| scores of every weight, as the l1 criterion gives for single weights."""
    structures = Structures(U, tuple(weight.shape), weight.numel(), 1, None)
    return ScoreTable.build(weight.abs().reshape(-1), structures, weight)


def test_sparsity_prunes_the_lowest_magnitudes() -> None:
    table = unstructured_table(W)
    decision = decide_layer(table, U, "l1", sparsity=0.375, threshold=None)
    assert decision.pruned == 3  # 0.1, 0.2, 0.5
    assert table.keep(decision.pruned).view(2, 4).tolist() == [[F, T, T, F],
                                                                 [T, F, T, T]]
    assert decision.threshold == 1.0  # the lowest kept score
    assert table.nonzero_after(decision.pruned) == 5


def test_ties_are_pruned_in_flat_order() -> None:
    table = unstructured_table(torch.tensor([[1.0, -1.0, 2.0, 1.0],
                                             [1.0, 0.5, -1.0, 3.0]]))
    decision = decide_layer(table, U, "l1", sparsity=0.375, threshold=None)
    assert table.keep(decision.pruned).view(2, 4).tolist() == [[F, F, T, T],
                                                                 [T, F, T, T]]


def test_zero_and_full_sparsity() -> None:
    table = unstructured_table(W)
    none = decide_layer(table, U, "l1", sparsity=0.0, threshold=None)
    assert none.pruned == 0
    assert table.keep(0).view(2, 4).tolist() == [[T, T, T, T], [T, T, T, T]]
    assert none.threshold == pytest.approx(0.1)
    every = decide_layer(table, U, "l1", sparsity=1.0, threshold=None)
    assert every.pruned == 8
    assert table.keep(8).view(2, 4).tolist() == [[F, F, F, F], [F, F, F, F]]
    assert every.threshold == math.nextafter(4.0, math.inf)
    assert table.nonzero_after(8) == 0


def test_threshold_prunes_strictly_below() -> None:
    table = unstructured_table(W)
    decision = decide_layer(table, U, "l1", sparsity=None, threshold=1.0)
    assert decision.pruned == 3  # 0.1, 0.2, 0.5; the two 1.0s stay
    assert decision.threshold == 1.0
    assert table.keep(decision.pruned).view(2, 4).tolist() == [[F, T, T, F],
                                                                 [T, F, T, T]]
    assert decide_layer(table, U, "l1", sparsity=None, threshold=1.5).pruned == 5


def test_zeros_left_after_pruning_are_counted() -> None:
    weight = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    table = unstructured_table(weight)
    assert [table.nonzero_after(k) for k in range(5)] == [2, 2, 2, 1, 0]


def test_n_m_has_no_count_and_no_threshold() -> None:
    decision = decide_layer(unstructured_table(W), Granularity.NM_2_4, "l1", None, None)
    assert decision.pruned == -1
    assert decision.threshold is None


def test_equal_decisions_compare_equal_whatever_the_table() -> None:
    a = decide_layer(unstructured_table(W), U, "l1", 0.5, None)
    b = decide_layer(unstructured_table(W * 2), U, "l1", 0.5, None)
    assert a == b
    assert a != decide_layer(unstructured_table(W), U, "l1", 0.25, None)


def _member(layer: str, idxs: tuple[int, ...], root: tuple[int, ...]) -> Member:
    return Member(module=layer, kind="out", idxs=idxs, root=root, layer=layer, handler=None)


def test_group_scores_combine_members_relative_to_their_mean() -> None:
    a = per_root(torch.tensor([1.0, 2.0, 3.0]), (0, 1, 2), (0, 1, 2), 3)
    b = per_root(torch.tensor([10.0, 10.0, 40.0]), (0, 1, 2), (0, 1, 2), 3)
    # a / 2 = [.5, 1, 1.5]; b / 20 = [.5, .5, 2]; their mean:
    assert combine([a, b]).tolist() == [0.5, 0.75, 1.75]
    assert combine([a]).tolist() == [1.0, 2.0, 3.0]  # one member: its own units


def test_per_root_averages_channels_sharing_a_root() -> None:
    # member channels 0 and 2 both go with root 1; channel 1 with root 0
    assert per_root(torch.tensor([2.0, 5.0, 4.0]), (0, 1, 2), (1, 0, 1), 2).tolist() == [5.0, 3.0]


def test_group_decision_prunes_the_lowest_combined_unit() -> None:
    group = Group(0, "a", 3, (_member("a", (0, 1, 2), (0, 1, 2)),
                              _member("b", (0, 1, 2), (0, 1, 2))), None)
    combined = combine([per_root(torch.tensor([1.0, 2.0, 3.0]), (0, 1, 2), (0, 1, 2), 3),
                        per_root(torch.tensor([10.0, 1.0, 40.0]), (0, 1, 2), (0, 1, 2), 3)])
    table = ScoreTable.of_scores(combined.float())
    decision, note = decide_group(group, table, Granularity.FILTER, "l1", 1 / 3, None)
    assert note is None
    assert decision.pruned == 1
    assert table.keep(1).tolist() == [T, F, T]  # b's tiny unit 1 wins
    # all of them: the last unit stays, and a note says why
    decision, note = decide_group(group, table, Granularity.FILTER, "l1", 1.0, None)
    assert decision.pruned == 2
    assert note == "a, b: kept 1 of 3 channels — removing all would cut the network in two"
    assert table.keep(decision.pruned).tolist() == [F, F, T]


def two_tables() -> list[ScoreTable]:
    return [ScoreTable.of_scores(torch.tensor([4.0, 1.0])),
            ScoreTable.of_scores(torch.tensor([2.0, 5.0, 3.0]))]


def test_global_ranking_by_weights() -> None:
    # one structure of the first holds 2 weights, of the second 1: 7 weights in all.
    # Ascending: 1 (first, 2 weights), 2, 3 (second), 4 (first), 5: half of 7 is 4 weights
    assert global_counts(two_tables(), [2, 1], 0.5, None) == [1, 2]
    assert global_counts(two_tables(), [2, 1], 0.0, None) == [0, 0]
    assert global_counts(two_tables(), [2, 1], 1.0, None) == [2, 3]


def test_global_ranking_with_a_per_layer_cap_moves_on() -> None:
    # at most half of each: 1 of the first, 1 of the second; 3 weights, not 4
    assert global_counts(two_tables(), [2, 1], 0.5, 0.5) == [1, 1]
    # capped at 2/3 everything is asked for, but the first gives 1 of 2, the second 2 of 3
    assert global_counts(two_tables(), [1, 1], 1.0, 2 / 3) == [1, 2]


def test_global_ranking_keeps_one_unit_of_groups() -> None:
    assert global_counts(two_tables(), [1, 1], 1.0, None, [False, True]) == [2, 2]


def test_global_section_threshold_and_cap() -> None:
    tables, sizes = two_tables(), [1, 1]
    assert global_pruned(GlobalPlan(threshold=3.5), tables, sizes, [F, F]) == [1, 2]
    capped = GlobalPlan(threshold=3.5, max_layer_sparsity=0.5)
    assert global_pruned(capped, tables, sizes, [F, F]) == [1, 1]
    assert global_pruned(GlobalPlan(sparsity=0.4), tables, sizes, [F, F]) == [1, 1]


def test_global_structured_ranks_relative_to_each_layers_mean() -> None:
    tables = [ScoreTable.of_scores(torch.tensor([100.0, 300.0])),  # mean 200: .5, 1.5
              ScoreTable.of_scores(torch.tensor([1.0, 3.0, 2.0]))]  # mean 2: .5, 1.5, 1
    section = GlobalPlan(Granularity.FILTER, sparsity=0.6)
    # relative scores ascending: .5 (first), .5 (second), 1 (second), ...: 3 of 5
    assert global_pruned(section, tables, [1, 1], [F, F]) == [1, 2]


class FakeSource:
    """Two uncoupled layers and one coupled pair, with fixed tables."""

    def __init__(self) -> None:
        self.layer_names = ["a", "b", "c"]
        self.output_layers: set[str] = set()
        self.group = Group(0, "b", 2, (_member("b", (0, 1), (0, 1)),
                                       _member("c", (0, 1), (0, 1))), None)

    def layer_table(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        return unstructured_table(W if layer == "a" else W * 10)

    def group_for(self, layer: str, granularity: Granularity) -> Group | None:
        return self.group if layer in ("b", "c") and granularity.structured else None

    def group_table(self, group: int, criterion: str, side: Granularity) -> ScoreTable:
        return ScoreTable.of_scores(torch.tensor([2.0, 1.0]))

    def unit_weights(self, unit: str | Group, granularity: Granularity) -> int:
        return 4 if isinstance(unit, Group) else 1


def test_plan_decisions_per_layer_group_and_global() -> None:
    plan = Plan({"b": LayerPlan(Granularity.FILTER, sparsity=0.5)},
                global_=GlobalPlan(sparsity=0.25))
    decided = decide_plan(FakeSource(), plan)
    assert set(decided.groups) == {0}
    assert decided.groups[0].pruned == 1
    # the global section ranks the layers without an entry of their own: a and c
    assert set(decided.layers) == {"a", "c"}
    assert decided.layers["a"].pruned + decided.layers["c"].pruned == 4
    assert decided.notes == []


def test_coupled_layers_with_different_entries_are_refused() -> None:
    plan = Plan({"b": LayerPlan(Granularity.FILTER, sparsity=0.5),
                 "c": LayerPlan(Granularity.FILTER, sparsity=0.0)})
    with pytest.raises(PlanError, match="share channels"):
        decide_plan(FakeSource(), plan)
    same = Plan({"b": LayerPlan(Granularity.FILTER, sparsity=0.5),
                 "c": LayerPlan(Granularity.FILTER, sparsity=0.5)})
    assert decide_plan(FakeSource(), same).groups[0].pruned == 1
