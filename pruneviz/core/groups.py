"""The coupled groups of one model, indexed: which group prunes a layer's outputs or
inputs, which tensors each group touches, its combined scores and its members' masks.

Built once per session from `find_groups`; holds no parameter values, only names,
sizes and (cached) score tables.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Mapping, Sequence

import torch
from torch import Tensor

from pruneviz.core.coupling import Group, Member
from pruneviz.core.criteria import Zeroed
from pruneviz.core.decide import Decision
from pruneviz.core.granularity import Granularity
from pruneviz.core.heads import head_taylor
from pruneviz.core.layers import PrunableLayer
from pruneviz.core.masks import member_keep
from pruneviz.core.scores import ScoreTable, combine, per_root
from pruneviz.errors import PlanError

LayerScores = Callable[[str, Granularity, str], ScoreTable]
# A member's own channels: (group, module, kind, layer). The layer tells apart the weights
# of one module that a group cuts differently (a recurrent layer's gate rows and the next
# layer's input columns, both in one nn.LSTM).
_Key = tuple[int, str, str, str | None]


def _key(gid: int, member: Member) -> _Key:
    return (gid, member.module, member.kind, member.layer)


# A Linear layer's per-batch signed column sums of w * dL/dw (CalibrationStats.signed_in).
SignedColumns = Callable[[str], Tensor | None]
# Measures, per unit, the calibration loss increase when its slices are zeroed
# (criteria.ablation_scores on the original model).
Ablate = Callable[[Sequence[Sequence[Zeroed]]], Tensor]


def inside(module: str, block: str) -> bool:
    """Whether `module` is `block` or one of its submodules."""
    return module == block or module.startswith(block + ".")


class CoupledGroups:
    """Index of `groups` over the prunable `layers` (by name) of one model.

    `params` are the model's parameter names with their shapes; a norm member touches
    its `weight` and `bias` where the model has them, an embedding member its table's
    columns, a parameter member the parameter along its `dim`.
    """

    def __init__(
        self, groups: Sequence[Group], layers: Mapping[str, PrunableLayer],
        params: Mapping[str, tuple[int, ...]], output_layers: Collection[str],
    ) -> None:
        self.groups = list(groups)
        self._layers = layers
        self._output_layers = output_layers
        self.out_group: dict[str, int] = {}
        self.in_group: dict[str, int] = {}
        self.weight_sources: dict[str, list[tuple[int, Member, Granularity]]] = {}
        self.channel_sources: dict[str, list[tuple[int, Member]]] = {}
        self.channels: dict[int, list[str]] = {}  # group -> the biases and norm entries it zeroes
        self.channel_dims: dict[str, int] = {}  # such a tensor -> the dimension of its channels
        self._member_size: dict[_Key, int] = {}
        self._tables: dict[tuple[int, str, Granularity], ScoreTable] = {}
        self._indices: dict[_Key, tuple[Tensor, Tensor]] = {}
        self._runs: dict[tuple[_Key, int], int | None] = {}
        self._layouts: dict[object, list[tuple[int, int, int]] | None] = {}
        for group in self.groups:
            self.channels[group.id] = self._index(group, params)

    def _index(self, group: Group, params: Mapping[str, tuple[int, ...]]) -> list[str]:
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
                self._member_size[_key(group.id, m)] = size
                tensors = [layer.bias] if m.kind == "out" and layer.bias else []
            elif m.kind in ("norm", "embed", "param"):
                named = {"norm": [f"{m.module}.weight", f"{m.module}.bias"],
                         "embed": [f"{m.module}.weight"], "param": [m.module]}[m.kind]
                tensors = [t for t in named if t in params]
                if tensors:
                    self._member_size[_key(group.id, m)] = params[tensors[0]][m.dim]
                for t in tensors:
                    self.channel_dims[t] = m.dim
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
               layer_scores: LayerScores, signed_columns: SignedColumns | None = None,
               ablate: Ablate | None = None) -> ScoreTable:
        """A group's channel importance from its members on one side (see `combine`),
        cached; `layer_scores` gives a member layer's own table.

        Attention heads under "taylor" are scored as whole heads, measured: the loss
        change a head's removal causes to first order (`heads.head_taylor`, from
        `signed_columns` of the output projection), the same table for either side. Under
        "ablation" they are scored by `ablate`: the loss increase measured with each head
        alone masked (`criteria.ablation`)."""
        key = (gid, criterion, side)
        if key not in self._tables:
            g = self.groups[gid]
            if g.unsupported:
                raise PlanError(f"layers {', '.join(g.layers)} are coupled, but {g.unsupported}")
            if g.unit == "head" and criterion == "taylor" and signed_columns is not None:
                out = next((m for m in g.members if m.kind == "in" and m.layer), None)
                signed = signed_columns(out.layer) if out is not None and out.layer else None
                if out is not None and signed is not None:
                    self._tables[key] = ScoreTable.of_scores(
                        head_taylor(signed, out.idxs, out.root, g.size).float())
                    return self._tables[key]
            if g.unit == "head" and criterion == "ablation" and ablate is not None:
                table = ScoreTable.of_scores(ablate(self.unit_slices(g)).float())
                for either in (Granularity.FILTER, Granularity.CHANNEL):  # measured once
                    self._tables[(gid, criterion, either)] = table
                return table
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

    def unit_slices(self, group: Group) -> list[list[Zeroed]]:
        """Per unit of `group`, the weight and bias slices its mask zeroes: the members'
        output rows (with their bias entries) and input columns that go with the unit."""
        units: list[list[Zeroed]] = [[] for _ in range(group.size)]
        for m in group.members:
            if m.kind not in ("out", "in") or not m.layer:
                continue
            layer = self._layers[m.layer]
            idxs, roots = torch.tensor(m.idxs), torch.tensor(m.root)
            for u in range(group.size):
                own = idxs[roots == u]
                if m.kind == "out":
                    units[u].append((layer.weight, layer.out_dim, own))
                    if layer.bias:
                        units[u].append((layer.bias, 0, own))
                else:
                    units[u].append((layer.weight, layer.in_dim, own))
        return units

    def forget_scores(self) -> None:
        """Drop the cached tables (the weights changed)."""
        self._tables.clear()

    def unit_weights(self, group: Group, side: Granularity) -> int:
        """Weights of one unit of a coupled group on one side (the filters, for filter
        pruning): what a global sparsity target counts. Their readers' input weights go
        too, so the measured sparsity ends up higher than the target."""
        kind = "out" if side is Granularity.FILTER else "in"
        total = 0.0
        for m in group.members:
            if m.kind == kind and m.layer:
                layer = self._layers[m.layer]
                per = layer.params / max(1, self._member_size[_key(group.id, m)])
                total += per * len(m.idxs) / group.size
        return max(1, round(total))

    def member_keep(self, gid: int, member: Member, decision: Decision) -> Tensor:
        """Keep-vector over a member's own channels for a group decision."""
        key = _key(gid, member)
        keep = torch.ones(self._member_size[key], dtype=torch.bool,
                          device=decision.table.scores.device)
        self.keep_into(gid, member, decision, keep)
        return keep

    def keep_into(self, gid: int, member: Member, decision: Decision, keep: Tensor) -> None:
        """AND a group decision's keep over a member's own channels into `keep` (a vector
        over those channels): a concatenation's reader takes every producer's in turn,
        with no vector per producer."""
        key = _key(gid, member)
        keep_root = decision.table.keep(decision.pruned)
        roots = decision.table.count
        run = self._runs.get((key, roots), -1)
        if run == -1:
            run = self._runs[(key, roots)] = _run_offset(member, roots, self._member_size[key])
        if run is not None:  # its channels run + i are the roots i, all of them
            keep[run:run + roots] &= keep_root
            return
        index = self._indices.get(key)
        if index is None or index[0].device != keep_root.device:
            index = (torch.tensor(member.idxs, dtype=torch.long, device=keep_root.device),
                     torch.tensor(member.root, dtype=torch.long, device=keep_root.device))
            self._indices[key] = index
        keep &= member_keep(keep_root, index[0], index[1], len(keep))

    def side_keep(self, sources: Sequence[tuple[int, Member]], decisions: Mapping[int, Decision],
                  size: int, device: torch.device) -> Tensor | None:
        """The AND of every decided group's keep over one side of a layer (its `size`
        filters or input channels) or over a norm or bias parameter, from its `sources`;
        None if no source is decided. Members that are runs of their group's roots (the
        usual case: a concatenation's reader has one run per producer) are laid side by
        side in one `cat`; others ANDed in turn. Never returns a tensor to write into."""
        decided = [(gid, m) for gid, m in sources if gid in decisions]
        if not decided:
            return None
        layout = self._layout(decided, decisions, size)
        if layout is None:
            keep = torch.ones(size, dtype=torch.bool, device=device)
            for gid, member in decided:
                self.keep_into(gid, member, decisions[gid], keep)
            return keep
        pieces, position = [], 0
        for gid, start, count in layout:
            if start > position:
                pieces.append(torch.ones(start - position, dtype=torch.bool, device=device))
            pieces.append(decisions[gid].table.keep(decisions[gid].pruned))
            position = start + count
        if position < size:
            pieces.append(torch.ones(size - position, dtype=torch.bool, device=device))
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)

    def _layout(self, decided: Sequence[tuple[int, Member]], decisions: Mapping[int, Decision],
                size: int) -> list[tuple[int, int, int]] | None:
        """(group, first channel, count) of each decided source, by first channel, when
        every one is a run of its roots and none overlap; else None (cached)."""
        key = (tuple(_key(gid, m) for gid, m in decided), size)
        if key not in self._layouts:
            runs: list[tuple[int, int, int]] | None = []
            for gid, member in decided:
                roots = decisions[gid].table.count
                start = _run_offset(member, roots,
                                    self._member_size[_key(gid, member)])
                if start is None or runs is None:
                    runs = None
                    break
                runs.append((gid, start, roots))
            if runs is not None:
                runs.sort(key=lambda run: run[1])
                if any(a[1] + a[2] > b[1] for a, b in itertools.pairwise(runs)):
                    runs = None
            self._layouts[key] = runs
        return self._layouts[key]

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



def _run_offset(member: Member, roots: int, size: int) -> int | None:
    """The offset when a member's channels `offset + i` are the group's roots `i`, in
    order and all `roots` of them (a direct reader, a branch of a residual sum, a slice
    of a concatenation); else None."""
    idxs, root = member.idxs, member.root
    if len(root) != roots or list(root) != list(range(roots)) or not idxs:
        return None
    start = idxs[0]
    if list(idxs) != list(range(start, start + roots)) or start + roots > size:
        return None
    return int(start)
