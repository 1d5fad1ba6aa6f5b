"""The pure mask functions (core/masks) on tiny tensors, each expected mask written out
(as torch's test/nn/test_pruning.py does): True = kept."""

from __future__ import annotations

import torch
from torch import nn

from pruneviz.core.criteria import structures_for
from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import find_prunable_layers
from pruneviz.core.masks import (
    ascending_rank,
    combine,
    keep_ranked,
    lowest_pruned,
    member_keep,
    n_m_keep,
)

T, F = True, False
W = torch.tensor([[0.5, -2.0, 1.0, -0.1],
                  [3.0, 0.2, -1.0, 4.0]])

def test_unstructured_by_magnitude() -> None:
    # the three smallest |w| are 0.1, 0.2 and 0.5
    assert lowest_pruned(W.abs(), 3).tolist() == [[F, T, T, F],
                                                   [T, F, T, T]]

def test_unstructured_ties_go_in_flat_order() -> None:
    scores = torch.tensor([[1.0, 1.0, 2.0, 1.0],
                           [1.0, 0.5, 1.0, 3.0]])
    # 0.5 first, then the 1.0s from the first one on
    assert lowest_pruned(scores, 3).tolist() == [[F, F, T, T],
                                                  [T, F, T, T]]
    assert ascending_rank(scores).tolist() == [[1, 2, 6, 3],
                                               [4, 0, 5, 7]]

def test_unstructured_zero_and_all() -> None:
    assert lowest_pruned(W.abs(), 0).tolist() == [[T, T, T, T], [T, T, T, T]]
    assert lowest_pruned(W.abs(), 8).tolist() == [[F, F, F, F], [F, F, F, F]]
    assert lowest_pruned(W.abs(), 20).tolist() == [[F, F, F, F], [F, F, F, F]]

def test_selection_prunes_what_a_full_sort_prunes_ties_included() -> None:
    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (7, 9), generator=gen).float()  # many ties
    rank = ascending_rank(scores)
    for pruned in range(scores.numel() + 1):
        assert torch.equal(lowest_pruned(scores, pruned), keep_ranked(rank, pruned)), pruned


def test_big_score_tables_select_as_small_ones_sort() -> None:
    from pruneviz.core import scores as score_tables

    gen = torch.Generator().manual_seed(1)
    values = torch.randint(0, 50, (score_tables.SMALL_TABLE + 1000,), generator=gen).float()
    big = score_tables.ScoreTable(values)
    small = score_tables.ScoreTable(values[:5000])
    for table in (big, small):
        rank = ascending_rank(table.scores)
        for pruned in (0, 1, 17, table.count // 2, table.count - 1, table.count):
            assert torch.equal(table.keep(pruned), keep_ranked(rank, pruned))
            if pruned < table.count:
                assert table.threshold_for(pruned) == float(table.sorted[pruned])
        assert table.count_below(25.0) == int((table.scores < 25.0).sum())


def test_big_tables_select_between_quantile_marks_as_a_full_sort_does() -> None:
    """From its second selection a big table looks between two of its quantile marks:
    the same masks and thresholds as a full sort, at block edges, among many ties and
    in a table of zeros (weights pruned before)."""
    from pruneviz.core import scores as score_tables

    gen = torch.Generator().manual_seed(2)
    step = score_tables.QUANTILE_STEP
    for values in (torch.randint(0, 50, (score_tables.SMALL_TABLE + 3000,), generator=gen),
                   torch.rand(3 * score_tables.SMALL_TABLE, generator=gen),
                   torch.zeros(score_tables.SMALL_TABLE + 1)):
        table = score_tables.ScoreTable(values.float())
        rank = ascending_rank(table.scores)
        ranked = torch.sort(table.scores).values
        table.keep(1)  # the first selection; the next ones use the marks
        for pruned in (1, step - 1, step, step + 1, 5 * step + 7, table.count - step,
                       table.count - 1):
            assert torch.equal(table.keep(pruned), keep_ranked(rank, pruned)), pruned
            assert table.threshold_for(pruned) == float(ranked[pruned])
        assert table.nbytes > table.scores.numel() * 4  # the marks are counted


def test_keep_ranked_is_rank_at_or_above_count() -> None:
    rank = torch.tensor([3, 0, 2, 1])
    assert keep_ranked(rank, 2).tolist() == [T, F, T, F]

def test_two_of_four_keeps_the_two_largest_in_each_run() -> None:
    assert n_m_keep(W.abs(), 2, 4, dim=1).tolist() == [[F, T, T, F],
                                                       [T, F, F, T]]

def test_two_of_four_along_the_first_dimension() -> None:
    scores = W.abs().t().contiguous()  # 4x2: runs go down the columns
    assert n_m_keep(scores, 2, 4, dim=0).tolist() == [[F, T],
                                                      [T, F],
                                                      [T, F],
                                                      [F, T]]

def test_filter_and_channel_masks_of_a_linear_layer() -> None:
    model = nn.Sequential(nn.Linear(4, 2))
    (layer,) = find_prunable_layers(model, torch.zeros(1, 4))
    filters = structures_for(layer, Granularity.FILTER)
    channels = structures_for(layer, Granularity.CHANNEL)
    # drop output row 0
    assert filters.expand(torch.tensor([F, T])).tolist() == [[F, F, F, F],
                                                             [T, T, T, T]]
    # drop input columns 1 and 3
    assert channels.expand(torch.tensor([T, F, T, F])).tolist() == [
        [T, F, T, F],
        [T, F, T, F]]

def test_member_keep_maps_root_channels_to_the_members_own() -> None:
    # the member's channels 4 and 1 go with root channels 0 and 1; 0, 2, 3 are not coupled
    keep = member_keep(torch.tensor([F, T]), idxs=(4, 1), root=(0, 1), size=5)
    assert keep.tolist() == [T, T, T, T, F]

def test_combine_ands_and_skips_none() -> None:
    a, b = torch.tensor([T, T, F]), torch.tensor([T, F, T])
    assert combine([]) is None
    assert combine([None, None]) is None
    result = combine([a, None, b])
    assert result is not None
    assert result.tolist() == [T, F, F]
