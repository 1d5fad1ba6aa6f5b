"""Whole blocks and layers that can be removed: replaced by the identity.

A module can be dropped when its input and output have the same shape — a residual
block with an identity shortcut, or a layer that maps C channels to C channels — and
the network then still runs. Its importance is how much it changes what flows through
it: the mean relative change ||f(x) - x|| / ||x|| on calibration data (the smaller,
the less the network loses without it; cf. Veit et al. 2016 on dropping residual blocks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from pruneviz.core.layers import eval_mode

_NOT_BLOCKS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm,
               nn.Dropout, nn.Identity)


@dataclass(frozen=True)
class Block:
    """A removable module: name, type, parameter count and importance (lower: safer)."""

    name: str
    type: str
    params: int
    importance: float


def find_blocks(model: nn.Module, data: Tensor, max_samples: int = 256) -> list[Block]:
    """Modules with parameters whose output has the shape of their input, ranked by the
    relative change they make on `data` (least important first)."""
    changes: dict[str, list[float]] = {}
    handles = []

    def hook(name: str) -> Any:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if (len(inputs) == 1 and isinstance(inputs[0], Tensor)
                    and isinstance(output, Tensor) and output.shape == inputs[0].shape):
                x = inputs[0].detach().flatten(1)
                change = (output.detach().flatten(1) - x).norm(dim=1)
                scale = x.norm(dim=1).clamp(min=1e-12)
                changes.setdefault(name, []).append(float((change / scale).mean()))

        return record

    for name, module in model.named_modules():
        if name and not isinstance(module, _NOT_BLOCKS) and \
                any(True for _ in module.parameters()):
            handles.append(module.register_forward_hook(hook(name)))
    try:
        with eval_mode(model), torch.no_grad():
            model(data[:max_samples])
    finally:
        for handle in handles:
            handle.remove()
    modules = dict(model.named_modules())
    blocks = [
        Block(name, type(modules[name]).__name__,
              sum(p.numel() for p in modules[name].parameters()), sum(v) / len(v))
        for name, v in changes.items()
    ]
    return sorted(blocks, key=lambda b: b.importance)


def set_module(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    """Put `module` at dotted path `name` in `model`; returns the module it replaced."""
    parent_name, _, attr = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    old = getattr(parent, attr)
    setattr(parent, attr, module)
    assert isinstance(old, nn.Module)
    return old
