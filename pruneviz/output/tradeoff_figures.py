"""Plotly figures of the recorded experiments: each configuration's metric against a
cost, with the Pareto front, and each one at the latency of the deployable form to ship.

Pure functions from experiments and plain numbers to `go.Figure`, drawn in the style of
figures.py; each stores the numbers it was drawn from in `fig.layout.meta`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from pruneviz.i18n import N_, _
from pruneviz.output.figures import BASELINE, KEPT, PARETO, TUNED, _layout
from pruneviz.workflows.experiments import (
    ORIGINAL,
    PRUNE,
    TECHNIQUES,
    Experiment,
    check_cost_field,
    pareto_front,
    technique_family,
    technique_name,
    weights_name,
)
from pruneviz.workflows.refit import REFIT_PREFIX

# -- 6. trade-off scatter -----------------------------------------------------------------------
# How each technique family is drawn: (legend name, marker symbol, colour). A technique
# on a pruned model is its own symbol's star version. (Legend names: translated when drawn.)
TECHNIQUE_STYLES: dict[str, tuple[str, str, str]] = {
    "prune": (N_("pruning"), "circle", KEPT),
    "int8": (N_("int8 (unpruned)"), "square", "#B279A2"),
    "prune+int8": (N_("pruning + int8"), "star-square", "#B279A2"),
    "int8-static": (N_("static int8, Conv + Linear (unpruned)"), "hexagon", "#E45756"),
    "prune+int8-static": (N_("pruning + static int8"), "hexagram", "#E45756"),
    "int4-w": (N_("int4 weight-only, storage only (unpruned)"), "triangle-down", "#F58518"),
    "prune+int4-w": (N_("pruning + int4 weight-only, storage only"), "star-triangle-down",
                     "#F58518"),
    "svd": (N_("low-rank SVD (unpruned)"), "triangle-up", "#72B7B2"),
    "prune+svd": (N_("pruning + low-rank SVD"), "star-triangle-up", "#72B7B2"),
}
_OTHER_STYLE = (N_("other technique"), "x", "#9D9D9D")


def _better(metric_name: str, higher_is_better: bool) -> str:
    """The metric axis's title: "accuracy (higher is better)"."""
    return (_("{metric_name} (higher is better)") if higher_is_better
            else _("{metric_name} (lower is better)")).format(metric_name=metric_name)


def tradeoff_scatter(
    points: Sequence[Experiment],
    *,
    x_field: str,
    x_title: str,
    metric_name: str,
    higher_is_better: bool,
    baseline: Experiment | None,
    selected_id: int | None = None,
) -> go.Figure:
    """Metric against a cost (`x_field`, see experiments.COST_FIELDS), Pareto front marked.

    Points without a value for `x_field` (latency not measured) are left out — the
    subtitle counts them, naming the storage-only ones (int4 weight-only: no kernel to
    time); the baseline takes part in the front even if it is not among `points`. Each
    technique has its own marker and legend entry (circle: pruning, square: dynamic int8,
    hexagon: static int8, triangle down: int4 weight-only, triangle up: low-rank SVD, a
    star of the same shape: that technique on a pruned model); the
    Pareto front is over every point, whatever its technique. Pruning experiments on
    fine-tuned weights are diamonds, each joined by a dotted line to its twin (the same
    plan on the original weights) when that is among the points: collapse and recovery.
    """
    check_cost_field(x_field)
    candidates = list(points)
    if baseline is not None and all(p.id != baseline.id for p in candidates):
        candidates.append(baseline)
    shown = [p for p in candidates if p.cost(x_field) is not None]
    storage_only = [p.id for p in candidates if p.cost(x_field) is None and p.storage_only]
    skipped = len(candidates) - len(shown) - len(storage_only)
    xs = [float(getattr(p, x_field)) for p in shown]
    ys = [p.metric for p in shown]
    front = [shown[i] for i in pareto_front(xs, ys, higher_is_better)]

    def custom(group: Sequence[Experiment]) -> list[list[Any]]:
        return [[p.id, p.label, technique_name(p.technique)
                 + (_(" (storage only: no int4 kernel, latency not measured)")
                    if p.storage_only else ""), weights_name(p.weights),
                 _("whole evaluation set") if p.final
                 else _("live subset of {count} (whole set not measured yet)").format(
                     count=f"{p.eval_samples:,}")]
                for p in group]

    hover = (
        f"<b>%{{customdata[1]}}</b><br>{metric_name}: %{{y:.4g}} (%{{customdata[4]}})"
        f"<br>{x_title}: %{{x:,.4g}}<br>"
        + _("technique: {technique}").format(technique="%{customdata[2]}")
        + "<extra>#%{customdata[0]}</extra>"
    )
    with_weights = hover.replace(
        "<extra>", "<br>" + _("weights: {weights}").format(weights="%{customdata[3]}")
        + "<extra>")

    def x_of(group: Sequence[Experiment]) -> list[float]:
        return [float(getattr(p, x_field)) for p in group]

    pruning = [p for p in shown if p.technique == PRUNE]
    plain = [p for p in pruning if p.weights == ORIGINAL]
    refit = [p for p in pruning if p.weights.startswith(REFIT_PREFIX)]
    tuned = [p for p in pruning if p.weights != ORIGINAL and p not in refit]
    name, symbol, colour = TECHNIQUE_STYLES[PRUNE]
    traces: list[Any] = [
        go.Scatter(x=x_of(plain), y=[p.metric for p in plain], mode="markers", name=_(name),
                   customdata=custom(plain), hovertemplate=hover,
                   marker={"color": colour, "size": 8, "opacity": 0.8,
                           # open: a live subset's metric, the whole set still to measure
                           "symbol": [symbol if p.final else f"{symbol}-open"
                                      for p in plain]}),
        go.Scatter(x=x_of(front), y=[p.metric for p in front],
                   mode="lines+markers", name=_("Pareto front"), customdata=custom(front),
                   line={"color": PARETO, "width": 2, "shape": "hv"},
                   marker={"color": PARETO, "size": 11}, hovertemplate=with_weights),
    ]
    families: dict[str, list[Experiment]] = {}
    for p in shown:
        if p.technique != PRUNE:
            families.setdefault(technique_family(p.technique), []).append(p)
    order = [f for f in TECHNIQUES if f in families]
    for family in order + sorted(set(families) - set(order)):
        group = families[family]
        name, symbol, colour = TECHNIQUE_STYLES.get(family, _OTHER_STYLE)
        traces.append(go.Scatter(
            x=x_of(group), y=[p.metric for p in group], mode="markers", name=_(name),
            customdata=custom(group), hovertemplate=with_weights,
            marker={"color": colour, "size": 13 if symbol.startswith("star") else 10,
                    "symbol": symbol, "line": {"color": "white", "width": 1}}))
    if tuned:  # drawn over the front, each joined to its twin (same plan, original weights)
        twins = {p.plan_key: p for p in plain}
        xs_join: list[float | None] = []
        ys_join: list[float | None] = []
        for p in tuned:
            twin = twins.get(p.plan_key)
            if twin is not None:
                xs_join += [float(getattr(twin, x_field)), float(getattr(p, x_field)), None]
                ys_join += [twin.metric, p.metric, None]
        if xs_join:
            traces.append(go.Scatter(
                x=xs_join, y=ys_join, mode="lines", name=_("pruned → fine-tuned"),
                line={"color": TUNED, "width": 1.5, "dash": "dot"}, hoverinfo="skip"))
        traces.append(go.Scatter(
            x=x_of(tuned), y=[p.metric for p in tuned],
            mode="markers", name=_("fine-tuned weights"), customdata=custom(tuned),
            marker={"color": TUNED, "size": 12, "symbol": "diamond",
                    "line": {"color": "white", "width": 1}},
            hovertemplate=with_weights))
    if refit:  # recovered by reconstruction, not training (workflows.refit)
        traces.append(go.Scatter(
            x=x_of(refit), y=[p.metric for p in refit], mode="markers",
            name=_("refit weights (reconstruction)"), customdata=custom(refit),
            marker={"color": REFIT, "size": 12, "symbol": "hexagon",
                    "line": {"color": "white", "width": 1}},
            hovertemplate=with_weights))
    if baseline is not None and baseline.cost(x_field) is not None:
        traces.append(go.Scatter(
            x=[float(getattr(baseline, x_field))], y=[baseline.metric], mode="markers",
            name=_("baseline (unpruned)"), customdata=custom([baseline]), hovertemplate=hover,
            marker={"symbol": "star", "size": 16, "color": BASELINE},
        ))
    selected = [p for p in shown if p.id == selected_id]
    if selected:
        traces.append(go.Scatter(
            x=[float(getattr(selected[0], x_field))], y=[selected[0].metric], mode="markers",
            name=_("selected"), customdata=custom(selected), hovertemplate=with_weights,
            marker={"symbol": "circle-open", "size": 20, "color": BASELINE,
                    "line": {"width": 2}},
        ))
    missing = [_("{count} experiment(s) without {field} not shown").format(
        count=skipped, field=x_field)] if skipped else []
    if storage_only:
        missing.append(_("{count} int4 weight-only point(s) not shown: storage only, no int4 "
                         "kernel on CPU to time").format(count=len(storage_only)))
    layout = _layout(
        _("{metric_name} vs {cost}").format(metric_name=metric_name, cost=x_title),
        x_title,
        _better(metric_name, higher_is_better),
        subtitle="; ".join(missing) or None,
        xaxis={"type": "linear"},
        meta={"pareto_ids": [p.id for p in front],
              "techniques": {str(p.id): p.technique for p in shown},
              "storage_only_ids": [p.id for p in candidates if p.storage_only]},
    )
    return go.Figure(traces, layout)


# -- 6b. recovery: reconstruction vs training ------------------------------------------------
REFIT = "#E45756"  # refit (reconstructed) weights
RECOVERY_STAGES = ("unpruned", "one-shot", "one-shot + refit", "fine-tuned")
STAGE_NAMES = {"unpruned": N_("unpruned"), "one-shot": N_("one-shot"),
               "one-shot + refit": N_("one-shot + refit"), "fine-tuned": N_("fine-tuned")}


def recovery_stage(experiment: Experiment) -> str:
    """Which of RECOVERY_STAGES a pruning experiment is, by the weights it was measured on:
    the original weights (one-shot), refit ones, or trained ones (fine-tuned)."""
    if experiment.weights == ORIGINAL:
        return "one-shot"
    if experiment.weights.startswith(REFIT_PREFIX):
        return "one-shot + refit"
    return "fine-tuned"


def recovery_plans(points: Sequence[Experiment]) -> list[Experiment]:
    """The one-shot experiments (original weights) whose plan was also refit or
    fine-tuned: the plans a recovery picture can be drawn for, latest first."""
    pruning = [p for p in points if p.technique == PRUNE and p.plan_key != "{}"]
    recovered = {p.plan_key for p in pruning if p.weights != ORIGINAL}
    plain = [p for p in pruning if p.weights == ORIGINAL and p.plan_key in recovered
             and p.sparsity > 0]
    return sorted(plain, key=lambda p: -p.id)


def recovery_figure(points: Sequence[Experiment], *, plan_key: str,
                    baseline: Experiment | None, metric_name: str,
                    higher_is_better: bool) -> go.Figure:
    """One plan, recovered two ways, side by side: the unpruned model, the plan one-shot,
    one-shot + refit (reconstruction, no training) and fine-tuned (training), each stage
    with every run of it in the log ("recover by reconstruction vs by training")."""
    same = [p for p in points if p.technique == PRUNE and p.plan_key == plan_key]
    stages: dict[str, list[Experiment]] = {stage: [] for stage in RECOVERY_STAGES}
    if baseline is not None:
        stages["unpruned"].append(baseline)
    for p in same:
        stages[recovery_stage(p)].append(p)
    colours = {"unpruned": BASELINE, "one-shot": KEPT, "one-shot + refit": REFIT,
               "fine-tuned": TUNED}
    symbols = {"unpruned": "star", "one-shot": "circle", "one-shot + refit": "hexagon",
               "fine-tuned": "diamond"}
    traces = []
    for stage, group in stages.items():
        if not group:
            continue
        traces.append(go.Scatter(
            x=[_(STAGE_NAMES[stage])] * len(group), y=[p.metric for p in group],
            mode="markers+text", name=_(STAGE_NAMES[stage]),
            text=[f"{p.metric:.4g}" for p in group], textposition="middle right",
            customdata=[[p.id, p.label, weights_name(p.weights)] for p in group],
            hovertemplate=(f"<b>%{{customdata[1]}}</b><br>{metric_name}: %{{y:.4g}}<br>"
                           + _("weights: {weights}").format(weights="%{customdata[2]}")
                           + "<extra>#%{customdata[0]}</extra>"),
            marker={"color": colours[stage], "size": 14, "symbol": symbols[stage],
                    "line": {"color": "white", "width": 1}}))
    plan = next((p for p in same if p.weights == ORIGINAL), same[0] if same else None)
    missing = [s for s in RECOVERY_STAGES[1:] if not stages[s]]
    layout = _layout(
        _("Recover by reconstruction vs recover by training")
        + (f": {plan.label}" if plan is not None else ""),
        "", _better(metric_name, higher_is_better),
        subtitle=(_("not in the log for this plan: {stages}").format(
            stages=", ".join(_(STAGE_NAMES[s]) for s in missing)) if missing else None),
        xaxis={"type": "category", "categoryorder": "array",
               "categoryarray": [_(STAGE_NAMES[s]) for s in RECOVERY_STAGES]},
        meta={"stages": {stage: [p.id for p in group] for stage, group in stages.items()}},
    )
    return go.Figure(traces, layout)


# -- 7. the deployable form to ship -----------------------------------------------------------
FORM_COLOURS = {"masked": "#9D9D9D", "slimmed": "#54A24B", "sparse-deployed": "#B279A2"}
FORM_SHORT = {"masked": N_("masked"), "slimmed": N_("slimmed"),
              "sparse-deployed": N_("sparse-deployed")}
FORM_NAMES = {"masked": N_("masked (no form measurably faster)"),
              "slimmed": N_("slimmed (measurably faster)"),
              "sparse-deployed": N_("sparse-deployed (measurably faster)")}


def best_form_scatter(
    labels: Sequence[str],
    latency_ms: Sequence[float],
    metric: Sequence[float],
    forms: Sequence[str],
    *,
    metric_name: str,
) -> go.Figure:
    """Each configuration at the latency of the deployable form to ship for speed, coloured
    by which form that is: slimmed or sparse-deployed only when it measured faster than
    masked (`forms.Forms.choice`), masked when no form is measurably faster."""
    if not len(labels) == len(latency_ms) == len(metric) == len(forms):
        raise ValueError("labels, latency_ms, metric and forms must have the same length")
    traces = []
    for form, colour in FORM_COLOURS.items():
        picked = [i for i, f in enumerate(forms) if f == form]
        if picked:
            traces.append(go.Scatter(
                x=[latency_ms[i] for i in picked], y=[metric[i] for i in picked],
                mode="markers", name=_(FORM_NAMES[form]),
                marker={"color": colour, "size": 10},
                text=[labels[i] for i in picked],
                hovertemplate="%{text}<br>%{x:.2f} ms<br>%{y:.4f}<extra>" + _(FORM_SHORT[form])
                + "</extra>",
            ))
    return go.Figure(
        data=traces,
        layout=_layout(_("{metric_name} vs latency of the deployable form to ship").format(
                           metric_name=metric_name),
                       _("latency (ms, batch 64)"), metric_name,
                       meta={"forms": list(forms)}),
    )



# -- 8. the history of a tab's experiments, as a tree -------------------------------------------
def history_lanes(points: Sequence[Experiment]) -> dict[int, int]:
    """Each experiment's lane in the history tree: an experiment stays on its parent's
    lane if it is the parent's first child, else a new lane opens for the branch. (An
    experiment without a parent came from the unpruned model, #0.)"""
    lanes: dict[int, int] = {}
    continued: set[int] = set()  # parents whose lane a child already continues
    for e in sorted(points, key=lambda e: e.id):
        parent = history_parent(e)
        if parent is None:
            lanes[e.id] = 0
        elif parent not in lanes:  # its parent is not drawn: a lane of its own
            lanes[e.id] = max(lanes.values(), default=-1) + 1
        elif parent not in continued:
            lanes[e.id] = lanes[parent]
            continued.add(parent)
        else:
            lanes[e.id] = max(lanes.values()) + 1
    return lanes


def history_parent(experiment: Experiment) -> int | None:
    """The experiment `experiment` came from in the tree (#0, the unpruned model, for
    one recorded without a parent); None for #0 itself."""
    if experiment.id == 0:
        return None
    return 0 if experiment.parent is None else experiment.parent


def history_tree(points: Sequence[Experiment], *, metric_name: str, current: int | None,
                 percent: bool) -> go.Figure:
    """Every experiment in the order measured (x), each branch on a lane of its own (y),
    joined to the one it came from; coloured by its metric. `current` (the plan on
    screen's experiment) is ringed."""
    lanes = history_lanes(points)
    by_id = {e.id: e for e in points}
    xs: list[float | None] = []
    ys: list[float | None] = []
    for e in points:  # from the parent: down to the branch's lane, then along it
        parent = history_parent(e)
        if parent is None or parent not in by_id:
            continue
        xs += [parent, parent, e.id, None]
        ys += [lanes[parent], lanes[e.id], lanes[e.id], None]
    scale = 100.0 if percent else 1.0
    unit = " %" if percent else ""
    metrics = [e.metric * scale for e in points]
    hover = [f"#{e.id} {e.label}<br>{metric_name} {e.metric * scale:.4g}{unit}<br>"
             + _("sparsity {sparsity}, {weights} weights").format(
                 sparsity=f"{e.sparsity:.1%}", weights=weights_name(e.weights))
             + ("" if history_parent(e) is None
                else "<br>" + _("from #{id}").format(id=history_parent(e)))
             for e in points]
    data: list[dict[str, Any]] = [
        {"type": "scatter", "mode": "lines", "x": xs, "y": ys, "hoverinfo": "skip",
         "line": {"color": "#BBBBBB", "width": 1.5, "shape": "linear"},
         "showlegend": False},
        {"type": "scatter", "mode": "markers+text", "name": _("experiments"),
         "x": [e.id for e in points], "y": [lanes[e.id] for e in points],
         "text": [f"#{e.id}" for e in points], "textposition": "top center",
         "textfont": {"size": 10}, "hovertext": hover, "hoverinfo": "text",
         "marker": {"size": 13, "color": metrics, "colorscale": "Viridis",
                    "reversescale": False, "line": {"width": 1, "color": "#FFFFFF"},
                    "colorbar": {"title": {"text": metric_name + unit}, "thickness": 12}},
         "showlegend": False},
    ]
    if current is not None and current in by_id:
        data.append({"type": "scatter", "mode": "markers", "name": _("on screen"),
                     "x": [current], "y": [lanes[current]], "hoverinfo": "skip",
                     "marker": {"size": 22, "color": "rgba(0,0,0,0)",
                                "line": {"width": 2.5, "color": BASELINE}}})
    height = max(220, 90 + 46 * (max(lanes.values(), default=0) + 1))
    figure = go.Figure(data=data, layout=_layout(
        _("History of this tab's experiments"), _("experiment (in the order measured)"),
        _("branch"), height=height,
        yaxis={"showticklabels": False, "zeroline": False, "autorange": "reversed"},
        xaxis={"dtick": 1 if len(points) <= 30 else None}))
    figure.layout.meta = {"lanes": {str(k): v for k, v in lanes.items()},
                          "parents": {str(e.id): history_parent(e) for e in points}}
    return figure

__all__ = ["history_lanes", "history_parent", "history_tree",
    "FORM_COLOURS",
    "FORM_NAMES",
    "TECHNIQUE_STYLES",
    "best_form_scatter",
    "tradeoff_scatter",
]
