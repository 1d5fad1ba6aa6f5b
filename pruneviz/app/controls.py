"""The Prune page's controls and the Plan they stand for, as pure functions of plain values.

The page keeps its widget values in session state under `keys.widget_key(...)`; these
functions turn a plan into those values (to seed the widgets), the values back into a
plan, and say which sliders move when one coupled slider moves. Nothing here talks to
Streamlit: a mapping of widget key -> value goes in, plain values come out.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pruneviz.app.keys import widget_key
from pruneviz.core.criteria import compares_rows
from pruneviz.core.granularity import Granularity, parse_granularity
from pruneviz.core.plan import GlobalPlan, LayerPlan, Plan
from pruneviz.i18n import N_, _


class Scope(StrEnum):
    """How the Prune page's sliders prune: each layer its own amount, or one ranking."""

    PER_LAYER = N_("Per layer")  # (the values are also the options' English labels)
    GLOBAL = N_("Global ranking")


class Mode(StrEnum):
    """What a layer's slider sets: the share of structures removed, or a score threshold."""

    SPARSITY = N_("sparsity %")
    THRESHOLD = N_("|score| threshold")


SCOPES = [s.value for s in Scope]
MODES = [m.value for m in Mode]
GRANULARITIES = [g.value for g in Granularity]
# The global ranking cannot take N:M granularities (their sparsity is fixed per group).
GLOBAL_GRANULARITIES = [g for g in GRANULARITIES if ":" not in g]
DEFAULT_GRANULARITY = Granularity.UNSTRUCTURED.value
DEFAULT_CRITERION = "l1"
DEFAULT_GLOBAL_PERCENT = 50
DEFAULT_CAP_PERCENT = 95

# Why a layer cannot be pruned with (granularity, criterion), or None: session.unsupported.
Unsupported = Callable[[str, Granularity, str], str | None]
# The coupled group of a layer at a structured granularity, or None: session.group_of.
GroupOf = Callable[[str, Granularity], object | None]


def widget_values(plan: Plan, layer_names: Sequence[str]) -> dict[str, Any]:
    """The Prune page's widget values that show `plan` (whole percents for sparsities)."""
    uses_threshold = any(e.threshold is not None for e in plan.layers.values())
    values: dict[str, Any] = {
        widget_key("scope"): (Scope.GLOBAL if plan.global_ is not None
                              else Scope.PER_LAYER).value,
        widget_key("mode"): (Mode.THRESHOLD if uses_threshold else Mode.SPARSITY).value,
    }
    values.update(layer_values(plan, layer_names))
    section = plan.global_
    values[widget_key("g_sp")] = (round((section.sparsity or 0.0) * 100) if section
                                  else DEFAULT_GLOBAL_PERCENT)
    values[widget_key("g_gran")] = section.granularity.value if section else DEFAULT_GRANULARITY
    values[widget_key("g_crit")] = section.criterion if section else DEFAULT_CRITERION
    values[widget_key("g_cap")] = (round((section.max_layer_sparsity or 1.0) * 100) if section
                                   else DEFAULT_CAP_PERCENT)
    values[widget_key("blocks")] = list(plan.blocks)
    values[widget_key("blocks_k")] = len(plan.blocks)
    return values


def layer_values(plan: Plan, layer_names: Collection[str]) -> dict[str, Any]:
    """The per-layer widget values (granularity, criterion, whole-percent sparsity) that
    show `plan` for `layer_names`.

    The page writes them for the layers whose controls are hidden (many-layer models show
    one at a time): Streamlit drops the state of a widget it did not draw, so without this
    a hidden slider would fall back to an older value and un-prune its layer."""
    values: dict[str, Any] = {}
    for name in layer_names:
        entry = plan.layers.get(name)
        values[widget_key("gran", name)] = (entry.granularity.value if entry
                                            else DEFAULT_GRANULARITY)
        values[widget_key("crit", name)] = entry.criterion if entry else DEFAULT_CRITERION
        sparsity = entry.sparsity if entry and entry.sparsity is not None else 0.0
        values[widget_key("sp", name)] = round(sparsity * 100)
    return values


def hidden_layers(layer_names: Sequence[str], shown: Collection[str] | None) -> list[str]:
    """The layers whose controls are not on screen (none when all are shown)."""
    return [] if shown is None else [n for n in layer_names if n not in shown]


def layer_amount(plan_now: Plan, name: str, gran: str, crit: str, percent: int) -> float:
    """The sparsity a layer's slider stands for: the current plan's own value when the
    slider still shows it rounded (a proposed 85.87% stays 85.87% until the slider
    moves), else the slider's whole percent."""
    entry = plan_now.layers.get(name)
    if entry is not None and entry.sparsity is not None and entry.granularity.value == gran \
            and entry.criterion == crit and round(entry.sparsity * 100) == percent:
        return entry.sparsity
    return percent / 100


@dataclass(frozen=True)
class WidgetPlan:
    """The plan the widgets stand for, and why layers were left out of it."""

    plan: Plan
    warnings: list[str] = field(default_factory=list)


def plan_for_widgets(values: Mapping[str, Any], layer_names: Sequence[str], plan_now: Plan,
                     unsupported: Unsupported,
                     shown: Collection[str] | None = None) -> WidgetPlan:
    """The plan the Prune page's widget `values` stand for.

    `plan_now` is the plan currently applied (its exact sparsities survive rounding),
    `unsupported` says why a layer cannot take a granularity and criterion, and `shown`
    names the layers whose controls are on screen (all when None): hidden ones keep their
    sparsity sliders' values whatever the mode.
    """
    scope = Scope(values.get(widget_key("scope"), Scope.PER_LAYER.value))
    if scope is Scope.GLOBAL:
        result = _global_plan(values, layer_names, unsupported)
    else:
        result = WidgetPlan(_layers_plan(values, layer_names, plan_now, unsupported,
                                         layer_names if shown is None else shown))
    blocks = values.get(widget_key("blocks"), ())
    return WidgetPlan(result.plan.with_blocks(blocks), result.warnings)


def _layers_plan(values: Mapping[str, Any], layer_names: Sequence[str], plan_now: Plan,
                 unsupported: Unsupported, shown: Collection[str]) -> Plan:
    mode = Mode(values.get(widget_key("mode"), Mode.SPARSITY.value))
    layers: dict[str, LayerPlan] = {}
    for name in layer_names:
        gran = str(values.get(widget_key("gran", name), DEFAULT_GRANULARITY))
        crit = str(values.get(widget_key("crit", name), DEFAULT_CRITERION))
        granularity = parse_granularity(gran, name)
        if unsupported(name, granularity, crit) is not None:
            continue
        if name in shown and granularity.n_m is not None:
            layers[name] = LayerPlan(granularity, crit)
        elif name in shown and mode is Mode.THRESHOLD and not compares_rows(crit, granularity):
            # (a criterion ranking within rows has no one threshold: its sparsity slider)
            threshold = float(values.get(widget_key("th", name), 0.0))
            if threshold > 0:
                layers[name] = LayerPlan(granularity, crit, threshold=threshold)
        elif (name not in shown and mode is Mode.THRESHOLD
              and (now := plan_now.layers.get(name)) is not None and now.threshold is not None):
            layers[name] = now  # a hidden threshold layer keeps its threshold
        else:
            percent = int(values.get(widget_key("sp", name), 0))
            if percent:
                layers[name] = LayerPlan(granularity, crit,
                                         sparsity=layer_amount(plan_now, name, gran, crit,
                                                               percent))
    return Plan(layers)


def _global_plan(values: Mapping[str, Any], layer_names: Sequence[str],
                 unsupported: Unsupported) -> WidgetPlan:
    granularity = parse_granularity(
        str(values.get(widget_key("g_gran"), DEFAULT_GRANULARITY)), "global")
    crit = str(values.get(widget_key("g_crit"), DEFAULT_CRITERION))
    percent = int(values.get(widget_key("g_sp"), DEFAULT_GLOBAL_PERCENT))
    cap = int(values.get(widget_key("g_cap"), DEFAULT_CAP_PERCENT))
    skipped = {n: r for n in layer_names if (r := unsupported(n, granularity, crit)) is not None}
    warnings = [_("{name} left out: {reason}").format(name=name, reason=reason)
                for name, reason in skipped.items()]
    members = tuple(n for n in layer_names if n not in skipped)
    if not percent:
        return WidgetPlan(Plan(), warnings)
    section = GlobalPlan(granularity, crit, sparsity=percent / 100, layers=members,
                         max_layer_sparsity=cap / 100)
    return WidgetPlan(Plan(global_=section), warnings)


def set_all_layers(percent: int, layer_names: Sequence[str]) -> dict[str, Any]:
    """Uniform: the widget values that put every layer's slider at `percent`."""
    return {widget_key("sp", name): percent for name in layer_names}


def coupled_inputs(name: str, values: Mapping[str, Any], layer_names: Sequence[str],
                   group_of: GroupOf) -> tuple[str, int] | None:
    """When layer `name` reads channels that another layer's filter control removes (they
    are coupled): that layer and its sparsity %, for `name`'s row to say so; else None."""
    group = group_of(name, Granularity.CHANNEL)
    if group is None:
        return None
    for other in layer_names:
        gran = str(values.get(widget_key("gran", other), DEFAULT_GRANULARITY))
        percent = int(values.get(widget_key("sp", other), 0))
        if (other != name and gran == Granularity.FILTER.value and percent
                and group_of(other, Granularity.FILTER) is group):
            return other, percent
    return None


def coupled_moves(moved: str, values: Mapping[str, Any], layer_names: Sequence[str],
                  group_of: GroupOf) -> dict[str, Any]:
    """The widget values that change when layer `moved`'s control moves: the layers whose
    outputs (filters) or inputs (channels) are coupled with its own in the same way (the
    same structured group, on the same side) take its granularity, criterion and sparsity,
    whatever they were set to: the engine prunes them together, and each row shows it.
    Empty if none are."""
    granularity = parse_granularity(
        str(values.get(widget_key("gran", moved), DEFAULT_GRANULARITY)), moved)
    group = group_of(moved, granularity) if granularity.structured else None
    if group is None:
        return {}
    changes: dict[str, Any] = {}
    for other in layer_names:
        if other != moved and group_of(other, granularity) is group:
            changes[widget_key("gran", other)] = granularity.value
            changes[widget_key("sp", other)] = values.get(widget_key("sp", moved), 0)
            changes[widget_key("crit", other)] = values[widget_key("crit", moved)]
    return changes
