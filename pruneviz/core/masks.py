"""Keep-masks computed from scores and decisions: pure functions, True = kept.

Nothing here touches a module. The session writes `w = w0 * mask` with what these
return, as torch's `prune.py` keeps computing a mask apart from applying it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def ascending_rank(scores: Tensor) -> Tensor:
    """Each entry's position when `scores` (any shape) are sorted ascending, stably:
    among equal scores the earlier (flat order) one ranks lower. Same shape as `scores`."""
    flat = scores.reshape(-1)
    order = torch.argsort(flat, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return rank.view(scores.shape)


def keep_ranked(rank: Tensor, pruned: int) -> Tensor:
    """Keep what ranks at `pruned` or above: the `pruned` lowest-ranked entries go."""
    return rank >= pruned


def lowest_pruned(scores: Tensor, pruned: int) -> Tensor:
    """Keep-mask of `scores` (any shape): the `pruned` lowest-scoring entries go, among
    equal scores the earlier (flat order) first — what `keep_ranked(ascending_rank(s), k)`
    gives, found by selection (`kthvalue`) instead of a sort, with no index per entry."""
    flat = scores.reshape(-1)
    count = flat.numel()
    if pruned <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if pruned >= count:
        return torch.zeros_like(scores, dtype=torch.bool)
    boundary = torch.kthvalue(flat, pruned).values  # the highest score that goes
    keep = flat > boundary
    ties_going = pruned - int(torch.count_nonzero(flat < boundary))
    ties = torch.nonzero(flat == boundary).reshape(-1)
    if ties_going < len(ties):
        keep[ties[ties_going:]] = True  # equal to the boundary: the earlier ones go
    return keep.view(scores.shape)


def row_counts(scores: Tensor, pruned: int) -> Tensor:
    """How many entries each row of `scores` (rows, width) loses when `pruned` go in all and
    each row is ranked on its own: `pruned // rows` from every row, and one more from the
    `pruned % rows` rows whose next-lowest score is lowest (ties: the earlier row)."""
    rows, width = scores.shape
    pruned = max(0, min(pruned, rows * width))
    base, extra = divmod(pruned, rows)
    counts = torch.full((rows,), base, dtype=torch.long, device=scores.device)
    if extra:
        following = torch.kthvalue(scores, base + 1, dim=1).values
        counts[torch.argsort(following, stable=True)[:extra]] += 1
    return counts


def lowest_pruned_per_row(scores: Tensor, counts: Tensor) -> Tensor:
    """Keep-mask of `scores` (rows, width): row i loses its `counts[i]` lowest entries,
    among equal scores the earlier first — `lowest_pruned` done in every row, by selection
    (`kthvalue`), not by a sort."""
    width = scores.shape[1]
    keep = torch.ones_like(scores, dtype=torch.bool)
    for k in sorted(set(counts.tolist())):
        if k <= 0:
            continue
        chosen = counts == k
        if k >= width:
            keep[chosen] = False
            continue
        part = scores[chosen]
        boundary = torch.kthvalue(part, k, dim=1, keepdim=True).values
        below = part < boundary
        equal = part == boundary
        ties_going = k - below.sum(dim=1, keepdim=True)
        keep[chosen] = ~(below | (equal & (equal.cumsum(dim=1) <= ties_going)))
    return keep


def n_m_keep(scores: Tensor, n: int, m: int, dim: int) -> Tensor:
    """N:M keep-mask: in every run of `m` consecutive entries along `dim`, the `n`
    highest-scoring are kept. `scores.shape[dim]` must be a multiple of `m`."""
    moved = scores.movedim(dim, -1)
    runs = moved.reshape(-1, m)
    keep_idx = runs.topk(n, dim=1).indices
    keep = torch.zeros_like(runs, dtype=torch.bool).scatter_(1, keep_idx, True)
    return keep.view(moved.shape).movedim(-1, dim).contiguous()


def member_keep(
    keep_root: Tensor, idxs: Sequence[int] | Tensor, root: Sequence[int] | Tensor, size: int
) -> Tensor:
    """Keep-vector over a coupled member's own `size` channels: its channel `idxs[i]` goes
    when the group's root channel `root[i]` does (`keep_root` False)."""
    on = keep_root.device
    keep = torch.ones(size, dtype=torch.bool, device=on)
    going = ~keep_root[torch.as_tensor(root, dtype=torch.long, device=on)]
    if bool(going.any()):
        keep[torch.as_tensor(idxs, dtype=torch.long, device=on)[going]] = False
    return keep


def combine(masks: Sequence[Tensor | None]) -> Tensor | None:
    """The AND of the given masks (None entries ignored); None if there are none."""
    result: Tensor | None = None
    for mask in masks:
        if mask is not None:
            result = mask if result is None else result & mask
    return result
