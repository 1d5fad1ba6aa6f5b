"""PlanMasks: the keep-masks a plan's decisions put on the parameters a session changes.

Computes, never writes: the mask of a layer's weight (its own decision AND every coupled
group's), the mask of a bias or norm parameter whose channels pruned structures feed,
and which parameters a change of decisions touches. Masks are `writes.Keep`s: keep
vectors along dimensions where they can be, so that a move rewrites only what changed.
True = kept; None = all kept.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import Tensor

from pruneviz.core.coupling import Group, Member
from pruneviz.core.criteria import Structures
from pruneviz.core.decide import Decision, Decisions
from pruneviz.core.granularity import Granularity
from pruneviz.core.groups import CoupledGroups
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.masks import combine
from pruneviz.core.scoring import LayerScorer
from pruneviz.core.writes import Keep


def fed_tensors(layer: PrunableLayer, params: Collection[str]) -> list[str]:
    """Tensors fed by `layer`'s output structures that the model has (among `params`):
    its bias and the following BatchNorm's affine."""
    names = [layer.bias] if layer.bias else []
    if layer.bn:
        names += [f"{layer.bn}.weight", f"{layer.bn}.bias"]
    return [n for n in names if n in params]


class PlanMasks:
    """Masks of the prunable `layers` of a model with parameters `params` (by name), from
    the `scorer`'s tables and the `coupled` groups' members."""

    def __init__(
        self, layers: Sequence[PrunableLayer], params: Mapping[str, Tensor],
        scorer: LayerScorer, coupled: CoupledGroups,
    ) -> None:
        self._params = params
        self._scorer = scorer
        self._coupled = coupled
        self.fed = {layer.name: fed_tensors(layer, params) for layer in layers}
        self._fed_owner = {t: name for name, tensors in self.fed.items() for t in tensors}
        self.channel_tensors = [t for t in coupled.channel_sources.keys() | self._fed_owner.keys()
                                if t in params]  # every bias or norm parameter a plan may zero

    def weight_keep(self, layer: PrunableLayer, decided: Decisions) -> Keep | None:
        """The weight's keep-mask: its own decision AND every coupled group's."""
        device = self._params[layer.weight].device
        vectors: dict[int, list[Tensor]] = {}
        finer: list[tuple[object, Callable[[], Tensor]]] = []
        own = decided.layers.get(layer.name)
        if own is not None:
            structures = self._scorer.structures(layer.name, own.granularity)
            if own.granularity.structured and _along_dim(structures):
                vectors.setdefault(structures.dim or 0, []).append(own.table.keep(own.pruned))
            else:
                own_mask = functools.partial(self._own_mask, layer.name, own)
                finer.append(((layer.name, own), own_mask))
        sources = self._coupled.weight_sources.get(layer.name, ())
        for granularity in (Granularity.FILTER, Granularity.CHANNEL):
            side = [(gid, m) for gid, m, g in sources if g is granularity]
            if not side:
                continue
            structures = self._scorer.structures(layer.name, granularity)
            if _along_dim(structures):
                keep = self._coupled.side_keep(side, decided.groups, structures.count, device)
                if keep is not None:
                    vectors.setdefault(structures.dim or 0, []).append(keep)
                continue
            for gid, member in side:
                decision = decided.groups.get(gid)
                if decision is not None:
                    finer.append(((gid, decision), functools.partial(
                        self._group_mask, structures, gid, member, decision)))
        along = {dim: functools.reduce(torch.logical_and, keeps)
                 for dim, keeps in vectors.items()}
        return Keep(along, finer) if along or finer else None

    def channel_keep(self, tensor_name: str, decided: Decisions) -> Keep | None:
        """The keep-vector of a bias or norm parameter (or of an embedding's columns, a
        bare parameter's channels: along the dimension its group names)."""
        owner = self._fed_owner.get(tensor_name)
        own = decided.layers.get(owner) if owner else None
        param = self._params[tensor_name]
        dim = self._coupled.channel_dims.get(tensor_name, 0)
        keep = combine([
            own.table.keep(own.pruned)
            if own is not None and own.granularity is Granularity.FILTER else None,
            self._coupled.side_keep(self._coupled.channel_sources.get(tensor_name, []),
                                    decided.groups, param.shape[dim], param.device),
        ])
        return None if keep is None else Keep({dim: keep})

    def _own_mask(self, layer: str, decision: Decision) -> Tensor:
        return self._scorer.weight_mask(layer, decision)

    def _group_mask(self, structures: Structures, gid: int, member: Member,
                    decision: Decision) -> Tensor:
        return structures.expand(self._coupled.member_keep(gid, member, decision))

    def keeps(
        self, decided: Decisions, layers: Sequence[PrunableLayer]
    ) -> dict[str, Keep | None]:
        """The keep-mask of every weight of `layers`, then of every bias or norm parameter."""
        found = {layer.weight: self.weight_keep(layer, decided) for layer in layers}
        found.update({t: self.channel_keep(t, decided) for t in self.channel_tensors})
        return found

    def entry_mask(
        self, layer: str, granularity: Granularity, decision: Decision, group: Group | None
    ) -> Tensor:
        """`layer`'s weight mask from one plan entry's decision alone (its group's, if
        `group`), as `decide.decide_entry` returns them."""
        if group is None:
            return self._scorer.weight_mask(layer, decision)
        member = next(m for gid, m, g in self._coupled.weight_sources[layer]
                      if gid == group.id and g is granularity)
        keep = self._coupled.member_keep(group.id, member, decision)
        return self._scorer.expand(layer, granularity, keep)

    def touched(self, old: Decisions, new: Decisions) -> tuple[set[str], dict[str, str], set[str]]:
        """What going from `old` to `new` decisions changes: the layers whose own decision
        changed, the weights to rewrite (weight name -> layer) and the biases and norm
        parameters to rewrite."""
        changed = {name for name in set(new.layers) | set(old.layers)
                   if new.layers.get(name) != old.layers.get(name)}
        changed_groups = {gid for gid in set(new.groups) | set(old.groups)
                          if new.groups.get(gid) != old.groups.get(gid)}
        weights = {self._scorer.layer(name).weight: name for name in changed}
        channels: set[str] = set()
        for name in changed:
            if any(d is not None and d.granularity is Granularity.FILTER
                   for d in (old.layers.get(name), new.layers.get(name))):
                channels.update(self.fed[name])
        for gid in changed_groups:
            for m in self._coupled.groups[gid].members:
                if m.layer:
                    weights[self._scorer.layer(m.layer).weight] = m.layer
            channels.update(self._coupled.channels[gid])
        return changed, weights, channels


def _along_dim(structures: Structures) -> bool:
    """Whether the structures are whole slices along one dimension of the weight."""
    return structures.dim is not None and structures.groups == 1
