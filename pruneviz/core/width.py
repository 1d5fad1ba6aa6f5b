"""The width of a residual stream: the members of a coupled group that are not weight
layers — norms, embeddings and bare parameters.

A transformer's hidden size runs from its embeddings (word, position and token-type
`nn.Embedding` columns, a patch-embedding conv's filters, a class token and position
table held as bare `nn.Parameter`s) through every block's residual adds, LayerNorms and
readers; a ConvNeXt block's width through its depthwise conv, channels-last LayerNorm and
layer-scale vector. Torch-Pruning's DependencyGraph traces all of them as one group
(its EmbeddingPruner, LayernormPruner and ParameterPruner, which prunes the last
non-singleton dimension of a parameter it finds outside the modules it knows); this
module turns those items into members the session can mask and slim.py can cut.

Masking a channel zeroes its embedding columns, parameter entries and norm affine
entries, as well as its writers' rows and readers' columns. A norm with statistics per
channel (BatchNorm, InstanceNorm) then computes exactly what its slimmed form computes.
A norm that normalises the channels together (LayerNorm, RMSNorm, a one-group GroupNorm)
does not: a masked channel is a 0 that still counts in the mean and variance (or mean
square) of the kept ones, and a removed one does not. Such a group is prunable, but the
slimmed model is by design not the masked one: `Group.shared_norms` names those norms,
and slimming reports each one in `SlimResult.differs`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from pruneviz.core.attention import SlimAttention

# Statistics per channel: masking computes what removing computes.
PER_CHANNEL = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.InstanceNorm1d,
               nn.InstanceNorm2d, nn.InstanceNorm3d, nn.PReLU)
# Statistics over all channels together.
TOGETHER = (nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)
NORMS = PER_CHANNEL + TOGETHER


def norm_channels(norm: nn.Module) -> int:
    """How many channels `norm` normalises together (for the notes)."""
    if isinstance(norm, nn.LayerNorm | nn.RMSNorm):
        return int(norm.normalized_shape[-1])
    if isinstance(norm, nn.GroupNorm):
        return int(norm.num_channels)
    weight = getattr(norm, "weight", None)
    return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) else 0


def shares_statistics(norm: nn.Module) -> bool:
    """Whether `norm` computes its statistics over several of the group's channels
    together (LayerNorm, RMSNorm, a GroupNorm with one group; a module whose class name
    ends in "RMSNorm", as Llama's)."""
    if isinstance(norm, nn.GroupNorm):
        return norm.num_groups == 1
    return isinstance(norm, nn.LayerNorm | nn.RMSNorm) or \
        type(norm).__name__.endswith("RMSNorm")


def norm_unsupported(name: str, norm: nn.Module) -> str | None:
    """Why the channels `norm` reads cannot be removed as whole channels, if they cannot."""
    if isinstance(norm, nn.LayerNorm | nn.RMSNorm) and len(norm.normalized_shape) != 1:
        return (f"{name} ({type(norm).__name__}) normalises over the shape "
                f"{tuple(norm.normalized_shape)}; pruneviz removes channels of a norm over "
                "one (the last) dimension only")
    if isinstance(norm, nn.GroupNorm) and norm.num_groups not in (1, norm.num_channels):
        return (f"{name} (GroupNorm) normalises {norm.num_channels} channels in "
                f"{norm.num_groups} groups: removing channels would need the same number "
                "from every group, which pruneviz does not do yet; prune these layers "
                "unstructured")
    return None


def shared_norm_reason(name: str, channels: int, removed: int) -> str:
    """Why the slimmed model differs from the masked one at norm `name`."""
    return (f"{name} normalises over all {channels} channels; after removal its statistics "
            f"use {channels - removed}")


def approximation_note(layers: list[str], norms: tuple[str, ...]) -> str:
    """The plan-time note for a pruned group with `norms` that share statistics."""
    shown = ", ".join(norms[:3]) + (f" and {len(norms) - 3} more" if len(norms) > 3 else "")
    first = ", ".join(layers[:2]) + (" …" if len(layers) > 2 else "")
    return (f"{first}: the hidden width runs through {shown}, which normalise all its "
            "channels together; a masked channel still counts in their statistics, a "
            "removed one does not. The live figures are the masked model's; the slimmed "
            "model computes something slightly different (Deploy and prune --slim measure it on "
            "its own)")


def parameter_owner(name: str) -> tuple[str, str]:
    """A parameter's module name and attribute ("" for the model itself)."""
    owner, _, attr = name.rpartition(".")
    return owner, attr


def remove_parameter_channels(owner: nn.Module, idxs: list[int], *, attr: str,
                              dim: int) -> None:
    """Remove entries `idxs` along `dim` of `owner`'s parameter `attr` (a class token, a
    position table, a layer scale, an RMSNorm's weight); an nn.RMSNorm's normalized_shape
    follows."""
    param = getattr(owner, attr)
    size = param.shape[dim]
    keep = torch.tensor(sorted(set(range(size)) - set(idxs)), dtype=torch.long,
                        device=param.device)
    with torch.no_grad():
        smaller = param.detach().index_select(dim, keep).contiguous()
    setattr(owner, attr, nn.Parameter(smaller, requires_grad=param.requires_grad))
    if isinstance(owner, nn.RMSNorm) and attr == "weight":
        owner.normalized_shape = (len(keep),)


def parameter_handler(name: str, dim: int) -> Any:
    """slim's function for a bare parameter member (called with its owner module)."""
    return functools.partial(remove_parameter_channels, attr=parameter_owner(name)[1],
                             dim=dim)


def shared_norms(members: Iterable[tuple[str, str]], modules: Mapping[str, nn.Module]
                 ) -> tuple[str, ...]:
    """The norms among a group's (module, kind) members that share statistics across its
    channels: "norm" members, and the owners of "param" members (Llama's RMSNorm is a
    module Torch-Pruning does not know: its weight is a bare parameter to it)."""
    found: dict[str, None] = {}
    for module, kind in members:
        name = module if kind == "norm" else parameter_owner(module)[0] if kind == "param" \
            else None
        if name is not None and name in modules and shares_statistics(modules[name]):
            found.setdefault(name, None)
    return tuple(found)


class KeptStatisticsNorm(nn.Module):
    """A norm over the last dimension whose statistics use the kept channels only: the
    reference the slimmed model is checked against when it removes channels that a
    LayerNorm or RMSNorm normalises together with kept ones.

    Why this is exactly what the slimmed model computes: a removed channel is 0 in the
    masked model everywhere it runs (its writers' rows, biases, embedding columns and
    norm affine entries are zeroed, its readers' columns too), so the masked model and
    the slimmed one see the same values on the kept channels. They part only inside a
    shared norm, whose mean and variance (mean square for RMSNorm) the masked model takes
    over all channels, zeros included, and the slimmed norm over the kept ones. This
    module takes them over the kept ones, with the same eps and the kept affine entries,
    and returns 0 on the removed channels (what their zeroed affine entries return, and
    what the slimmed model no longer has). A masked model with its shared norms replaced
    by this must therefore match the slimmed model within float rounding; anything more
    is a wrong slim.
    """

    def __init__(self, kind: str, keep: list[int], eps: float | None,
                 weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.kind, self.eps = kind, eps  # kind: "layer" or "rms"
        self.keep = torch.tensor(keep, dtype=torch.long)
        self.weight, self.bias = weight, bias  # the masked norm's own tensors
        # Forward calls: 0 after a run means the parent read the norm's tensors itself
        # (a fused kernel) and this reference was not used.
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        keep = self.keep.to(x.device)
        kept = x.index_select(-1, keep)
        weight = None if self.weight is None else self.weight.index_select(-1, keep)
        bias = None if self.bias is None else self.bias.index_select(-1, keep)
        if self.kind == "layer":
            y = nn.functional.layer_norm(kept, (len(keep),), weight, bias,
                                         1e-5 if self.eps is None else self.eps)
        else:
            eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
            y = kept * torch.rsqrt(kept.pow(2).mean(-1, keepdim=True) + eps)
            y = y if weight is None else weight * y
        return x.new_zeros(x.shape).index_copy(-1, keep, y.to(x.dtype))


def kept_statistics_norm(name: str, norm: nn.Module, keep: list[int]
                         ) -> KeptStatisticsNorm | str:
    """`norm` (a shared norm of the masked model) computing its statistics over channels
    `keep` only, or why that cannot be built (then the slim is not checked).

    Recognised: nn.LayerNorm and nn.RMSNorm over one dimension, with their own forward;
    a module whose class name ends in "RMSNorm" (as shares_statistics) holding a 1-D
    `weight` and an eps (`variance_epsilon` or `eps`), Llama's `weight * x * rsqrt(
    mean(x^2) + eps)`. Each is confirmed on a random input with every channel kept: the
    reference must reproduce the norm itself (a Gemma-style `(1 + weight)` does not)."""
    weight = getattr(norm, "weight", None)
    weight = weight if isinstance(weight, torch.Tensor) else None
    bias = getattr(norm, "bias", None)
    bias = bias if isinstance(bias, torch.Tensor) else None
    eps: float | None
    if type(norm).forward is nn.LayerNorm.forward and isinstance(norm, nn.LayerNorm) and \
            len(norm.normalized_shape) == 1:
        kind, eps, size = "layer", norm.eps, int(norm.normalized_shape[0])
    elif type(norm).forward is nn.RMSNorm.forward and isinstance(norm, nn.RMSNorm) and \
            len(norm.normalized_shape) == 1:
        kind, eps, size, bias = "rms", norm.eps, int(norm.normalized_shape[0]), None
    elif type(norm).__name__.endswith("RMSNorm") and weight is not None and \
            weight.dim() == 1 and bias is None and isinstance(
                eps_attr := getattr(norm, "variance_epsilon", getattr(norm, "eps", None)),
                float):
        kind, eps, size = "rms", eps_attr, int(weight.shape[0])
    else:
        return (f"not checked: pruneviz builds no kept-statistics reference for {name} "
                f"({type(norm).__name__})")
    full = KeptStatisticsNorm(kind, list(range(size)), eps, weight, bias)
    probe = torch.randn(2, 3, size, generator=torch.Generator().manual_seed(0))
    if weight is not None:
        probe = probe.to(device=weight.device, dtype=weight.dtype)
    with torch.inference_mode():
        try:
            same = torch.allclose(full(probe), norm(probe), rtol=1e-4, atol=1e-5)
        except RuntimeError:
            same = False
    if not same:
        return (f"not checked: {name} ({type(norm).__name__}) does not compute the "
                f"{'LayerNorm' if kind == 'layer' else 'RMSNorm'} formula pruneviz's "
                "kept-statistics reference uses")
    return KeptStatisticsNorm(kind, keep, eps, weight, bias)



def remove_attention_width(module: nn.Module, idxs: list[int]) -> nn.Module:
    """An attention layer without hidden channels `idxs`: the columns of its query, key and
    value projections and the rows of its output projection (nn.MultiheadAttention ties
    its width to its heads' size, so it becomes a SlimAttention first: same heads)."""
    attention = SlimAttention.from_pruned(module, []) \
        if isinstance(module, nn.MultiheadAttention) else module
    if not isinstance(attention, SlimAttention) or \
            not attention.kdim == attention.vdim == attention.embed_dim:
        raise ValueError("only self-attention (query, key and value of the same width) can "
                         "lose hidden channels")
    keep = torch.tensor(sorted(set(range(attention.embed_dim)) - set(idxs)), dtype=torch.long,
                        device=attention.out_proj.weight.device)
    with torch.no_grad():
        for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
            proj.weight = nn.Parameter(proj.weight.detach()[:, keep].contiguous())
            proj.in_features = len(keep)
        out = attention.out_proj
        out.weight = nn.Parameter(out.weight.detach()[keep].contiguous())
        if out.bias is not None:
            out.bias = nn.Parameter(out.bias.detach()[keep].contiguous())
        out.out_features = len(keep)
    attention.embed_dim = attention.kdim = attention.vdim = len(keep)
    return attention



# Attributes a model's forward may read its hidden width from (torchvision's ViT reshapes
# its patches with `self.hidden_dim`).
WIDTH_ATTRIBUTES = ("hidden_dim", "hidden_size", "embed_dim", "d_model", "num_features")


def follow_width(owners: Iterable[nn.Module], old: int, new: int) -> list[str]:
    """Set the width attributes (WIDTH_ATTRIBUTES) of `owners` that hold `old` to `new`;
    returns what it changed, as "Class.attribute"."""
    changed = []
    for owner in owners:
        for attr in WIDTH_ATTRIBUTES:
            value = getattr(owner, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value == old:
                setattr(owner, attr, new)
                changed.append(f"{type(owner).__name__}.{attr}")
    return changed


__all__ = ["NORMS", "PER_CHANNEL", "TOGETHER", "KeptStatisticsNorm", "approximation_note",
           "kept_statistics_norm", "norm_channels",
           "norm_unsupported", "parameter_handler", "parameter_owner",
           "WIDTH_ATTRIBUTES", "follow_width", "remove_attention_width",
           "remove_parameter_channels", "shared_norm_reason", "shared_norms",
           "shares_statistics"]
