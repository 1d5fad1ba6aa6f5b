"""BlockSwap: which whole blocks of a session's model are replaced by the identity.

Holds the modules taken out, puts them back on request, and can show the original
model for a moment (weights restored, blocks back) to measure something on it. Which
blocks are removable, and how important they are, comes from `blocks.find_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from pruneviz.core.blocks import Block, find_blocks, set_module
from pruneviz.core.groups import inside
from pruneviz.core.layers import PrunableLayer
from pruneviz.errors import PlanError


class BlockSwap:
    """The removed blocks of `model`, whose prunable `layers` and touched `params` (with
    their kept `originals`) the session shares; `data` measures the blocks (None: none).
    `before_write` is called before the model is changed for a moment (the session stops
    background passes over its model there)."""

    def __init__(
        self, model: nn.Module, layers: Sequence[PrunableLayer], params: Mapping[str, Tensor],
        originals: Mapping[str, Tensor], data: Tensor | None,
        before_write: Callable[[], None] = lambda: None,
    ) -> None:
        self._model = model
        self._before_write = before_write
        self._layers = layers
        self._params = params
        self._originals = originals
        self._data = data
        self._blocks: list[Block] | None = None
        self._removed: dict[str, nn.Module] = {}  # block name -> the module taken out

    def blocks(self) -> list[Block]:
        """Removable blocks and layers, least important first (measured once on the
        data with the original weights)."""
        if self._blocks is None:
            if self._data is None:
                self._blocks = []
            else:
                with self.originals_in_place():
                    self._blocks = find_blocks(self._model, self._data)
        return self._blocks

    def removed(self) -> list[str]:
        """Blocks replaced by the identity now."""
        return sorted(self._removed)

    def removes(self, layer: PrunableLayer) -> bool:
        """Whether `layer` is inside a removed block."""
        return any(inside(layer.module_name, block) for block in self._removed)

    def check(self, blocks: Sequence[str]) -> None:
        """Raise PlanError unless every one of `blocks` is removable."""
        if not blocks:
            return
        known = {b.name for b in self.blocks()}
        unknown = [b for b in blocks if b not in known]
        if unknown:
            raise PlanError(
                f"cannot remove {', '.join(map(repr, unknown))}: only modules whose output "
                "has the shape of their input can be replaced by the identity; removable "
                f"here: {', '.join(sorted(known)) or 'none'}"
            )

    def whole_state(self, state: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """`state` (the model's state dict now) completed with the removed blocks' tensors,
        their original values: a state dict of the whole architecture, which the model
        with every block in place loads. Nothing is copied."""
        whole = dict(state)
        for name, module in self._removed.items():
            for key, tensor in module.state_dict(prefix=name + ".", keep_vars=True).items():
                original = self._originals.get(key)
                whole[key] = (original if original is not None else tensor).detach()
        return whole

    def swap(self, wanted: set[str]) -> list[str]:
        """Replace `wanted` blocks by the identity and put the others back; returns the
        prunable layers inside blocks that changed."""
        changed = set(self._removed) ^ wanted
        if not changed:
            return []
        for name in sorted(set(self._removed) - wanted):
            set_module(self._model, name, self._removed.pop(name))
        for name in sorted(wanted - set(self._removed)):
            self._removed[name] = set_module(self._model, name, nn.Identity())
        return [layer.name for layer in self._layers
                if any(inside(layer.module_name, block) for block in changed)]

    @contextmanager
    def originals_in_place(self) -> Iterator[None]:
        """Temporarily the original model: weights restored, removed blocks put back.
        Nothing else may run the model meanwhile: `before_write` is called first."""
        self._before_write()
        current = {n: self._params[n].detach().clone() for n in self._originals}
        removed = dict(self._removed)
        try:
            for name, module in removed.items():
                set_module(self._model, name, module)
            with torch.no_grad():
                for n, original in self._originals.items():
                    self._params[n].copy_(original)
            yield
        finally:
            with torch.no_grad():
                for n, value in current.items():
                    self._params[n].copy_(value)
            for name in removed:
                set_module(self._model, name, nn.Identity())
