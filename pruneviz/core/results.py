"""Per-layer results: what a plan left of one prunable layer (counts, sparsity, threshold).

Pure: a result is computed from the layer, its current weight (counted: one pass over a
changed layer) and the decisions that prune it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from pruneviz.core.decide import Decision
from pruneviz.core.granularity import Granularity
from pruneviz.core.groups import CoupledGroups
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.plan import LayerPlan


@dataclass(frozen=True)
class LayerResult:
    """The state of one prunable layer after a plan was applied."""

    name: str
    type: str
    granularity: str | None
    criterion: str | None
    params: int
    nonzero: int
    sparsity: float
    threshold: float | None
    structures: int
    structures_pruned: int
    group: int | None = None  # the coupled group its output channels belong to

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (the CLI's `layers` entries)."""
        return dict(self.__dict__)


def removed_result(layer: PrunableLayer, group: int | None) -> LayerResult:
    """A layer inside a block replaced by the identity: all of it gone."""
    return LayerResult(
        name=layer.name, type=layer.type, granularity="removed", criterion=None,
        params=layer.params, nonzero=0, sparsity=1.0, threshold=None,
        structures=1, structures_pruned=1, group=group,
    )


def deciding_group(
    coupled: CoupledGroups, layer: str, decisions: Mapping[int, Decision],
    entry: LayerPlan | None,
) -> tuple[Granularity, Decision] | None:
    """The group decision that describes `layer` (with the side it prunes), if any: the
    one its own plan `entry` made, else the one pruning its filters, else its inputs."""
    found = [(gid, gran) for gid, _, gran in coupled.weight_sources.get(layer, ())
             if gid in decisions]
    if not found:
        return None
    own = (coupled.group_of(layer, entry.granularity)
           if entry is not None and entry.granularity.structured else None)
    own_gid = own.id if own is not None else None
    found.sort(key=lambda c: (c[0] != own_gid, c[1] is not Granularity.FILTER))
    gid, gran = found[0]
    return gran, decisions[gid]


def layer_result(
    layer: PrunableLayer, weight: Tensor, decision: Decision | None,
    coupled: tuple[Granularity, Decision] | None, *, nm: tuple[Tensor, int] | None,
    original_nonzero: int, frozen: bool, group: int | None,
) -> LayerResult:
    """`layer`'s result under its own `decision` and the `coupled` group decision that
    describes it (`deciding_group`). `weight` is its current value, whose non-zero entries
    are counted; `nm` is the N:M mask and its non-zero count, for an N:M decision."""
    threshold: float | None = None
    granularity: str | None
    criterion: str | None
    if coupled is not None:
        gran, group_decision = coupled
        nonzero = int(torch.count_nonzero(weight))
        shown = decision or group_decision
        if nm is not None:
            structures, pruned = layer.params, int((~nm[0]).sum())
        else:
            structures, pruned = shown.table.count, max(shown.pruned, 0)
        granularity = decision.granularity.value if decision else gran.value
        criterion = shown.criterion
        threshold = shown.threshold
    elif decision is None:
        structures, pruned = layer.params, 0
        nonzero = original_nonzero
        granularity = criterion = None
    else:
        if nm is not None:
            mask, nonzero = nm
            structures = layer.params
            pruned = structures - int(mask.sum())
        else:
            structures = decision.table.count
            pruned = decision.pruned
            nonzero = int(torch.count_nonzero(weight))  # the weight as written: w0 * mask
            threshold = decision.threshold
        if frozen:
            nonzero = int(torch.count_nonzero(weight))
        granularity, criterion = decision.granularity.value, decision.criterion
    return LayerResult(
        name=layer.name, type=layer.type, granularity=granularity, criterion=criterion,
        params=layer.params, nonzero=nonzero,
        sparsity=1.0 - nonzero / layer.params if layer.params else 0.0,
        threshold=threshold, structures=structures, structures_pruned=pruned, group=group,
    )
