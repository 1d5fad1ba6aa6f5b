"""Score tables: one layer's (or coupled group's) structure scores, and selection in them.

Pure: building a table reads tensors and returns new ones. Deciding how many structures
to prune (`decide`) and turning that into masks (`masks`) both work from these tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from pruneviz.core.criteria import Structures
from pruneviz.core.masks import lowest_pruned, lowest_pruned_per_row, row_counts
from pruneviz.errors import PlanError

# Tables over at most this many structures keep their sort; larger ones (single weights
# of a big layer) keep only their scores, and select with `kthvalue` when asked.
SMALL_TABLE = 1 << 16
# A big table asked for a second selection sorts its scores once and keeps every
# QUANTILE_STEP-th sorted score: a later selection then looks for the k-th lowest score
# among the few between two marks (one pass over the scores) instead of in all of them.
QUANTILE_STEP = 1024


class ScoreTable:
    """Scores of one layer's structures (or a coupled group's units) under one criterion.

    Holds one score per structure and nothing per weight: `keep(k)` (the `k` lowest go,
    among equal scores the earlier first), `count_below` and `threshold_for` select in
    the scores when asked. A table over single weights costs the scores alone (one value
    per weight, in the scores' dtype); a table over filters or channels also keeps its
    sorted order, which is small. `weight` (the original weight the scores rank, shared,
    not copied) lets `nonzero_after` count what pruning leaves.

    With `rows` (single weights of a criterion that compares within output rows, see
    criteria.Comparison), the scores are `rows` equal rows in flat order and `keep(k)`
    prunes k // rows of every row (the remainder from the rows whose next score is
    lowest); such a table has no one threshold (`count_below`, `threshold_for` refuse).
    """

    def __init__(self, scores: Tensor, size: int = 1, weight: Tensor | None = None,
                 rows: int | None = None) -> None:
        self.scores = scores.reshape(-1)
        self.size = size
        self.count = len(self.scores)
        if rows is not None and (rows < 1 or self.count % rows):
            raise ValueError(f"{self.count} scores do not make {rows} equal rows")
        self.rows = rows
        self._weight = weight
        self._order: Tensor | None = None
        self._last: tuple[int, Tensor] | None = None  # a small table's last keep-vector
        self._marks: Tensor | None = None  # a big table's every QUANTILE_STEP-th score
        self._selections = 0

    @classmethod
    def build(cls, scores: Tensor, structures: Structures, weight: Tensor,
              rows: int | None = None) -> ScoreTable:
        """The table of a layer's `scores`, one per structure of `structures` (ranked
        within each of `rows` output rows, if given)."""
        return cls(scores, structures.size, weight if structures.size == 1 else None, rows)

    @classmethod
    def of_scores(cls, scores: Tensor) -> ScoreTable:
        """A table over plain scores (coupled groups)."""
        return cls(scores)

    @property
    def nbytes(self) -> int:
        """Bytes the table holds (what a score cache counts)."""
        extra = sum(t.numel() * t.element_size() for t in (self._order, self._marks)
                    if t is not None)
        return self.scores.numel() * self.scores.element_size() + extra

    @property
    def order(self) -> Tensor:
        """Structure ids, lowest score first (ties: the earlier id first)."""
        if self._order is not None:
            return self._order
        order = torch.argsort(self.scores, stable=True)
        if self.count <= SMALL_TABLE:
            self._order = order
        return order

    @property
    def sorted(self) -> Tensor:
        """The scores in ascending order (computed on demand for big tables)."""
        return self.scores[self.order]

    def keep(self, pruned: int) -> Tensor:
        """Keep-vector over the structures: the `pruned` lowest-scoring go, ties earlier
        first (True = kept); in a table of rows, within each row (see the class)."""
        if self.rows is not None:
            if self._last is not None and self._last[0] == pruned:
                return self._last[1]
            by_row = self.scores.view(self.rows, -1)
            keep = lowest_pruned_per_row(by_row, row_counts(by_row, pruned)).reshape(-1)
            if self.count <= SMALL_TABLE:
                self._last = (pruned, keep)
            return keep
        if self.count <= SMALL_TABLE:
            if self._last is not None and self._last[0] == pruned:
                return self._last[1]
            keep = torch.ones(self.count, dtype=torch.bool, device=self.scores.device)
            keep[self.order[:max(pruned, 0)]] = False
            self._last = (pruned, keep)  # small: asked again for every coupled member
            return keep
        if pruned <= 0 or pruned >= self.count:
            return lowest_pruned(self.scores, pruned)
        boundary, below, equal = self._select(pruned - 1)  # the highest score that goes
        keep = self.scores > boundary
        ties_going = pruned - below
        if ties_going < equal:  # equal to the boundary: the earlier ones go
            keep[torch.nonzero(self.scores == boundary).reshape(-1)[ties_going:]] = True
        return keep

    def kth(self, k: int) -> float:
        """The `k`-th lowest score (0-based)."""
        if self.count <= SMALL_TABLE:
            return float(self.scores[self.order[k]].item())
        return float(self._select(k)[0].item())

    def _select(self, k: int) -> tuple[Tensor, int, int]:
        """A big table's `k`-th lowest score (0-based, a 0-d tensor), with how many
        scores are below it and equal to it: by `kthvalue` the first time, from then on
        among the scores between two quantile marks (see QUANTILE_STEP)."""
        self._selections += 1
        scores = self.scores
        if self._marks is None and self._selections < 2:
            value = torch.kthvalue(scores, k + 1).values
            return (value, int(torch.count_nonzero(scores < value)),
                    int(torch.count_nonzero(scores == value)))
        if self._marks is None:
            self._marks = torch.sort(scores).values[::QUANTILE_STEP].clone()
        block = k // QUANTILE_STEP
        low = self._marks[block]  # sorted[block * STEP] <= sorted[k] <= the next mark
        below_low = int(torch.count_nonzero(scores < low))
        inside = scores >= low
        if block + 1 < len(self._marks):
            inside &= scores <= self._marks[block + 1]
        candidates = scores[inside]
        value = torch.kthvalue(candidates, k - below_low + 1).values
        return (value, below_low + int(torch.count_nonzero(candidates < value)),
                int(torch.count_nonzero(candidates == value)))

    def _one_ranking(self, what: str) -> None:
        if self.rows is not None:
            raise PlanError(
                f"this criterion compares weights within each output row, so {what}; give "
                "the layer a sparsity instead"
            )

    def count_below(self, threshold: float) -> int:
        """How many structures score strictly below `threshold`."""
        self._one_ranking("one score threshold for the whole layer does not apply")
        # Compare exactly, as if in float64: rounding the threshold to the scores' dtype
        # may land on a score, which is then counted on the correct side.
        value = torch.tensor(threshold, dtype=self.scores.dtype, device=self.scores.device)
        if float(value) < threshold:
            return int((self.scores <= value).sum())
        return int((self.scores < value).sum())

    def threshold_for(self, pruned: int) -> float:
        """The threshold t with `pruned` structures scoring below it (ties aside)."""
        self._one_ranking("the layer has no one score threshold")
        if pruned <= 0:
            return self.kth(0) if self.count else 0.0
        if pruned >= self.count:
            return math.nextafter(float(self.scores.max().item()), math.inf)
        return self.kth(pruned)

    def nonzero_after(self, pruned: int) -> int:
        """Non-zero weights left when the `pruned` lowest structures are zeroed (tables of
        single weights built with their weight)."""
        if self._weight is None:
            raise ValueError("this table does not know its weights")
        kept = self.keep(pruned) & (self._weight.reshape(-1) != 0)
        return int(kept.sum())


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
    return ScoreTable(table.scores / (float(table.scores.mean()) or 1.0), table.size)
