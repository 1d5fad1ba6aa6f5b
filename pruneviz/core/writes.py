"""Writing keep-masks into parameters: `w = w0 * keep`, bit for bit, and only what changed.

A `Keep` is one tensor's keep-mask in factors: keep vectors along whole dimensions (the
filters of a layer, the input channels of an ungrouped one) and, for anything finer
(single weights, N:M, a grouped layer's channels), one weight-shaped mask built on
demand. `write` writes a whole tensor; `rewrite` goes from one `Keep` to the next by
rewriting only the slices (rows, columns) whose keep changed, so moving a filter slider
costs what the moved filters hold, not the layer.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

# Going from one keep to the next rewrites changed slices while they are less than this
# share of the tensor; beyond it, one pass over the whole tensor is cheaper.
SLICE_SHARE = 0.5

_SAME_SIZE_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@dataclass(frozen=True, eq=False)
class Keep:
    """A tensor's keep-mask (True = kept) as the AND of its factors.

    `along[d]` keeps entries by their index along dimension `d`; `finer` are the
    weight-shaped masks, each under the key of what decided it (compared, never the
    masks themselves: equal keys give the same mask)."""

    along: Mapping[int, Tensor] = field(default_factory=dict)
    finer: Sequence[tuple[Hashable, Callable[[], Tensor]]] = ()

    @property
    def finer_keys(self) -> tuple[Hashable, ...]:
        """What decides the finer masks."""
        return tuple(key for key, _ in self.finer)

    def factors(self, ndim: int) -> list[Tensor]:
        """Every factor in a shape that broadcasts over an `ndim`-dimensional tensor."""
        views = [v.view([-1 if i == d else 1 for i in range(ndim)])
                 for d, v in sorted(self.along.items())]
        return views + [build() for _, build in self.finer]

    def mask(self, shape: Sequence[int]) -> Tensor:
        """The whole boolean mask, materialised (what fine-tuning holds)."""
        factors = self.factors(len(shape))
        if not factors:
            raise ValueError("an empty Keep has no mask: everything is kept")
        result = factors[0].expand(*shape)
        for factor in factors[1:]:
            result = result & factor
        return result.contiguous()


def restore(dst: Tensor, src: Tensor) -> None:
    """dst = src (everything kept)."""
    dst.copy_(src)


def write(dst: Tensor, src: Tensor, keep: Keep) -> None:
    """dst = src where `keep`, +0.0 elsewhere — bit-exact (kept values, -0.0 included,
    copied bit for bit): one integer multiply of the tensors' bits per factor, with no
    weight-sized mask made for the factors along dimensions."""
    _multiply(dst, src, keep.factors(src.dim()))


def rewrite(dst: Tensor, src: Tensor, old: Keep | None, new: Keep) -> None:
    """Go from `old` (None: everything kept) to `new`, rewriting only the slices along
    each dimension whose keep changed; the whole tensor when a finer mask changed or
    the slices would cover much of it. The result is `write(dst, src, new)`'s."""
    old = old if old is not None else Keep()
    if dst.dim() <= 1 or old.finer_keys != new.finer_keys:  # a vector: one pass is cheapest
        write(dst, src, new)
        return
    changed: dict[int, Tensor] = {}
    for dim in sorted(set(old.along) | set(new.along)):
        index = _differing(old.along.get(dim), new.along.get(dim))
        if len(index):
            changed[dim] = index
    if sum(len(index) / dst.shape[dim] for dim, index in changed.items()) >= SLICE_SHARE:
        write(dst, src, new)
        return
    factors = new.factors(dst.dim())
    for dim, index in changed.items():
        after = new.along.get(dim)
        if after is not None:  # slices pruned now hold zeros only: no need to read them
            going = ~after[index]
            dst.index_fill_(dim, index[going], 0.0)
            index = index[~going]
        if len(index):
            part = src.index_select(dim, index)
            _multiply(part, part, [f.index_select(dim, index) if f.shape[dim] > 1 else f
                                   for f in factors])
            dst.index_copy_(dim, index, part)


def _differing(before: Tensor | None, after: Tensor | None) -> Tensor:
    """Positions where two keep vectors differ (None: all kept; not both None)."""
    if before is None:
        assert after is not None
        return torch.nonzero(~after).reshape(-1)
    differs = ~before if after is None else before != after
    return torch.nonzero(differs).reshape(-1)


def _multiply(dst: Tensor, src: Tensor, factors: list[Tensor]) -> None:
    """dst = src * (AND of `factors`), as +0.0 where not kept, bit-exact."""
    if not factors:
        dst.copy_(src)
        return
    bits = _SAME_SIZE_INT.get(src.element_size())
    if bits is None or not (dst.is_contiguous() and src.is_contiguous()) or src.is_complex():
        keep = factors[0]
        for factor in factors[1:]:
            keep = keep & factor
        dst.copy_(torch.where(keep, src, torch.zeros((), dtype=src.dtype)))
        return
    out = dst.view(bits)
    torch.mul(src.view(bits), factors[0], out=out)
    for factor in factors[1:]:
        out.mul_(factor)


__all__ = ["SLICE_SHARE", "Keep", "restore", "rewrite", "write"]
