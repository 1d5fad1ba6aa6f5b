"""Plotly figures of the app's two long runs, drawn as they progress: a sensitivity
analysis (curves and heatmap) and a fine-tuning run (its planned sparsity schedule and
its training curves).

Pure functions from results and plain numbers to `go.Figure`, drawn in the style of
figures.py; each stores the numbers it was drawn from in `fig.layout.meta`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go

from pruneviz.i18n import _
from pruneviz.output.figures import (
    BASELINE,
    HEIGHT,
    MISSING,
    THRESHOLD,
    _band,
    _band_label,
    _floats,
    _horizontal_line,
    _layout,
    _vertical_line,
)

if TYPE_CHECKING:  # only read for its attributes: figures need no torch through this module
    from pruneviz.workflows.finetune import Record
    from pruneviz.workflows.sensitivity import SensitivityResult


# -- 8. sensitivity -----------------------------------------------------------------------------
def _level_text(level: float) -> str:
    """A sparsity level as a column label: 0.1 -> "10%", 0.025 -> "2.5%"."""
    return f"{level * 100:.4g}%"


def sensitivity_curves(result: SensitivityResult) -> go.Figure:
    """The model's metric with each item (layer or coupled group) pruned alone, against
    that item's sparsity: one line per item that has points, a dashed line at the
    unpruned model's metric. Items not measured yet (a running or stopped analysis) are
    left out."""
    metric = result.metric_name
    hover = (
        f"<b>%{{fullData.name}}</b><br>sparsity: %{{x:.4g}}%<br>{metric}: %{{y:.4g}}"
        "<br>loss: %{customdata[0]:.4g}<br>%{customdata[1]:,} %{customdata[2]}(s) pruned"
        "<extra></extra>"
    )
    traces: list[Any] = []
    for item in result.items:
        curve = result.curve(item.key)
        if not curve:
            continue
        traces.append(go.Scatter(
            x=[p.level * 100 for p in curve], y=[p.metric for p in curve],
            mode="lines+markers", name=item.label, hovertemplate=hover,
            customdata=[[p.loss, p.structures_pruned, item.unit] for p in curve],
        ))
    base = result.baseline.metric
    better = "higher" if result.higher_is_better else "lower"
    unit = "layer or group" if result.granularity.structured else "layer"
    shown = len(traces)
    layout = _layout(
        f"{metric} with one {unit} pruned alone",
        f"sparsity of that {unit} ({result.granularity.value}, {result.criterion})",
        f"{metric} ({better} is better)",
        subtitle=None if result.complete else
        f"incomplete: {shown} of {len(result.items)} items measured",
        xaxis={"ticksuffix": "%"},
        shapes=[_horizontal_line(base)],
        annotations=[{"text": f"unpruned: {base:.4g}", "xref": "x domain", "yref": "y",
                      "x": 0.0, "y": base, "xanchor": "left", "yanchor": "bottom",
                      "showarrow": False, "font": {"color": THRESHOLD, "size": 11}}],
        legend={"orientation": "v", "x": 1.01, "xanchor": "left", "y": 1.0, "yanchor": "top"},
        meta={"baseline": base, "items": [t.name for t in traces], "complete": result.complete},
    )
    return go.Figure(traces, layout)


def sensitivity_heatmap(result: SensitivityResult) -> go.Figure:
    """Items (rows, in model order) by sparsity level (columns), coloured by how much the
    metric drops from the unpruned model's (`result.drop`): red worse, blue better, white
    unchanged (light grey). Cells not measured yet are darker grey."""
    levels = list(result.levels)
    column = {f"{level:.6f}": j for j, level in enumerate(levels)}
    shape = (len(result.items), len(levels))
    drop = np.full(shape, np.nan)
    metric = np.full(shape, np.nan)
    loss = np.full(shape, np.nan)
    for i, item in enumerate(result.items):
        for point in result.curve(item.key):
            j = column[f"{point.level:.6f}"]
            drop[i, j] = result.drop(point)
            metric[i, j] = point.metric
            loss[i, j] = point.loss
    labels = [item.label for item in result.items]
    name = result.metric_name
    unit = "layer or group" if result.granularity.structured else "layer"
    columns = [_level_text(level) for level in levels]
    heatmap = go.Heatmap(
        z=drop, x=columns, y=labels, name="drop",
        customdata=np.dstack([metric, loss]),
        colorscale=[[0.0, "#2166AC"], [0.5, "#F2F2F2"], [1.0, "#B2182B"]],
        zmid=0.0,
        xgap=1, ygap=1, hoverongaps=False,
        colorbar={"title": {"text": f"{name} drop"}, "thickness": 12},
        hovertemplate=f"<b>%{{y}}</b> at %{{x}}<br>{name}: %{{customdata[0]:.4g}}"
        "<br>drop: %{z:.4g}<br>loss: %{customdata[1]:.4g}<extra></extra>",
    )
    layout = _layout(
        f"{name} drop with each {unit} pruned alone",
        f"sparsity of that {unit} ({result.granularity.value}, {result.criterion})",
        "layer or coupled group" if result.granularity.structured else "layer",
        subtitle=f"drop from the unpruned model's {name} ({result.baseline.metric:.4g}): "
        "red is worse, blue better; dark grey cells are not measured (yet)",
        xaxis={"type": "category", "showgrid": False},
        yaxis={"type": "category", "autorange": "reversed", "showgrid": False},
        meta={"items": labels, "levels": levels, "baseline": result.baseline.metric},
    )
    missing = go.Heatmap(  # grey cells where drop has no value (yet)
        z=np.where(np.isnan(drop), 1.0, np.nan), x=columns, y=labels, name="not measured",
        colorscale=[[0.0, MISSING], [1.0, MISSING]], showscale=False, xgap=1, ygap=1,
        hoverinfo="skip",
    )
    layout["height"] = max(HEIGHT, 150 + 28 * len(labels))
    return go.Figure([heatmap, missing], layout)


# -- 9. fine-tuning -----------------------------------------------------------------------------
REGULARIZE = "#B279A2"  # the regularisation phase of regularize-then-prune
LOSS = "#4C78A8"
METRIC = "#F58518"
SPARSITY = "#E45756"
MANY_POINTS = 60  # validation points drawn as a line only, beyond this many
MANY_EVENTS = 30  # pruning events not drawn as vertical lines, beyond this many
NO_HOVER_BOX = "<extra></extra>"  # hover text without the trace's name beside it
X, Y, Y_PERCENT = "%{x}", "%{y:.4g}", "%{y:.1%}"  # plotly's hover fields


def schedule_chart(
    curve: Sequence[float],
    *,
    events: Sequence[tuple[int, float]] = (),
    regularize_until: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """The target sparsity at every training step (`Schedule.curve`), drawn before training:
    `curve[i]` at step i, pruning `events` (step, sparsity) as markers, and the steps of a
    regulariser (0 .. `regularize_until`) shaded. The title is "Sparsity schedule" unless
    given."""
    y = _floats(curve, "curve").ravel()
    if y.size == 0:
        raise ValueError("the curve is empty: the recipe has no training steps")
    if bool(np.any((y < 0) | (y > 1))):
        raise ValueError("sparsities must be fractions in [0, 1]")
    steps = np.arange(y.size)
    traces: list[Any] = [go.Scatter(
        x=steps, y=y, mode="lines", name=_("target sparsity"), line={"color": SPARSITY,
        "width": 2, "shape": "hv"},
        hovertemplate=_("step {step}: {sparsity}").format(step=X, sparsity=Y_PERCENT)
        + NO_HOVER_BOX,
    )]
    if events:
        traces.append(go.Scatter(
            x=[s for s, _ in events], y=[v for _, v in events], mode="markers",
            name=_("pruning event"),
            marker={"color": SPARSITY, "size": 8, "symbol": "triangle-up"},
            hovertemplate=_("pruned at step {step} to {sparsity}").format(
                step=X, sparsity=Y_PERCENT) + NO_HOVER_BOX,
        ))
    shapes: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    if regularize_until:
        shapes.append({**_band(0, regularize_until), "fillcolor": REGULARIZE})
        annotations.append({**_band_label(regularize_until / 2, _("regularisation")),
                            "font": {"color": REGULARIZE, "size": 11}})
    last = float(y[-1])
    layout = _layout(
        _("Sparsity schedule") if title is None else title, _("training step"),
        _("sparsity of the pruned layers"),
        subtitle=_("{steps} steps, {events} pruning event(s), ending at {sparsity}").format(
            steps=y.size, events=len(events), sparsity=f"{last:.1%}"),
        xaxis={"range": [-0.5, y.size - 0.5]},
        yaxis={"range": [0, 1.02], "tickformat": ".0%"},
        shapes=shapes, annotations=annotations, showlegend=bool(events),
        meta={"steps": int(y.size), "events": [[int(s), float(v)] for s, v in events],
              "regularize_until": regularize_until},
    )
    return go.Figure(traces, layout)


def training_curves(
    records: Sequence[Record],
    *,
    total_steps: int,
    metric_name: str,
    planned: Sequence[float] | None = None,
    best_step: int | None = None,
) -> go.Figure:
    """A fine-tuning run so far, three panels over one step axis: the training loss, the
    validation metric (evaluated each epoch) and the measured sparsity of all parameters
    (with the `planned` schedule dashed). Pruning events are dotted vertical lines (up to
    MANY_EVENTS of them); the step whose weights were kept (`best_step`) is a star on the
    metric."""
    loss = [(r.step, r.loss) for r in records if r.step > 0 and math.isfinite(r.loss)]
    metric = [(r.step, r.metric) for r in records if r.metric is not None]
    sparsity = [(r.step, r.sparsity) for r in records]
    events = [(r.step, r.event) for r in records if r.event]
    pruned = [(s, e) for s, e in events if e.startswith("pruned")]

    def xy(points: Sequence[tuple[int, Any]]) -> dict[str, list[Any]]:
        return {"x": [p[0] for p in points], "y": [p[1] for p in points]}

    validation = _("validation {metric}").format(metric=metric_name)

    traces: list[Any] = [
        go.Scatter(**xy(loss), mode="lines", name=_("training loss"), xaxis="x", yaxis="y",
                   line={"color": LOSS, "width": 1.5},
                   hovertemplate=_("step {step}: loss {loss}").format(step=X, loss=Y)
                   + NO_HOVER_BOX),
        go.Scatter(**xy(metric), mode="lines+markers" if len(metric) <= MANY_POINTS else "lines",
                   name=validation,
                   xaxis="x2", yaxis="y2", line={"color": METRIC, "width": 2},
                   hovertemplate=_("step {step}: {metric} {value}").format(
                       step=X, metric=metric_name, value=Y) + NO_HOVER_BOX),
    ]
    if planned is not None:
        target = _floats(planned, "planned").ravel()
        traces.append(go.Scatter(
            x=np.arange(target.size), y=target, mode="lines", name=_("planned sparsity"),
            xaxis="x3", yaxis="y3", line={"color": THRESHOLD, "width": 1, "dash": "dash",
                                          "shape": "hv"},
            hovertemplate=_("step {step}: planned {sparsity} of the pruned layers").format(
                step=X, sparsity=Y_PERCENT) + NO_HOVER_BOX))
    traces.append(go.Scatter(
        **xy(sparsity), mode="lines", name=_("sparsity (all parameters)"), xaxis="x3",
        yaxis="y3", line={"color": SPARSITY, "width": 2, "shape": "hv"},
        hovertemplate=_("step {step}: {sparsity} zero").format(step=X, sparsity=Y_PERCENT)
        + NO_HOVER_BOX))
    best = [(s, m) for s, m in metric if s == best_step]
    if best:
        traces.append(go.Scatter(
            x=[best[-1][0]], y=[best[-1][1]], mode="markers", name=_("weights kept (best)"),
            xaxis="x2", yaxis="y2", marker={"symbol": "star", "size": 14, "color": BASELINE},
            hovertemplate=_("kept: step {step}, {metric} {value}").format(
                step=X, metric=metric_name, value=Y) + NO_HOVER_BOX))
    # a line per pruning event, unless there are so many that the steps of the sparsity
    # trace say it better
    shapes = [{"type": "line", "xref": "x3", "yref": "paper", "x0": s, "x1": s, "y0": 0,
               "y1": 1, "line": {"color": SPARSITY, "width": 1, "dash": "dot"},
               "layer": "below"} for s, _ in pruned] if len(pruned) <= MANY_EVENTS else []
    stop = [(s, e) for s, e in events if not e.startswith("pruned")]
    shapes += [{**_vertical_line(s), "xref": "x3", "yref": "paper", "y0": 0, "y1": 1}
               for s, _ in stop]
    end = max(total_steps, 1)
    steps = [-0.01 * end, 1.02 * end]  # room for the markers at both ends
    span = {"range": steps, "matches": "x3", "showticklabels": False}
    layout = _layout(
        _("Training so far"), "", _("training loss"),
        xaxis={**span, "anchor": "y"},
        yaxis={"domain": [0.72, 1.0]},
        xaxis2={**span, "anchor": "y2"},
        yaxis2={"domain": [0.38, 0.66], "title": {"text": validation}},
        xaxis3={"range": steps, "anchor": "y3",
                "title": {"text": _("training step")}},
        yaxis3={"domain": [0.0, 0.32], "title": {"text": _("sparsity")}, "tickformat": ".0%",
                "range": [0, 1.02]},
        shapes=shapes,
        meta={"pruned_at": [s for s, _ in pruned], "best_step": best_step,
              "total_steps": total_steps},
    )
    layout["height"] = 560
    return go.Figure(traces, layout)


__all__ = [
    "schedule_chart",
    "sensitivity_curves",
    "sensitivity_heatmap",
    "training_curves",
]
