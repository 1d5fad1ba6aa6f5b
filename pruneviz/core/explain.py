"""What a criterion did: notes that say when a criterion's choice is not what its name
suggests.

Two cases, both measured on the session's own scores: LSH redundancy that found no
near-duplicate structures in a layer (then it ranks the layer's structures by their L2
norm, as l2 does: its name promises more than it did), and two or more criteria that
remove exactly the same structures at an amount (then choosing between them changes
nothing there). Reads score tables and previews; writes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

from pruneviz.core.criteria import get_criterion, iter_criteria
from pruneviz.core.granularity import Granularity
from pruneviz.core.plan import LayerPlan
from pruneviz.core.session import PruningSession
from pruneviz.errors import PrunevizError
from pruneviz.i18n import N_, _

# lsh_scores puts every bucket's strongest structure at 0.5 or above and every other
# member of a bucket (a near-duplicate) below it.
_DUPLICATE_BELOW = 0.5

# what one structure is, for people (the ids stay English in the code and the files)
UNIT_LABELS = {"filter": N_("filter"), "channel": N_("channel"), "weight": N_("weight"),
               "head": N_("head"), "hidden unit": N_("hidden unit")}
# criterion ids that are plain English words get a translated name; the others (l1, taylor,
# fpgm, ...) are names and shown as they are
CRITERION_LABELS = {"random": N_("random"), "activation": N_("activation"),
                    "ablation": N_("ablation")}
# granularities for people (2:4 and 4:8 are shown as they are)
GRANULARITY_LABELS = {"unstructured": N_("unstructured"), "filter": N_("filter"),
                      "channel": N_("channel")}


def unit_label(unit: str) -> str:
    """A structure's name (`unit_name`) in the current language."""
    return _(UNIT_LABELS[unit]) if unit in UNIT_LABELS else unit


def criterion_label(name: str) -> str:
    """A criterion's id as shown: translated when it is an English word, else the id."""
    return _(CRITERION_LABELS[name]) if name in CRITERION_LABELS else name


def granularity_label(value: str) -> str:
    """A granularity's value as shown, in the current language."""
    return _(GRANULARITY_LABELS[value]) if value in GRANULARITY_LABELS else value


@dataclass(frozen=True)
class CriteriaComparison:
    """Which structures of one layer each criterion removes at one amount.

    `pruned_by[criterion]` is a boolean vector over the layer's structures (True:
    removed); `skipped[criterion]` says why a criterion cannot prune the layer; `notes`
    are the sentences of `lsh_note` and `identical_note`.
    """

    layer: str
    granularity: Granularity
    sparsity: float
    unit: str
    pruned_by: dict[str, Tensor]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def unit_name(session: PruningSession, layer: str, granularity: Granularity) -> str:
    """What one structure of `layer` is at `granularity`: a filter, channel, head ..."""
    group = session.group_of(layer, granularity)
    if group is None or group.unit == "channel":  # a plain channel group: filters / channels
        return granularity.value
    return group.unit


def near_duplicates(session: PruningSession, layer: str, granularity: Granularity) -> int:
    """How many of `layer`'s structures LSH redundancy found to be near-duplicates of a
    stronger one (the members of its hash buckets other than the strongest)."""
    scores = session.scores(layer, granularity, "lsh").scores
    return int((scores < _DUPLICATE_BELOW).sum())


def lsh_note(session: PruningSession, layer: str, granularity: Granularity) -> str | None:
    """A sentence when LSH redundancy found no near-duplicate structures in `layer` (it
    then ranks them by L2 norm, as l2 does), else None. Structured granularities only."""
    if not granularity.structured or session.unsupported(layer, granularity, "lsh"):
        return None
    group = session.group_of(layer, granularity)
    members = [layer] if group is None else (
        group.out_layers if granularity is Granularity.FILTER else group.in_layers) or [layer]
    if any(near_duplicates(session, m, granularity) for m in members):
        return None
    unit = unit_label(unit_name(session, layer, granularity))
    count = session.structures(layer, granularity).count
    if group is None or len(members) == 1:
        how = _("so it ranks them by L2 norm exactly as l2 does")
    else:
        how = _("so it ranks them by L2 norm, as l2 does (for the {count} coupled layers the "
                "two combine the norms a little differently)").format(count=len(members))
    return _("{layer}: lsh found no near-duplicate {unit}s among its {count} (every {unit} "
             "hashes to a bucket of its own), {how}").format(layer=layer, unit=unit,
                                                             count=count, how=how)


def identical_choices(pruned_by: Mapping[str, Tensor]) -> list[list[str]]:
    """Criteria that remove exactly the same structures (and at least one), in groups of
    two or more, in the order the criteria are given."""
    groups: list[list[str]] = []
    keys: list[Tensor] = []
    for name, pruned in pruned_by.items():
        if not bool(pruned.any()):
            continue
        for i, key in enumerate(keys):
            if key.shape == pruned.shape and torch.equal(key, pruned):
                groups[i].append(name)
                break
        else:
            keys.append(pruned)
            groups.append([name])
    return [g for g in groups if len(g) > 1]


def _listed(names: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    names = [criterion_label(name) for name in names]
    if len(names) == 1:
        return names[0]
    return _("{names} and {last}").format(names=_(", ").join(names[:-1]), last=names[-1])


def identical_note(layer: str, unit: str, sparsity: float,
                   pruned_by: Mapping[str, Tensor]) -> list[str]:
    """One sentence per group of criteria that remove the same structures of `layer`."""
    notes = []
    for names in identical_choices(pruned_by):
        pruned = pruned_by[names[0]]
        notes.append(_("{layer}: {criteria} remove the same {count} of {total} {unit}s at "
                       "{sparsity}: choosing between them changes nothing here").format(
            layer=layer, criteria=_listed(names), count=int(pruned.sum()),
            total=pruned.numel(), unit=unit_label(unit), sparsity=f"{sparsity:.0%}"))
    return notes


def pruned_structures(session: PruningSession, layer: str, entry: LayerPlan) -> Tensor:
    """Which of `layer`'s structures `entry` removes (True), previewed, nothing written."""
    keep = session.preview(layer, entry)[0]
    structures = session.structures(layer, entry.granularity)
    return ~structures.vectors(keep).any(dim=1)


def compare_criteria(
    session: PruningSession, layer: str, granularity: Granularity, sparsity: float,
    criteria: Iterable[str] | None = None,
) -> CriteriaComparison:
    """What each criterion (every one that scores `granularity`, by default) removes of
    `layer` at `sparsity` of its structures, and the notes on it. Structured only."""
    if not granularity.structured:
        raise ValueError(f"criteria are compared by the structures they remove: use filter or "
                         f"channel, not {granularity.value}")
    names = list(criteria) if criteria is not None else [
        spec.name for spec in iter_criteria(granularity)]
    pruned_by: dict[str, Tensor] = {}
    skipped: dict[str, str] = {}
    for name in names:
        if get_criterion(name).needs_data and session.calibration is None:
            skipped[name] = _("needs calibration data, which this session has none of")
            continue
        reason = session.unsupported(layer, granularity, name)
        if reason is not None:
            skipped[name] = reason
            continue
        pruned_by[name] = pruned_structures(
            session, layer, LayerPlan(granularity, name, sparsity=sparsity))
    unit = unit_name(session, layer, granularity)
    notes = []
    if "lsh" in pruned_by:
        note = lsh_note(session, layer, granularity)
        if note is not None:
            notes.append(note)
    notes += identical_note(layer, unit, sparsity, pruned_by)
    return CriteriaComparison(layer, granularity, sparsity, unit, pruned_by, skipped, notes)


def plan_notes(session: PruningSession) -> list[str]:
    """Notes on the criteria the session's plan uses for whole structures: per layer with
    an entry of its own, whether lsh found no near-duplicates, and which other criteria
    would have removed exactly the same structures."""
    notes: list[str] = []
    said: set[int] = set()  # groups of several units (heads): one note per group
    for layer, entry in session.plan.layers.items():
        g = entry.granularity
        if not g.structured or session.unsupported(layer, g, entry.criterion):
            continue
        group = session.group_of(layer, g)
        if group is not None and group.unit != "channel":
            if group.id in said:
                continue
            said.add(group.id)
        if entry.criterion == "lsh":
            note = lsh_note(session, layer, g)
            if note is not None:
                notes.append(note)
        chosen = pruned_structures(session, layer, entry)
        if not bool(chosen.any()):
            continue
        share = float(chosen.float().mean())
        same = []
        for spec in iter_criteria(g):
            if spec.name in (entry.criterion, "random") or (
                    spec.needs_data and session.calibration is None):
                continue
            try:
                if session.unsupported(layer, g, spec.name):
                    continue
                other = pruned_structures(session, layer, LayerPlan(g, spec.name,
                                                                    sparsity=share))
            except PrunevizError:  # a criterion that cannot score here has nothing to say
                continue
            if torch.equal(other, chosen):
                same.append(spec.name)
        if same:
            unit = unit_name(session, layer, g)
            count, total = int(chosen.sum()), chosen.numel()
            if group is not None and group.unit != "channel":  # rows of a layer: count units
                count = len(session.pruned_units().get(group.id, []))
                total = group.size
            notes.append(_("{layer}: {criteria} would remove the same {count} of {total} "
                           "{unit}s as {criterion}").format(
                layer=layer, criteria=_listed(same), count=count, total=total,
                unit=unit_label(unit), criterion=criterion_label(entry.criterion)))
    return notes


__all__ = ["CRITERION_LABELS", "GRANULARITY_LABELS", "UNIT_LABELS", "CriteriaComparison",
           "compare_criteria", "criterion_label", "granularity_label", "identical_choices",
           "identical_note", "lsh_note", "near_duplicates", "plan_notes", "pruned_structures",
           "unit_label", "unit_name"]
