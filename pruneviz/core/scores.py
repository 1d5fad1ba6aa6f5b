"""Score tables: one layer's (or coupled group's) structure scores, sorted once.

Pure: building a table reads tensors and returns new ones. Deciding how many structures
to prune (`decide`) and turning that into masks (`masks`) both work from these tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneviz.core.criteria import Structures


@dataclass(frozen=True)
class ScoreTable:
    """Scores of one layer's structures under one criterion, precomputed for cheap re-thresholds.

    `order` lists structure ids lowest score first and `sorted` their scores; `rank` gives
    every weight the ascending rank of its structure, so that pruning the `k` lowest is the
    single comparison `rank >= k`; `zero_prefix[k]` counts the originally-zero weights in
    the `k` lowest structures, so counts after pruning need no pass over the weights.
    """

    scores: Tensor
    order: Tensor
    sorted: Tensor
    struct_rank: Tensor
    rank: Tensor
    zero_prefix: Tensor
    size: int
    count: int

    @classmethod
    def build(cls, scores: Tensor, structures: Structures, weight: Tensor) -> ScoreTable:
        """Sort `scores` once and derive the rank and zero-count tables."""
        order = torch.argsort(scores, stable=True)
        struct_rank = torch.empty_like(order)
        struct_rank[order] = torch.arange(len(order), device=order.device)
        if structures.index is None:
            rank = struct_rank.to(torch.int32).view(structures.shape)
        else:
            rank = struct_rank.to(torch.int32)[structures.index]
        zeros = structures.vectors(weight == 0).sum(dim=1)[order]
        zero_prefix = torch.cat([torch.zeros(1, dtype=torch.int64, device=zeros.device),
                                 torch.cumsum(zeros, 0)])
        return cls(
            scores, order, scores[order], struct_rank, rank, zero_prefix, structures.size,
            len(order),
        )

    @classmethod
    def of_scores(cls, scores: Tensor) -> ScoreTable:
        """A table over plain scores (coupled groups): no weight-level rank."""
        order = torch.argsort(scores, stable=True)
        struct_rank = torch.empty_like(order)
        struct_rank[order] = torch.arange(len(order), device=order.device)
        zero_prefix = torch.zeros(len(order) + 1, dtype=torch.int64, device=scores.device)
        return cls(scores, order, scores[order], struct_rank, struct_rank, zero_prefix, 1,
                   len(order))

    def count_below(self, threshold: float) -> int:
        """How many structures score strictly below `threshold`."""
        # Compare exactly, as if in float64: rounding the threshold to the scores' dtype
        # may land on a score, which `side` then counts on the correct side.
        value = torch.tensor([threshold], dtype=self.sorted.dtype, device=self.sorted.device)
        side = "right" if float(value) < threshold else "left"
        return int(torch.searchsorted(self.sorted, value, side=side)[0])

    def threshold_for(self, pruned: int) -> float:
        """The threshold t with `pruned` structures scoring below it (ties aside)."""
        if pruned <= 0:
            return self.sorted[0].item() if self.count else 0.0
        if pruned >= self.count:
            return math.nextafter(self.sorted[-1].item(), math.inf)
        return float(self.sorted[pruned].item())

    def nonzero_after(self, pruned: int) -> int:
        """Non-zero weights left when the `pruned` lowest structures are zeroed."""
        kept = (self.count - pruned) * self.size
        zeros_kept = int(self.zero_prefix[-1].item()) - int(self.zero_prefix[pruned].item())
        return kept - zeros_kept


def per_root(scores: Tensor, idxs: Sequence[int], root: Sequence[int], size: int) -> Tensor:
    """A coupled member's channel scores carried to the group's `size` root channels
    (float64): `scores[idxs[i]]` goes to root channel `root[i]`, several averaged."""
    on = scores.device
    roots = torch.tensor(root, dtype=torch.long, device=on)
    total = torch.zeros(size, dtype=torch.float64, device=on).index_add_(
        0, roots, scores.double()[torch.tensor(idxs, dtype=torch.long, device=on)])
    counts = torch.zeros(size, dtype=torch.float64, device=on).index_add_(
        0, roots, torch.ones(len(roots), dtype=torch.float64, device=on))
    return total / counts.clamp(min=1)


def combine(parts: Sequence[Tensor]) -> Tensor:
    """One group score per root channel from its members' (`per_root`) scores.

    One member: its own scores, in its own units. Several (a residual sum of several
    branches): each member's scores divided by its mean, so that no layer dominates by
    scale, then averaged — as Torch-Pruning's group importance does.
    """
    if len(parts) == 1:
        return parts[0]
    return torch.stack([p / (float(p.mean()) or 1.0) for p in parts]).mean(0)


def relative(table: ScoreTable) -> ScoreTable:
    """`table`'s scores divided by their mean: comparable across layers of other scales."""
    return ScoreTable.of_scores(table.scores / (float(table.scores.mean()) or 1.0))
