"""Multi-head attention with some heads removed.

`nn.MultiheadAttention` ties the size of each head to the embedding (head_dim =
embed_dim / num_heads), so it cannot hold fewer heads of the same size. `SlimAttention`
computes what it computes with any number of heads: separate q/k/v projections from the
embedding to `num_heads * head_dim` features, scaled dot-product attention per head, and
an output projection back to the embedding. `from_pruned` builds one from a
MultiheadAttention and the heads to remove.

Its call signature and return value are MultiheadAttention's (query, key, value,
key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal), so modules
that call one — nn.TransformerEncoderLayer among them — call the other the same way. A 3-D
attn_mask written for the original heads is narrowed to the kept ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class SlimAttention(nn.Module):
    """What nn.MultiheadAttention computes, with `num_heads` heads of `head_dim` features."""

    # Read by nn.TransformerEncoderLayer's fast-path checks: with no in_proj_bias it takes
    # its ordinary path, which calls this module like any attention module.
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(
        self, embed_dim: int, num_heads: int, head_dim: int, *, kdim: int | None = None,
        vdim: int | None = None, in_bias: bool = True, out_bias: bool = True,
        batch_first: bool = False, dropout: float = 0.0,
        kept_heads: tuple[int, ...] | None = None, original_heads: int | None = None,
    ) -> None:
        super().__init__()
        if num_heads < 1 or head_dim < 1:
            raise ValueError(f"need at least one head of at least one feature, got "
                             f"{num_heads} heads of {head_dim}")
        inner = num_heads * head_dim
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, head_dim
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self.batch_first, self.dropout = batch_first, dropout
        self.kept_heads = tuple(kept_heads) if kept_heads is not None else tuple(range(num_heads))
        self.original_heads = original_heads or num_heads
        if len(self.kept_heads) != num_heads:
            raise ValueError(f"{len(self.kept_heads)} kept heads listed for {num_heads} heads")
        self.q_proj = nn.Linear(embed_dim, inner, bias=in_bias)
        self.k_proj = nn.Linear(self.kdim, inner, bias=in_bias)
        self.v_proj = nn.Linear(self.vdim, inner, bias=in_bias)
        self.out_proj = nn.Linear(inner, embed_dim, bias=out_bias)

    @classmethod
    def from_pruned(cls, mha: nn.MultiheadAttention, heads: list[int]) -> SlimAttention:
        """A SlimAttention holding `mha`'s weights for every head not in `heads`."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("heads of a MultiheadAttention built with add_bias_kv or "
                             "add_zero_attn cannot be removed")
        d, e = mha.head_dim, mha.embed_dim
        kept = [h for h in range(mha.num_heads) if h not in set(heads)]
        if not kept:
            raise ValueError("cannot remove every head of an attention layer")
        rows = torch.tensor([h * d + j for h in kept for j in range(d)], dtype=torch.long)
        slim = cls(e, len(kept), d, kdim=mha.kdim, vdim=mha.vdim,
                   in_bias=mha.in_proj_bias is not None, out_bias=mha.out_proj.bias is not None,
                   batch_first=mha.batch_first, dropout=mha.dropout,
                   kept_heads=tuple(kept), original_heads=mha.num_heads)
        if mha._qkv_same_embed_dim:
            assert mha.in_proj_weight is not None
            weights = list(torch.split(mha.in_proj_weight.detach(), e))
        else:
            weights = [mha.q_proj_weight.detach(), mha.k_proj_weight.detach(),
                       mha.v_proj_weight.detach()]
        biases = (list(torch.split(mha.in_proj_bias.detach(), e)) if mha.in_proj_bias is not None
                  else [None] * 3)
        with torch.no_grad():
            for proj, w, b in zip((slim.q_proj, slim.k_proj, slim.v_proj), weights, biases,
                                  strict=True):
                proj.weight.copy_(w[rows])
                if b is not None and proj.bias is not None:
                    proj.bias.copy_(b[rows])
            slim.out_proj.weight.copy_(mha.out_proj.weight.detach()[:, rows])
            if mha.out_proj.bias is not None and slim.out_proj.bias is not None:
                slim.out_proj.bias.copy_(mha.out_proj.bias.detach())
        slim.train(mha.training)
        return slim.to(mha.out_proj.weight.device, mha.out_proj.weight.dtype)

    def forward(
        self, query: Tensor, key: Tensor, value: Tensor,
        key_padding_mask: Tensor | None = None, need_weights: bool = True,
        attn_mask: Tensor | None = None, average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        unbatched = query.dim() == 2
        q, k, v = (self._batch_major(t, unbatched) for t in (query, key, value))
        n, length, _ = q.shape
        source = k.shape[1]
        h, d = self.num_heads, self.head_dim
        qh = self.q_proj(q).view(n, length, h, d).transpose(1, 2)
        kh = self.k_proj(k).view(n, source, h, d).transpose(1, 2)
        vh = self.v_proj(v).view(n, source, h, d).transpose(1, 2)
        scores = (qh * (1.0 / math.sqrt(d))) @ kh.transpose(-2, -1)  # (n, h, L, S)
        mask = self._additive_mask(attn_mask, key_padding_mask, is_causal, unbatched, n,
                                   length, source, scores.dtype)
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        out = (weights @ vh).transpose(1, 2).reshape(n, length, h * d)
        out = self.out_proj(out)
        if unbatched:
            out = out.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        if not need_weights:
            return out, None
        returned = weights.mean(dim=1) if average_attn_weights else weights
        return out, (returned.squeeze(0) if unbatched else returned)

    def _batch_major(self, t: Tensor, unbatched: bool) -> Tensor:
        if unbatched:
            return t.unsqueeze(0)
        return t if self.batch_first else t.transpose(0, 1)

    def _additive_mask(
        self, attn_mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool,
        unbatched: bool, n: int, length: int, source: int, dtype: torch.dtype,
    ) -> Tensor | None:
        """attn_mask and key_padding_mask as one float mask broadcasting to (n, h, L, S)."""
        mask = None
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(length, source, dtype=torch.bool).triu(1)
        if attn_mask is not None:
            mask = _as_float(attn_mask, dtype)
            if mask.dim() == 3:  # (n * heads, L, S) for the original heads
                heads = mask.shape[0] // n
                mask = mask.view(n, heads, length, source)
                if heads == self.original_heads and heads != self.num_heads:
                    mask = mask[:, list(self.kept_heads)]
        if key_padding_mask is not None:
            pad = _as_float(key_padding_mask, dtype)
            pad = pad.view(1 if unbatched else n, 1, 1, source)
            mask = pad if mask is None else mask + pad
        return mask


def _as_float(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """A boolean mask (True: do not attend) as -inf/0; a float mask as it is."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
            mask, float("-inf"))
    return mask.to(dtype)


__all__ = ["SlimAttention"]
