"""Pruning decisions: how many structures each layer or coupled group loses.

Pure: functions of score tables and plan entries that return `Decision`s; nothing here
builds a mask or touches a module. Score tables come on demand from a `ScoreSource`
(the session), so only what a plan names is ever scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from pruneviz.core.coupling import Group
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.core.scores import ScoreTable, relative
from pruneviz.core.width import approximation_note
from pruneviz.errors import PlanError


@dataclass(frozen=True)
class Decision:
    """What was decided for one layer or group: enough to rebuild its mask, and to compare."""

    granularity: Granularity
    criterion: str
    pruned: int  # structures pruned (for N:M: -1, the mask is fixed)
    given_threshold: float | None  # set when the plan gave a threshold, not a sparsity
    table: ScoreTable = field(compare=False, repr=False)

    @property
    def threshold(self) -> float | None:
        """The threshold in score units: given, or the one the sparsity amounted to."""
        if self.granularity.n_m is not None or self.table.rows is not None:
            return None  # N:M, or ranked within rows: no one threshold for the layer
        if self.given_threshold is not None:
            return self.given_threshold
        return self.table.threshold_for(self.pruned)


def decide_layer(
    table: ScoreTable, granularity: Granularity, criterion: str,
    sparsity: float | None, threshold: float | None,
) -> Decision:
    """One layer on its own: the lowest `sparsity` of its structures, or those scoring
    below `threshold`; N:M (-1) prunes within every run of weights instead."""
    if granularity.n_m is not None:
        return Decision(granularity, criterion, -1, None, table)
    if sparsity is not None:
        pruned = min(table.count, round(sparsity * table.count))
        return Decision(granularity, criterion, pruned, None, table)
    if threshold is None:
        raise PlanError("a layer entry needs a sparsity or a threshold")
    return Decision(granularity, criterion, table.count_below(threshold), float(threshold),
                    table)


def decide_group(
    group: Group, table: ScoreTable, side: Granularity, criterion: str,
    sparsity: float | None, threshold: float | None, pruned: int | None = None,
) -> tuple[Decision, str | None]:
    """A coupled group: its lowest-scoring units go, never all of them.

    `pruned` overrides the amount. Returns the decision and a note (else None): when
    keeping the last unit held it back; for attention heads, what the group is.
    """
    if pruned is None:
        if sparsity is not None:
            pruned = round(sparsity * table.count)
        elif threshold is not None:
            pruned = table.count_below(threshold)
        else:
            raise PlanError("a group entry needs a sparsity or a threshold")
    note = None
    if pruned >= table.count:
        pruned = table.count - 1
        empty = ("leave the attention layer empty" if group.unit == "head"
                 else "cut the network in two")
        note = (f"{', '.join(group.layers)}: kept 1 of {table.count} {group.unit}s — "
                f"removing all would {empty}")
    if group.unit == "head" and group.note and pruned > 0:
        # which attention style it is, and where its head count came from
        said = f"{pruned} of {table.count} units removed by {criterion}: {group.note}"
        note = f"{note}; {said}" if note else said
    return Decision(side, criterion, pruned, threshold, table), note


def global_counts(
    tables: Sequence[ScoreTable], sizes: Sequence[int], sparsity: float, cap: float | None,
    keep_one: Sequence[bool] | None = None,
) -> list[int]:
    """How many structures each layer loses when the lowest-scoring structures across all
    layers are pruned until `sparsity` of all their weights is gone.

    `sizes[i]` is the weights one structure of table i holds. With a cap, a layer stops
    giving structures once it reached `cap` of its own, and the ranking moves on to the
    other layers; `keep_one[i]` keeps table i's last structure.
    """
    scores = torch.cat([t.sorted for t in tables]).cpu()  # a few numbers: counted on the CPU
    layer_id = torch.cat([torch.full((len(t.sorted),), i) for i, t in enumerate(tables)])
    rank = torch.cat([torch.arange(len(t.sorted)) for t in tables])
    size = torch.cat([torch.full((len(t.sorted),), s) for t, s in zip(tables, sizes, strict=True)])
    counts = torch.tensor([len(t.sorted) for t in tables])
    order = torch.argsort(scores, stable=True)
    layer_id, rank, size = layer_id[order], rank[order], size[order]
    limit = counts.clone()
    if cap is not None:
        limit = torch.floor(cap * counts.double() + 1e-9).long()
    if keep_one is not None:  # coupled groups never lose their last unit
        limit = torch.minimum(limit, counts - torch.tensor([int(k) for k in keep_one]))
    eligible = rank < limit[layer_id]
    layer_id, size = layer_id[eligible], size[eligible]
    total = int((counts * torch.tensor(list(sizes))).sum())
    target = round(sparsity * total)
    take = int(torch.searchsorted(torch.cumsum(size, 0), torch.tensor([target]), side="right")[0])
    pruned = torch.bincount(layer_id[:take], minlength=len(tables))
    return [int(p) for p in pruned]


def global_pruned(
    section: GlobalPlan, tables: Sequence[ScoreTable], sizes: Sequence[int],
    coupled: Sequence[bool],
) -> list[int]:
    """Structures each unit (a layer, or a coupled group when `coupled[i]`) loses under a
    global section: one threshold for all, or one ranking to a total sparsity; then at
    most `max_layer_sparsity` of each."""
    if section.threshold is not None:
        threshold = section.threshold
        pruned = [t.count_below(threshold) for t in tables]
    else:
        if section.sparsity is None:
            raise PlanError("a global section needs a sparsity or a threshold")
        ranked = list(tables)
        if section.granularity.structured or any(t.rows is not None for t in tables):
            # Filters of different layers (and groups averaged over several layers), and
            # scores weighed by each layer's own inputs (wanda), are on different scales:
            # rank them relative to their own layer's mean. The ranking says how many
            # each layer loses; a criterion that compares within rows then takes them
            # row by row (ScoreTable.keep).
            ranked = [relative(t) for t in tables]
        pruned = global_counts(ranked, sizes, section.sparsity, section.max_layer_sparsity,
                               coupled)
    if section.max_layer_sparsity is not None:
        caps = [math.floor(section.max_layer_sparsity * t.count + 1e-9) for t in tables]
        pruned = [min(p, cap) for p, cap in zip(pruned, caps, strict=True)]
    return pruned


class ScoreSource(Protocol):
    """What plan decisions need from a session: score tables, computed on demand."""

    @property
    def layer_names(self) -> list[str]:
        """The prunable layers, in model order."""
        ...

    @property
    def output_layers(self) -> set[str]:
        """Layers whose outputs are the model's outputs."""
        ...

    def layer_table(self, layer: str, granularity: Granularity, criterion: str) -> ScoreTable:
        """`layer`'s table (raises PlanError if the granularity does not fit it)."""
        ...

    def group_for(self, layer: str, granularity: Granularity) -> Group | None:
        """The coupled group deciding `layer` at `granularity` (None: decided alone)."""
        ...

    def group_table(self, group: int, criterion: str, side: Granularity) -> ScoreTable:
        """A coupled group's combined table."""
        ...

    def unit_weights(self, unit: str | Group, granularity: Granularity) -> int:
        """Weights one structure of a layer, or one unit of a group, holds."""
        ...


@dataclass
class Decisions:
    """A plan's decisions: per layer, per coupled group, and the notes made on the way."""

    layers: dict[str, Decision] = field(default_factory=dict)
    groups: dict[int, Decision] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def note(self, text: str | None) -> None:
        """Record `text` once."""
        if text is not None and text not in self.notes:
            self.notes.append(text)

    def tables(self) -> list[ScoreTable]:
        """The score tables these decisions hold."""
        return [d.table for d in [*self.layers.values(), *self.groups.values()]]

    def pruned_units(self) -> dict[int, list[int]]:
        """For each coupled group with a decision: the units (channels) it prunes."""
        return {gid: sorted(d.table.order[: d.pruned].tolist())
                for gid, d in self.groups.items() if d.pruned > 0}

    def uncoupled_structured(self) -> list[str]:
        """Layers with filter/channel pruning decided alone (zeroed, not removable)."""
        return [n for n, d in self.layers.items() if d.granularity.structured]

    def table_for(
        self, layer: str, groups: Sequence[int | None]
    ) -> tuple[ScoreTable, int] | None:
        """The table deciding `layer` and how many it prunes: its own decision's, else the
        first decided of its `groups` (say, the group of its outputs, then of its inputs)."""
        own = self.layers.get(layer)
        if own is not None:
            return own.table, max(own.pruned, 0)
        for gid in groups:
            if gid is not None and gid in self.groups:
                return self.groups[gid].table, self.groups[gid].pruned
        return None


def decide_entry(
    source: ScoreSource, layer: str, entry: LayerPlan
) -> tuple[Decision, str | None, Group | None]:
    """The decision of one plan entry: the layer's own, or its coupled group's (then with
    the group and a possible note)."""
    group = source.group_for(layer, entry.granularity)
    if group is None:
        table = source.layer_table(layer, entry.granularity, entry.criterion)
        return (decide_layer(table, entry.granularity, entry.criterion, entry.sparsity,
                             entry.threshold), None, None)
    table = source.group_table(group.id, entry.criterion, entry.granularity)
    decision, note = decide_group(group, table, entry.granularity, entry.criterion,
                                  entry.sparsity, entry.threshold)
    return decision, note, group


def decide_plan(source: ScoreSource, plan: Plan) -> Decisions:
    """Every decision `plan` makes (raises PlanError; nothing is written)."""
    out = Decisions()
    named_by: dict[int, str] = {}
    for name, entry in plan.layers.items():
        decision, note, group = decide_entry(source, name, entry)
        out.note(note)
        if group is None:
            out.layers[name] = decision
            continue
        if group.id in out.groups and out.groups[group.id] != decision:
            raise PlanError(
                f"layers {named_by[group.id]!r} and {name!r} share channels (coupled: "
                f"{', '.join(group.layers)}), so they are pruned together; give them the "
                "same entry, or an entry for only one of them"
            )
        out.groups[group.id] = decision
        out.note(_shared_norm_note(group, decision))
        named_by.setdefault(group.id, name)
    if plan.global_ is not None:
        # Layers with an entry of their own are decided by it, not by the global section.
        members = plan.global_.layers
        if members is None:
            members = tuple(source.layer_names)
        members = tuple(n for n in members if n not in plan.layers)
        _decide_global(source, plan.global_, members, out)
    return out


def _decide_global(
    source: ScoreSource, section: GlobalPlan, members: Sequence[str], out: Decisions
) -> None:
    """One ranking across `members` (and their coupled groups) into `out`."""
    units: list[tuple[str | Group, ScoreTable]] = []
    seen: set[int] = set(out.groups)
    if section.granularity is Granularity.FILTER and section.layers is None:
        # "every layer": the output layer's filters are the model's outputs, not a choice
        members = [n for n in members if n not in source.output_layers]
    for name in members:
        group = source.group_for(name, section.granularity)
        if group is None:
            units.append((name, source.layer_table(name, section.granularity,
                                                   section.criterion)))
        elif group.id not in seen:
            seen.add(group.id)
            units.append((group, source.group_table(group.id, section.criterion,
                                                    section.granularity)))
    if not units:
        return
    pruned = global_pruned(
        section, [t for _, t in units],
        [source.unit_weights(u, section.granularity) for u, _ in units],
        [isinstance(u, Group) for u, _ in units])
    for (unit, table), k in zip(units, pruned, strict=True):
        if isinstance(unit, Group):
            # Held at its last unit by the keep-one rule: say so.
            wanted_all = section.threshold is None and k == table.count - 1
            decision, note = decide_group(unit, table, section.granularity,
                                          section.criterion, None, section.threshold,
                                          pruned=table.count if wanted_all else k)
            out.note(note)
            out.note(_shared_norm_note(unit, decision))
            out.groups[unit.id] = decision
        else:
            out.layers[unit] = Decision(section.granularity, section.criterion, k,
                                        section.threshold, table)


def _shared_norm_note(group: Group, decision: Decision) -> str | None:
    """For a group pruned through norms that normalise its channels together: the live
    figures are the masked model's, and the slimmed model will differ (else None)."""
    if not group.shared_norms or decision.pruned <= 0:
        return None
    return approximation_note(group.layers, group.shared_norms)
