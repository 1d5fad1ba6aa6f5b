"""SlimAttention computes what nn.MultiheadAttention computes, with fewer heads.

With no head removed it must agree with MultiheadAttention itself on every calling
convention (batch first or not, unbatched, separate key/value widths, boolean and float
masks, per-head masks, weights returned or not). With heads removed it must agree with a
MultiheadAttention whose removed heads are zeroed, which is what masking does.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from pruneviz.core.attention import SlimAttention
from pruneviz.output.model_files import apply_card, architecture_card

TOLERANCE = 1e-5


def _mha(
    batch_first: bool, kdim: int | None, heads: int = 4, seed: int = 0
) -> nn.MultiheadAttention:
    torch.manual_seed(seed)
    mha = nn.MultiheadAttention(8, heads, batch_first=batch_first, kdim=kdim, vdim=kdim)
    with torch.no_grad():  # non-zero biases, so that they are checked too
        for p in (mha.in_proj_bias, mha.out_proj.bias):
            assert p is not None
            p.normal_()
    return mha.eval()


def _inputs(batch_first: bool, kdim: int | None) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 5, 8, generator=g)
    kv = torch.randn(2, 7, kdim or 8, generator=g)
    return (q, kv) if batch_first else (q.transpose(0, 1), kv.transpose(0, 1))


def _masks() -> dict[str, dict[str, Any]]:
    g = torch.Generator().manual_seed(2)
    allowed = torch.rand(5, 7, generator=g) > 0.3
    allowed[:, 0] = True  # every query attends to something
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, 5:] = True
    per_head = torch.rand(2 * 4, 5, 7, generator=g) > 0.3
    per_head[:, :, 0] = False
    return {
        "none": {},
        "bool attn_mask": {"attn_mask": ~allowed},
        "float attn_mask": {"attn_mask": torch.randn(5, 7, generator=g)},
        "per-head attn_mask": {"attn_mask": per_head},
        "key_padding_mask": {"key_padding_mask": padding},
        "both, no weights": {"attn_mask": ~allowed, "key_padding_mask": padding,
                             "need_weights": False},
        "weights per head": {"average_attn_weights": False},
    }


def _close(a: Tensor | None, b: Tensor | None) -> None:
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert a.shape == b.shape
        assert float((a - b).abs().max()) <= TOLERANCE * max(1.0, float(a.abs().max()))


def _zero_heads(mha: nn.MultiheadAttention, heads: list[int]) -> nn.MultiheadAttention:
    """What masking does: the heads' q/k/v rows (and biases) and out_proj columns zeroed."""
    masked = _mha(mha.batch_first, None if mha._qkv_same_embed_dim else mha.kdim,
                  mha.num_heads)
    masked.load_state_dict(mha.state_dict())
    d, e = mha.head_dim, mha.embed_dim
    with torch.no_grad():
        for h in heads:
            cols = slice(h * d, h * d + d)
            if masked._qkv_same_embed_dim:
                assert masked.in_proj_weight is not None
                for block in range(3):
                    masked.in_proj_weight[block * e + h * d: block * e + h * d + d] = 0
            else:
                for w in (masked.q_proj_weight, masked.k_proj_weight, masked.v_proj_weight):
                    w[cols] = 0
            assert masked.in_proj_bias is not None
            for block in range(3):
                masked.in_proj_bias[block * e + h * d: block * e + h * d + d] = 0
            masked.out_proj.weight[:, cols] = 0
    return masked


@pytest.mark.parametrize("mask", list(_masks()))
@pytest.mark.parametrize("kdim", [None, 6])
@pytest.mark.parametrize("batch_first", [True, False])
def test_with_every_head_it_equals_multihead_attention(
    batch_first: bool, kdim: int | None, mask: str
) -> None:
    mha = _mha(batch_first, kdim)
    slim = SlimAttention.from_pruned(mha, [])
    q, kv = _inputs(batch_first, kdim)
    kwargs = _masks()[mask]
    with torch.inference_mode():
        expected, expected_weights = mha(q, kv, kv, **kwargs)
        got, weights = slim(q, kv, kv, **kwargs)
    _close(expected, got)
    _close(expected_weights, weights)


@pytest.mark.parametrize("removed", [[0], [1, 3], [0, 1, 2]])
@pytest.mark.parametrize("kdim", [None, 6])
def test_removing_heads_equals_zeroing_them(kdim: int | None, removed: list[int]) -> None:
    mha = _mha(True, kdim)
    slim = SlimAttention.from_pruned(mha, removed)
    assert slim.num_heads == 4 - len(removed)
    assert slim.q_proj.out_features == 2 * slim.num_heads
    masked = _zero_heads(mha, removed)
    q, kv = _inputs(True, kdim)
    for mask in ("none", "per-head attn_mask", "both, no weights"):
        kwargs = {k: v for k, v in _masks()[mask].items() if k != "average_attn_weights"}
        kwargs["need_weights"] = False  # weights differ: a zeroed head's are uniform
        with torch.inference_mode():
            _close(masked(q, kv, kv, **kwargs)[0], slim(q, kv, kv, **kwargs)[0])


def test_unbatched_input() -> None:
    mha = _mha(True, None)
    slim = SlimAttention.from_pruned(mha, [2])
    masked = _zero_heads(mha, [2])
    x = torch.randn(5, 8)
    with torch.inference_mode():
        _close(masked(x, x, x, need_weights=False)[0], slim(x, x, x, need_weights=False)[0])
        weights = slim(x, x, x)[1]
        assert weights is not None
        assert weights.shape == (5, 5)


def test_every_head_cannot_be_removed() -> None:
    with pytest.raises(ValueError, match="every head"):
        SlimAttention.from_pruned(_mha(True, None), [0, 1, 2, 3])


def test_bias_kv_is_refused() -> None:
    mha = nn.MultiheadAttention(8, 2, add_bias_kv=True)
    with pytest.raises(ValueError, match="add_bias_kv"):
        SlimAttention.from_pruned(mha, [0])


class _Holder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _mha(True, 6)

    def forward(self, x: Tensor, kv: Tensor) -> Tensor:
        out: Tensor = self.attn(x, kv, kv)[0]
        return out


def test_card_rebuilds_the_slimmed_attention() -> None:
    base = _Holder().eval()
    slimmed = _Holder().eval()
    slimmed.load_state_dict(base.state_dict())
    slimmed.attn = SlimAttention.from_pruned(base.attn, [0, 2])  # type: ignore[assignment]
    card = json.loads(json.dumps(architecture_card("test:holder", base, slimmed)))
    assert set(card["modules"]) == {"attn"}  # its inner Linears come with it
    rebuilt = apply_card(_Holder(), card)
    rebuilt.load_state_dict(slimmed.state_dict(), strict=True)
    q, kv = _inputs(True, 6)
    with torch.inference_mode():
        assert torch.equal(rebuilt(q, kv), slimmed(q, kv))
    assert rebuilt.attn.kept_heads == (1, 3)
