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


__all__ = ["NORMS", "PER_CHANNEL", "TOGETHER", "approximation_note", "norm_channels",
           "norm_unsupported", "parameter_handler", "parameter_owner",
           "WIDTH_ATTRIBUTES", "follow_width", "remove_attention_width",
           "remove_parameter_channels", "shared_norm_reason", "shared_norms",
           "shares_statistics"]
