"""The coupled groups of one model, indexed: which group prunes a layer's outputs or
inputs, which tensors each group touches, its combined scores and its members' masks.

Built once per session from `find_groups`; holds no parameter values, only names,
sizes and (cached) score tables.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from pruneviz.core.coupling import Group, Member
from pruneviz.core.decide import Decision
from pruneviz.core.granularity import Granularity
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.masks import member_keep
from pruneviz.core.scores import ScoreTable, combine, per_root
from pruneviz.errors import PlanError

LayerScores = Callable[[str, Granularity, str], ScoreTable]


def inside(module: str, block: str) -> bool:
    """Whether `module` is `block` or one of its submodules."""
    return module == block or module.startswith(block + ".")


class CoupledGroups:
    """Index of `groups` over the prunable `layers` (by name) of one model.

    `params` are the model's parameter names with their number of elements; a norm
    member touches its `weight` and `bias` where the model has them.
    """

    def __init__(
        self, groups: Sequence[Group], layers: Mapping[str, PrunableLayer],
        params: Mapping[str, int], output_layers: Collection[str],
    ) -> None:
        self.groups = list(groups)
        self._layers = layers
        self._output_layers = output_layers
        self.out_group: dict[str, int] = {}
        self.in_group: dict[str, int] = {}
        self.weight_sources: dict[str, list[tuple[int, Member, Granularity]]] = {}
        self.channel_sources: dict[str, list[tuple[int, Member]]] = {}
        self.channels: dict[int, list[str]] = {}  # group -> the biases and norm entries it zeroes
        self._member_size: dict[tuple[int, str, str], int] = {}
        self._tables: dict[tuple[int, str, Granularity], ScoreTable] = {}
        self._keeps: dict[tuple[int, str, str], tuple[ScoreTable, int, Tensor]] = {}
        self._indices: dict[tuple[int, str, str], tuple[Tensor, Tensor]] = {}
        for group in self.groups:
            self.channels[group.id] = self._index(group, params)

    def _index(self, group: Group, params: Mapping[str, int]) -> list[str]:
        channels: list[str] = []
        for m in group.members:
            if m.kind in ("out", "in") and m.layer:
                layer = self._layers[m.layer]
                gran = Granularity.FILTER if m.kind == "out" else Granularity.CHANNEL
                (self.out_group if m.kind == "out" else self.in_group)[m.layer] = group.id
                if m.kind == "out" and layer.groups > 1 and layer.groups == layer.in_structures:
                    # depthwise: input channel c is filter c, in the same group
                    self.in_group.setdefault(m.layer, group.id)
                self.weight_sources.setdefault(m.layer, []).append((group.id, m, gran))
                size = layer.out_structures if m.kind == "out" else layer.in_structures
                self._member_size[(group.id, m.module, m.kind)] = size
                tensors = [layer.bias] if m.kind == "out" and layer.bias else []
            elif m.kind == "norm":
                tensors = [f"{m.module}.{p}" for p in ("weight", "bias")
                           if f"{m.module}.{p}" in params]
                if tensors:
                    self._member_size[(group.id, m.module, m.kind)] = params[tensors[0]]
            else:
                continue
            for t in tensors:
                self.channel_sources.setdefault(t, []).append((group.id, m))
                channels.append(t)
        return channels

    def group_of(self, layer: str, granularity: Granularity = Granularity.FILTER) -> Group | None:
        """The coupled group whose channels are `layer`'s outputs (filter) or inputs (channel)."""
        table = self.out_group if granularity is Granularity.FILTER else self.in_group
        gid = table.get(layer) if granularity.structured else None
        return self.groups[gid] if gid is not None else None

    def group_for(self, name: str, granularity: Granularity) -> Group | None:
        """The group that decides `name` at this granularity (None: decided per layer);
        raises PlanError where structured pruning cannot go."""
        group = self.group_of(name, granularity) if granularity.structured else None
        if granularity is Granularity.FILTER and name in self._output_layers:
            layer = self._layers[name]
            raise PlanError(
                f"layer {name!r} produces the model's output: its {layer.out_structures} "
                "filters are the model's outputs (classes, pixels), so removing them would "
                "change what the model returns; prune its weights (unstructured) or its "
                "input channels instead"
            )
        if group is not None and group.unsupported:
            raise PlanError(f"layer {name!r} is coupled with {', '.join(group.layers)}, but "
                            f"{group.unsupported}; use unstructured pruning for it")
        return group

    def scores(self, gid: int, criterion: str, side: Granularity,
               layer_scores: LayerScores) -> ScoreTable:
        """A group's channel importance from its members on one side (see `combine`),
        cached; `layer_scores` gives a member layer's own table."""
        key = (gid, criterion, side)
        if key not in self._tables:
            g = self.groups[gid]
            if g.unsupported:
                raise PlanError(f"layers {', '.join(g.layers)} are coupled, but {g.unsupported}")
            kind = "out" if side is Granularity.FILTER else "in"
            parts: list[Tensor] = []
            reasons = []
            for m in g.members:
                if m.kind != kind or not m.layer:
                    continue
                try:
                    scores = layer_scores(m.layer, side, criterion).scores
                except PlanError as exc:
                    reasons.append(str(exc))
                    continue
                parts.append(per_root(scores, m.idxs, m.root, g.size))
            if not parts:
                raise PlanError(
                    f"criterion {criterion!r} cannot score the coupled layers "
                    f"{', '.join(g.layers)}: " + ("; ".join(reasons[:2]) or "no member")
                )
            self._tables[key] = ScoreTable.of_scores(combine(parts).float())
        return self._tables[key]

    def forget_scores(self) -> None:
        """Drop the cached tables (the weights changed)."""
        self._tables.clear()
        self._keeps.clear()

    def unit_weights(self, group: Group, side: Granularity) -> int:
        """Weights of one unit of a coupled group on one side (the filters, for filter
        pruning): what a global sparsity target counts. Their readers' input weights go
        too, so the measured sparsity ends up higher than the target."""
        kind = "out" if side is Granularity.FILTER else "in"
        total = 0.0
        for m in group.members:
            if m.kind == kind and m.layer:
                layer = self._layers[m.layer]
                per = layer.params / max(1, self._member_size[(group.id, m.module, m.kind)])
                total += per * len(m.idxs) / group.size
        return max(1, round(total))

    def member_keep(self, gid: int, member: Member, decision: Decision) -> Tensor:
        """Keep-vector over a member's own channels for a group decision (the last one
        computed per member is kept: a move of every slider asks for each many times)."""
        key = (gid, member.module, member.kind)
        known = self._keeps.get(key)
        if known is not None and known[0] is decision.table and known[1] == decision.pruned:
            return known[2]
        keep_root = decision.table.keep(decision.pruned)
        index = self._indices.get(key)
        if index is None or index[0].device != keep_root.device:
            index = (torch.tensor(member.idxs, dtype=torch.long, device=keep_root.device),
                     torch.tensor(member.root, dtype=torch.long, device=keep_root.device))
            self._indices[key] = index
        keep = member_keep(keep_root, index[0], index[1], self._member_size[key])
        self._keeps[key] = (decision.table, decision.pruned, keep)
        return keep

    def weight_keeps(
        self, layer: str, decisions: Mapping[int, Decision]
    ) -> Iterable[tuple[Granularity, Tensor]]:
        """For every decided group that prunes `layer`'s weight: the side (filter or
        channel) and the keep-vector over that side's structures."""
        for gid, member, gran in self.weight_sources.get(layer, ()):
            decision = decisions.get(gid)
            if decision is not None:
                yield gran, self.member_keep(gid, member, decision)

    def channel_keeps(self, tensor: str, decisions: Mapping[int, Decision]) -> list[Tensor]:
        """Keep-vectors over a bias or norm parameter from every decided group touching it."""
        return [self.member_keep(gid, member, decisions[gid])
                for gid, member in self.channel_sources.get(tensor, ()) if gid in decisions]

    def check_removable(self, blocks: Sequence[str]) -> None:
        """Refuse removing a module that produces channels read outside it: the layers
        behind it would then read other channels, and the coupled groups (traced on the
        full model) would no longer say which channels go together."""
        for block in blocks:
            for group in self.groups:
                producers = [m for m in group.members if m.kind == "out"]
                if producers and all(inside(m.module, block) for m in producers) and any(
                        not inside(m.module, block) for m in group.members):
                    readers = [m.module for m in group.members
                               if not inside(m.module, block)]
                    raise PlanError(
                        f"removing {block!r} changes which channels {', '.join(readers)} "
                        "read, so it cannot be combined with filter/channel pruning; remove "
                        "its whole residual block instead, or prune without removing it"
                    )
