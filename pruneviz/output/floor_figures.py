"""The figure of an accuracy-floor search: every plan it measured, metric against what the
search maximises, with the floor as a line and the chosen plan marked.

A pure function from a `FloorResult` to `go.Figure`, in the style of figures.py; it
stores the numbers it was drawn from in `fig.layout.meta`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import KEPT, PARETO, PRUNED, THRESHOLD, _horizontal_line, _layout

if TYPE_CHECKING:  # only read for its attributes: figures need no torch through this module
    from pruneviz.workflows.floor import FloorPoint, FloorResult

Z95 = 1.96  # error bars: the ~95% interval of each measured metric
ZOOM = 6.0  # the metric axis reaches this many unpruned-to-floor gaps beyond the floor


def _x(result: FloorResult, point: FloorPoint) -> float:
    """The point's objective quantity as drawn: percents, or KiB for the file."""
    objective = result.objective.value
    if objective == "sparsity":
        return point.sparsity * 100
    if objective == "macs":
        return point.macs_fraction * 100
    return point.size_bytes / 1024


def _zoom(result: FloorResult) -> tuple[dict[str, Any], int]:
    """The metric axis around the floor, when plans far beyond it (a collapsed model)
    would squeeze the interesting band flat: from the floor, ZOOM times the unpruned
    model's distance to it on the bad side. Returns the axis and how many points are off."""
    floor, base = result.floor.value, result.baseline.metric
    gap = abs(base - floor) or abs(floor) * 0.05 or 0.01
    metrics = [p.metric for p in result.curve if math.isfinite(p.metric)]
    sign = 1.0 if result.floor.higher_is_better else -1.0
    edge = floor - sign * ZOOM * gap  # the bad side's limit of the zoomed axis
    off = sum(1 for m in metrics if sign * (m - edge) < 0)
    if not off:
        return {}, 0
    good = max(metrics) if sign > 0 else min(metrics)
    top = good + sign * 0.5 * gap
    return {"range": sorted([edge, top])}, off


def floor_curve(result: FloorResult) -> go.Figure:
    """Measured metric of every plan the search tried against its objective quantity
    (sparsity, MACs or sparse file size), met / missed coloured, ~95% error bars where the
    metric has a standard error, the floor as a dashed line and the chosen plan starred."""
    curve = result.curve
    name = _("accuracy") if result.metric_name == "accuracy" else result.metric_name
    objective = result.objective.value
    x_title, suffix = {
        "sparsity": (_("overall sparsity (more is better)"), "%"),
        "macs": (_("weight MACs, % of the unpruned model's (fewer is better)"), "%"),
        "size": (_("sparse weights file, KiB (smaller is better)"), ""),
    }[objective]
    hover = _("knob {knob} ({phase})<br>{metric_name}: {metric}<br>sparsity: {sparsity}"
              "<br>MACs: {macs}<br>sparse file: {size} B").format(
        knob="%{customdata[0]:.4f}", phase="%{customdata[1]}", metric_name=name,
        metric="%{y:.4g}", sparsity="%{customdata[2]:.1%}", macs="%{customdata[3]:.1%}",
        size="%{customdata[4]:,}") + "<extra></extra>"

    def trace(points: list[FloorPoint], label: str, color: str, **style: Any) -> go.Scatter:
        return go.Scatter(
            x=[_x(result, p) for p in points], y=[p.metric for p in points], name=label,
            customdata=[[p.knob, p.phase, p.sparsity, p.macs_fraction, p.size_bytes]
                        for p in points],
            error_y={"type": "data", "array": [Z95 * (p.stderr or 0.0) for p in points],
                     "visible": any(p.stderr is not None for p in points),
                     "color": color, "thickness": 1},
            marker={"color": color, "size": 8, **style.pop("marker", {})},
            hovertemplate=hover, **style)

    traces: list[Any] = [go.Scatter(
        x=[_x(result, p) for p in curve], y=[p.metric for p in curve], mode="lines",
        name=_("measured"), line={"color": THRESHOLD, "width": 1}, hoverinfo="skip",
        showlegend=False)]
    met = [p for p in curve if p.passes]
    missed = [p for p in curve if not p.passes]
    if met:
        traces.append(trace(met, _("meets the floor"), KEPT, mode="markers"))
    if missed:
        traces.append(trace(missed, _("misses it"), PRUNED, mode="markers"))
    chosen = result.chosen
    if chosen is not None:
        traces.append(trace([chosen], _("chosen"), PARETO, mode="markers",
                            marker={"symbol": "star", "size": 16,
                                    "line": {"color": THRESHOLD, "width": 1}}))
    floor = result.floor.value
    better = (_("{metric_name} (higher is better)") if result.floor.higher_is_better
              else _("{metric_name} (lower is better)")).format(metric_name=name)
    subtitle = (_("{count} plans measured on {samples} samples; ").format(
        count=result.evaluations, samples=f"{result.samples:,}")
        + (_("none meets the floor") if chosen is None else _("the star is the chosen plan")))
    yaxis, off = _zoom(result)
    if off:
        subtitle += _("; {count} far beyond the floor off the chart (double-click: all)").format(
            count=off)
    layout = _layout(
        _("{metric_name} of every plan the search measured ({method})").format(
            metric_name=name, method=_(result.method.value)),
        x_title, better,
        subtitle=subtitle,
        xaxis={"ticksuffix": suffix},
        yaxis=yaxis,
        shapes=[_horizontal_line(floor)],
        annotations=[{"text": _("floor: {value}").format(value=f"{floor:.4g}"),
                      "xref": "x domain", "yref": "y",
                      "x": 1.0, "y": floor, "xanchor": "right", "yanchor": "bottom",
                      "showarrow": False, "font": {"color": THRESHOLD, "size": 11}}],
        meta={"floor": floor, "objective": objective,
              "x": [_x(result, p) for p in curve], "metric": [p.metric for p in curve],
              "passes": [p.passes for p in curve],
              "chosen": None if chosen is None else _x(result, chosen)},
    )
    return go.Figure(traces, layout)


__all__ = ["floor_curve"]
