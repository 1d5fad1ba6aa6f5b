"""writes: keep-masks written bit for bit, whole or only where they changed."""

from __future__ import annotations

import pytest
import torch
from fixtures.models import assert_bit_identical

from pruneviz.core.writes import Keep, rewrite, write


def _random_keep(shape: tuple[int, ...], gen: torch.Generator, finer: int | None) -> Keep:
    along = {d: torch.rand(shape[d], generator=gen) > 0.4
             for d in range(min(2, len(shape))) if torch.rand(1, generator=gen) > 0.3}
    if finer is None:
        return Keep(along)
    mask = torch.rand(shape, generator=gen) > 0.5
    return Keep(along, [(("finer", finer), lambda: mask)])


def _expected(src: torch.Tensor, keep: Keep) -> torch.Tensor:
    mask = keep.mask(src.shape) if keep.along or keep.finer else torch.ones_like(
        src, dtype=torch.bool)
    return torch.where(mask, src, torch.zeros(()))


@pytest.mark.parametrize("shape", [(7, 5), (6, 4, 3, 3), (9,), (4, 2, 5)])
def test_rewrite_from_any_keep_to_any_other_writes_what_a_whole_write_does(
        shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(len(shape))
    src = torch.randn(shape, generator=gen)
    src.view(-1)[::5] = -0.0  # kept -0.0 stays -0.0; pruned entries become +0.0
    dst = src.clone()
    old: Keep | None = None
    for step in range(40):
        new = _random_keep(shape, gen, finer=step % 3 if step % 4 == 0 else None)
        rewrite(dst, src, old, new)
        assert_bit_identical({"w": dst}, {"w": _expected(src, new)})
        old = new


def test_a_whole_write_makes_no_weight_sized_mask_for_dimension_keeps() -> None:
    src = torch.randn(8, 6, 3, 3)
    keep = Keep({0: torch.arange(8) % 2 == 0, 1: torch.arange(6) < 4})
    factors = keep.factors(src.dim())
    assert [tuple(f.shape) for f in factors] == [(8, 1, 1, 1), (1, 6, 1, 1)]
    dst = torch.empty_like(src)
    write(dst, src, keep)
    assert torch.equal(dst, src * keep.mask(src.shape))


def test_rewrite_touches_only_the_rows_and_columns_whose_keep_changed() -> None:
    src = torch.randn(10, 8)
    dst = src.clone()
    before = Keep({0: torch.ones(10, dtype=torch.bool), 1: torch.ones(8, dtype=torch.bool)})
    rows = torch.ones(10, dtype=torch.bool)
    rows[3] = False
    cols = torch.ones(8, dtype=torch.bool)
    cols[5] = False
    sentinel = 1234.5  # an entry outside the changed row and column: never rewritten
    dst[0, 0] = sentinel
    rewrite(dst, src, before, Keep({0: rows, 1: cols}))
    assert dst[0, 0] == sentinel
    assert (dst[3] == 0).all()
    assert (dst[:, 5] == 0).all()
    assert torch.equal(dst[1:3, :5], src[1:3, :5])
